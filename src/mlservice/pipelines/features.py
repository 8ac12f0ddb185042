"""Custom feature transformers (scikit-learn contract; trusted by name in the bundle loader)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["DatetimeFeatures"]

_PARTS = ("year", "month", "day", "dayofweek", "hour")
# output name -> pandas accessor (``dayofweek`` is deprecated in pandas, the name is kept stable)
_ACCESSORS = {"dayofweek": "day_of_week"}


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Expand datetime columns into numeric calendar parts (year, month, day, weekday, hour).

    Written by hand because scikit-learn has no datetime encoder; it is stateless apart from the
    column names it saw.
    """

    def __init__(self, parts: tuple[str, ...] = _PARTS) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DatetimeFeatures:  # noqa: N803
        validate_data(self, X, dtype=None, ensure_all_finite=False, reset=True)
        return self

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "n_features_in_")
        values = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        frame = pd.DataFrame(values)
        columns = []
        for col in frame.columns:
            stamps = pd.to_datetime(frame[col], errors="coerce", format="mixed")
            for part in self.parts:
                accessor = _ACCESSORS.get(part, part)
                columns.append(getattr(stamps.dt, accessor).astype("float64").to_numpy())
        if not columns:
            return np.empty((len(frame), 0))
        return np.column_stack(columns)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        if input_features is None:
            default = [f"x{i}" for i in range(self.n_features_in_)]
            input_features = getattr(self, "feature_names_in_", default)
        names = input_features
        return np.asarray([f"{c}_{p}" for c in names for p in self.parts], dtype=object)
