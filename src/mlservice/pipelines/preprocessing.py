"""Build the unfitted preprocessing ``ColumnTransformer`` from the feature types and config.

Categorical columns (and booleans) arrive as canonical strings (``mlservice.categories``). Each
gets an encoding chosen from its number of levels in the training part
(``choose_encodings``): one-hot for a few levels; for many (a zip code, a product id)
scikit-learn's ``TargetEncoder``, which replaces each level by a smoothed mean of the target
learned with internal cross-fitting (so a row's own target never encodes it: no leakage), shrinks
rare levels towards the global mean (they are grouped in effect) and maps unseen levels to the
global mean. A dense one-hot of 8,000 levels took 6.5 GB and 400 s for 50k rows; the target
encoding is one column per level set (one per class for multiclass targets) and exports to ONNX.
``ordinal`` is there for explicit use. ``native`` categorical support of LightGBM or
HistGradientBoosting is not offered: their ONNX converters do not take categorical splits, and a
model that does not export is served at 1/100 of the speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    TargetEncoder,
)
from sklearn.preprocessing import StandardScaler as _StandardScaler

from mlservice.config import PreprocessingConfig
from mlservice.pipelines.features import DatetimeFeatures, Float32Values

__all__ = ["ENCODINGS", "build_preprocessor", "choose_encodings"]

#: The encodings a categorical column can get (``auto`` chooses one of the others).
ENCODINGS = ("onehot", "target", "ordinal")
#: Branch of the ColumnTransformer that holds the columns of each encoding.
_BRANCH = {
    "onehot": "categorical",
    "target": "categorical_target",
    "ordinal": "categorical_ordinal",
}

_SKLEARN = tuple(int(part) for part in sklearn.__version__.split(".")[:2])

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


def choose_encodings(
    levels: Mapping[str, int], config: PreprocessingConfig
) -> dict[str, str]:
    """The encoding of each categorical column: the per-column override, else the configured
    one, else (``auto``) one-hot up to ``max_onehot_levels`` levels and target encoding above."""
    categorical = config.categorical
    chosen: dict[str, str] = {}
    for name, count in levels.items():
        choice = categorical.columns.get(name, categorical.encode)
        if choice == "auto":
            choice = "onehot" if count <= categorical.max_onehot_levels else "target"
        chosen[name] = choice
    return chosen


def _target_encoder(seed: int) -> TargetEncoder:
    """Cross-fitted on 5 shuffled folds (seeded): reproducible, and no row encodes itself."""
    if _SKLEARN >= (1, 9):  # a seeded splitter; ``random_state`` is deprecated from 1.9
        return TargetEncoder(smooth="auto", cv=KFold(5, shuffle=True, random_state=seed))
    return TargetEncoder(smooth="auto", cv=5, shuffle=True, random_state=seed)


def _categorical(config: PreprocessingConfig, encoding: str, seed: int) -> Pipeline:
    steps: list[tuple[str, Any]] = []
    if config.categorical.impute != "none":
        steps.append(
            ("impute", SimpleImputer(strategy=config.categorical.impute, fill_value="missing"))
        )
    if encoding == "onehot":
        steps.append(("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
    elif encoding == "target":
        steps.append(("encode", _target_encoder(seed)))
        steps.append(("float32", Float32Values()))  # the values the ONNX graph computes
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


def build_preprocessor(
    types: dict[str, str],
    config: PreprocessingConfig,
    *,
    encodings: Mapping[str, str] | None = None,
    seed: int = 0,
) -> ColumnTransformer:
    """One branch per column type (and categorical encoding); columns are selected by name so
    order does not matter. ``encodings`` (``choose_encodings``) defaults to the configured
    encoding, one-hot for ``auto``."""
    by_type: dict[str, list[str]] = {}
    for name, kind in types.items():
        by_type.setdefault(kind, []).append(name)
    transformers: list[tuple[str, Any, Any]] = []
    if by_type.get("numeric"):
        transformers.append(("numeric", _numeric(config), by_type["numeric"]))
    default = config.categorical.encode if config.categorical.encode != "auto" else "onehot"
    by_encoding: dict[str, list[str]] = {}
    for name in by_type.get("categorical", []) + by_type.get("boolean", []):
        encoding = (encodings or {}).get(name) or config.categorical.columns.get(name, default)
        by_encoding.setdefault("onehot" if encoding == "auto" else encoding, []).append(name)
    for encoding in ENCODINGS:
        if by_encoding.get(encoding):
            branch = _categorical(config, encoding, seed)
            transformers.append((_BRANCH[encoding], branch, by_encoding[encoding]))
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
