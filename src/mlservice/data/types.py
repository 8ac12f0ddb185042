"""Column-type inference and the feature schema recorded in a bundle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COLUMN_TYPES", "FeatureSpec", "build_feature_specs", "infer_column_types"]

COLUMN_TYPES = ("numeric", "categorical", "boolean", "datetime", "text")

_TEXT_MIN_MEAN_LENGTH = 30
_TEXT_MIN_UNIQUE_RATIO = 0.5
_MAX_CATEGORIES_LISTED = 200


@dataclass
class FeatureSpec:
    """One input feature as the model expects it (goes into metadata.json and the API schema)."""

    name: str
    type: str
    dtype: str
    nullable: bool
    missing_fraction: float
    categories: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    example: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data.update(self.extra)
        return data


def _infer_one(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    values = series.dropna()
    if values.empty:
        return "categorical"
    if set(values.unique()) <= {True, False}:
        return "boolean"
    as_text = values.astype(str)
    sample = as_text.head(200)
    if sample.str.match(r"^\d{4}-\d{2}-\d{2}").mean() > 0.95:
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
        if parsed.notna().mean() > 0.95:
            return "datetime"
    mean_len = as_text.str.len().mean()
    unique_ratio = as_text.nunique() / max(len(as_text), 1)
    if mean_len >= _TEXT_MIN_MEAN_LENGTH and unique_ratio >= _TEXT_MIN_UNIQUE_RATIO:
        return "text"
    return "categorical"


def infer_column_types(
    frame: pd.DataFrame, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Map each column to numeric | categorical | boolean | datetime | text; overrides win."""
    overrides = overrides or {}
    return {col: overrides.get(str(col)) or _infer_one(frame[col]) for col in frame.columns}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def build_feature_specs(frame: pd.DataFrame, types: dict[str, str]) -> list[FeatureSpec]:
    """Describe each feature column of the TRAINING part: type, nullability, categories, range."""
    specs = []
    for col in frame.columns:
        series = frame[col]
        kind = types[str(col)]
        missing = float(series.isna().mean())
        non_null = series.dropna()
        spec = FeatureSpec(
            name=str(col),
            type=kind,
            dtype=str(series.dtype),
            nullable=missing > 0,
            missing_fraction=round(missing, 6),
        )
        if kind == "numeric" and not non_null.empty:
            spec.min = float(non_null.min())
            spec.max = float(non_null.max())
            median = float(non_null.median())
            spec.example = int(median) if pd.api.types.is_integer_dtype(series) else median
        elif kind in ("categorical", "boolean") and not non_null.empty:
            counts = non_null.value_counts()
            cats = sorted((_jsonable(v) for v in counts.index), key=str)
            spec.categories = cats[:_MAX_CATEGORIES_LISTED]
            if len(cats) > _MAX_CATEGORIES_LISTED:
                spec.extra["n_categories"] = len(cats)
            spec.example = _jsonable(counts.index[0])
        elif not non_null.empty:
            spec.example = _jsonable(non_null.iloc[0])
        specs.append(spec)
    return specs
