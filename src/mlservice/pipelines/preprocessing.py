"""Build the unfitted preprocessing ``ColumnTransformer`` from the feature types and config."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler
from sklearn.preprocessing import StandardScaler as _StandardScaler

from mlservice.config import PreprocessingConfig
from mlservice.pipelines.features import DatetimeFeatures

__all__ = ["build_preprocessor"]

_SCALERS: dict[str, Any] = {
    "standard": _StandardScaler,
    "minmax": MinMaxScaler,
    "robust": RobustScaler,
}


def _numeric(config: PreprocessingConfig) -> Pipeline | str:
    steps: list[tuple[str, Any]] = []
    if config.numeric.impute != "none":
        steps.append(("impute", SimpleImputer(strategy=config.numeric.impute)))
    if config.numeric.scale != "none":
        steps.append(("scale", _SCALERS[config.numeric.scale]()))
    return Pipeline(steps) if steps else "passthrough"


def _categorical(config: PreprocessingConfig) -> Pipeline:
    steps: list[tuple[str, Any]] = []
    if config.categorical.impute != "none":
        steps.append(
            ("impute", SimpleImputer(strategy=config.categorical.impute, fill_value="missing"))
        )
    if config.categorical.encode == "onehot":
        steps.append(("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
    else:
        steps.append(
            (
                "encode",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
            )
        )
    return Pipeline(steps)


def _text(config: PreprocessingConfig) -> Any:
    if config.text.embed == "minilm":
        # Light import: the model itself loads on first fit/transform ([text] extra).
        from mlservice.llm.embeddings import TextEmbedder

        return TextEmbedder(model_name="minilm")
    return TfidfVectorizer(max_features=config.text.max_features)


def build_preprocessor(types: dict[str, str], config: PreprocessingConfig) -> ColumnTransformer:
    """One branch per column type; columns are selected by name so order does not matter."""
    by_type: dict[str, list[str]] = {}
    for name, kind in types.items():
        by_type.setdefault(kind, []).append(name)
    transformers: list[tuple[str, Any, Any]] = []
    if by_type.get("numeric"):
        transformers.append(("numeric", _numeric(config), by_type["numeric"]))
    categorical = by_type.get("categorical", []) + by_type.get("boolean", [])
    if categorical:
        transformers.append(("categorical", _categorical(config), categorical))
    if by_type.get("datetime"):
        datetime_steps = Pipeline(
            [("parts", DatetimeFeatures()), ("impute", SimpleImputer(strategy="median"))]
        )
        transformers.append(("datetime", datetime_steps, by_type["datetime"]))
    # TfidfVectorizer takes one 1-D column, so each text column gets its own branch.
    for name in by_type.get("text", []):
        transformers.append((f"text_{name}", _text(config), name))
    return ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=True
    )
