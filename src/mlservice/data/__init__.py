"""Loading, column-type inference, fingerprinting and splitting of datasets (pure functions)."""

from mlservice.data.fingerprint import (
    DvcLineage,
    dvc_lineage,
    dvc_md5,
    fingerprint_file,
    fingerprint_frame,
)
from mlservice.data.loading import Dataset, load_dataset
from mlservice.data.reading import CsvOptions, read_csv, resolve_csv_options
from mlservice.data.split import split_indices
from mlservice.data.types import FeatureSpec, build_feature_specs, infer_column_types

__all__ = [
    "CsvOptions",
    "Dataset",
    "DvcLineage",
    "FeatureSpec",
    "build_feature_specs",
    "dvc_lineage",
    "dvc_md5",
    "fingerprint_file",
    "fingerprint_frame",
    "infer_column_types",
    "load_dataset",
    "read_csv",
    "resolve_csv_options",
    "split_indices",
]
