"""Build the one scikit-learn Pipeline (preprocessing + estimator) that trains and serves."""

from __future__ import annotations

from typing import Any

from sklearn.pipeline import Pipeline

from mlservice.config import PreprocessingConfig
from mlservice.pipelines.preprocessing import build_preprocessor

__all__ = ["build_pipeline", "build_preprocessor"]


def build_pipeline(
    *, types: dict[str, str], preprocessing: PreprocessingConfig, estimator: Any
) -> Pipeline:
    """Unfitted ``Pipeline([("preprocess", ...), ("model", estimator)])``."""
    return Pipeline(
        [("preprocess", build_preprocessor(types, preprocessing)), ("model", estimator)]
    )
