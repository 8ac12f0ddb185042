"""Read a dataset named by the config: CSV, Parquet, or ``builtin:<name>``. Never writes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlservice.config import DataConfig
from mlservice.data.fingerprint import DvcLineage, dvc_lineage, fingerprint_file, fingerprint_frame
from mlservice.data.reading import CsvOptions, numeric_text_hint, read_csv, resolve_csv_options
from mlservice.errors import DataError

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset"]

log = logging.getLogger(__name__)


def _sklearn_loader(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame: pd.DataFrame = bunch.frame.copy()
        names = getattr(bunch, "target_names", None)
        # Classification sets ship integer codes; labels with names read better everywhere.
        if names is not None and len(names) and frame["target"].dtype.kind in "iu":
            frame["target"] = pd.Series(list(names)).to_numpy()[frame["target"].to_numpy()]
        return frame

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


#: Datasets that ship inside installed packages (no download).
BUILTIN_DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "breast_cancer": _sklearn_loader("breast_cancer"),
    "diabetes": _sklearn_loader("diabetes"),
    "iris": _sklearn_loader("iris"),
    "wine": _sklearn_loader("wine"),
    "digits": _sklearn_loader("digits"),
    "penguins": _penguins,
}


@dataclass
class Dataset:
    """A loaded dataset and where it came from.

    ``read``: the CSV reader options used (None for Parquet and builtin datasets); ``notes``: what
    loading detected or assumed, for the user (the separator, an encoding fallback).
    """

    frame: pd.DataFrame
    source: str
    path: Path | None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    read: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def verify_unchanged(self) -> None:
        """Raise ``DataError`` if the raw file changed since it was loaded."""
        if self.path is None:
            return
        now = fingerprint_file(self.path)
        if now != self.fingerprint["sha256"]:
            raise DataError(
                f"raw data {str(self.path)!r} changed during training "
                f"(sha256 {self.fingerprint['sha256'][:12]}… → {now[:12]}…); "
                "raw data must stay immutable, write derived data to data/processed"
            )


def _read_file(path: Path, config: DataConfig) -> tuple[pd.DataFrame, CsvOptions | None]:
    if path.suffix.lower() == ".csv":
        options = resolve_csv_options(path, config.read.given() if config.read else None)
        return read_csv(path, options), options
    try:
        return pd.read_parquet(path), None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read dataset {str(path)!r}: {exc}") from exc


def _dvc_warning(source: str, lineage: DvcLineage) -> str:
    return (
        f"data file {source!r} changed since `dvc add`: {lineage.dvc_file} records md5 "
        f"{lineage.recorded_md5}, the file's md5 is {lineage.actual_md5}. The recorded md5 is "
        f"not this data's and is not used as its version; run `dvc add {source}` (and commit "
        "the .dvc file) to version the data you train on"
    )


def load_dataset(config: DataConfig, *, base_dir: Path | None = None) -> Dataset:
    """Load and check the dataset of ``config``; relative paths resolve against ``base_dir``."""
    source = config.source
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        loader = BUILTIN_DATASETS.get(name)
        if loader is None:
            raise DataError(
                f"unknown builtin dataset {name!r}; available: {sorted(BUILTIN_DATASETS)}"
            )
        frame = loader()
        fingerprint = {"sha256": fingerprint_frame(frame), **DvcLineage("untracked").fields()}
        dataset = Dataset(frame, source, None, fingerprint)
    else:
        path = Path(source)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise DataError(f"dataset {source!r} not found (looked at {str(path)!r})")
        sha = fingerprint_file(path)
        lineage = dvc_lineage(path)
        if lineage.state == "modified":
            log.warning(_dvc_warning(source, lineage))
        frame, options = _read_file(path, config)
        dataset = Dataset(frame, source, path, {"sha256": sha, **lineage.fields()})
        if options is not None:
            dataset.read = options.to_dict()
            dataset.notes.extend(options.notes)
    _check_columns(dataset.frame, config)
    if dataset.read is not None:
        hints = (numeric_text_hint(frame[c], dataset.read) for c in frame.columns)
        dataset.notes.extend(hint for hint in hints if hint)
    return dataset


def _check_columns(frame: pd.DataFrame, config: DataConfig) -> None:
    columns = [str(c) for c in frame.columns]
    wanted = [config.target, *(config.features or []), *config.drop]
    wanted += [c for c in (config.time_column, config.group_column) if c]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise DataError(
            f"dataset {config.source!r} has no column(s) {missing}; it has {columns}. "
            "Fix data.target / data.features / data.drop in the config."
        )
    if frame.empty:
        raise DataError(f"dataset {config.source!r} has no rows")
    if frame[config.target].isna().all():
        raise DataError(f"target column {config.target!r} is empty")
