"""Custom feature transformers (scikit-learn contract; trusted by name in the bundle loader)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["DatetimeFeatures", "Float32Values"]

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


class Float32Values(TransformerMixin, BaseEstimator):
    """Round values to float32 precision (kept as float64 arrays).

    After a ``TargetEncoder``: its smoothed means are many distinct numbers close together,
    and the ONNX graph holds them (``LabelEncoder``) and compares them with the trees'
    thresholds in float32. Trained on float64 values, a tree could split between two values
    that float32 cannot tell apart: 231 of 6,000 rows of a zip-code table changed their
    probability by up to 0.15 when the encoded values were rounded. Rounded here, the model
    learns and predicts on exactly the values the graph sees. Written by hand because
    scikit-learn's encoders have no output dtype.
    """

    def fit(self, X: Any, y: Any = None) -> Float32Values:  # noqa: N803
        validate_data(self, X, dtype=np.float64, reset=True)
        return self

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "n_features_in_")
        values = validate_data(
            self, X, dtype=np.float64, reset=False
        )
        return np.asarray(values, dtype=np.float32).astype(np.float64)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        if input_features is None:
            names = getattr(self, "feature_names_in_", None)
            if names is None:
                names = [f"x{i}" for i in range(self.n_features_in_)]
            return np.asarray(names, dtype=object)
        return np.asarray(input_features, dtype=object)
