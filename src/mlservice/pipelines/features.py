"""Custom feature transformers (scikit-learn contract; trusted by name in the bundle loader)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["DatetimeFeatures"]

_PARTS = ("year", "month", "day", "dayofweek", "hour")


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Expand datetime columns into numeric calendar parts (year, month, day, weekday, hour).

    Written by hand because scikit-learn has no datetime encoder; it is stateless apart from the
    column names it saw.
    """

    def __init__(self, parts: tuple[str, ...] = _PARTS) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DatetimeFeatures:  # noqa: N803
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        frame = pd.DataFrame(X)
        columns = []
        for col in frame.columns:
            stamps = pd.to_datetime(frame[col], errors="coerce", format="mixed")
            for part in self.parts:
                columns.append(getattr(stamps.dt, part).astype("float64").to_numpy())
        if not columns:
            return np.empty((len(frame), 0))
        return np.column_stack(columns)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray([f"{c}_{p}" for c in names for p in self.parts], dtype=object)
