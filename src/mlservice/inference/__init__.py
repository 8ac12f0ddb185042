"""Serving-side inference: load a verified bundle once, validate rows, predict vectorized."""

from mlservice.inference.predictor import (
    MAX_ABS_NUMERIC,
    MAX_TEXT_LENGTH,
    FeatureInfo,
    Predictor,
    Row,
)

__all__ = ["MAX_ABS_NUMERIC", "MAX_TEXT_LENGTH", "FeatureInfo", "Predictor", "Row"]
