"""Feature frames for training: pick the feature columns, infer their types and coerce them."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mlservice.categories import canonical_series
from mlservice.config import Config, PreprocessingConfig
from mlservice.data import infer_column_types
from mlservice.errors import DataError
from mlservice.pipelines import choose_encodings

__all__ = ["categorical_encodings", "coerce_features", "feature_columns"]


def feature_columns(frame: pd.DataFrame, config: Config) -> list[str]:
    """``data.features``, or every column but the target, ``data.drop``, time and group."""
    data = config.data
    excluded = {data.target, *data.drop, *(c for c in (data.group_column, data.time_column) if c)}
    features = data.features or [str(c) for c in frame.columns if str(c) not in excluded]
    if data.target in features:
        raise DataError(f"data.features lists the target {data.target!r}; remove it (leakage)")
    return features


def coerce_features(
    X: pd.DataFrame,  # noqa: N803
    overrides: Mapping[str, str],
    *,
    fixed: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Infer column types (``overrides`` and ``fixed`` win) and convert values to match them."""
    unknown = sorted(set(overrides) - set(X.columns))
    if unknown:
        raise DataError(f"data.column_types names columns that are not features: {unknown}")
    X = X.copy()  # noqa: N806
    types = infer_column_types(X, {**overrides, **(fixed or {})})
    for name, kind in types.items():
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(X[name]):
            converted = pd.to_numeric(X[name], errors="coerce")
            bad = X[name].notna() & converted.isna()
            if bad.any():
                raise DataError(
                    f"column {name!r} is declared numeric but holds {X[name][bad].iloc[0]!r}"
                )
            X[name] = converted
        elif kind in ("categorical", "boolean"):
            # One string per category whatever the reader made of it (123, 123.0, "123"):
            # serving canonicalizes what it is sent the same way (mlservice.categories).
            X[name] = canonical_series(X[name])
        elif kind == "text":
            X[name] = X[name].astype("object").where(X[name].notna(), np.nan)
    return X, types


def categorical_encodings(
    X_train: pd.DataFrame,  # noqa: N803
    types: Mapping[str, str],
    preprocessing: PreprocessingConfig,
) -> dict[str, str]:
    """The encoding of each categorical and boolean feature, from its levels in ``X_train``
    (the training part only: the choice must not see the test rows)."""
    levels = {
        name: int(X_train[name].nunique())
        for name, kind in types.items()
        if kind in ("categorical", "boolean")
    }
    return choose_encodings(levels, preprocessing)
