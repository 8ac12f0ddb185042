"""Pointwise ranking baselines: scikit-learn regressors fitted on the relevance grade.

``lightgbm`` (``LGBMRanker``, lambdarank) and ``xgboost`` (``XGBRanker``) learn from whole queries;
these families score each candidate alone, a baseline the listwise rankers should beat. Importing
this module adds ``ranking`` to their registry entries (idempotent).
"""

from __future__ import annotations

import dataclasses

from mlservice.models.base import REGISTRY, ModelSpec, register
from mlservice.models.sklearn_models import HIST_GRADIENT_BOOSTING, RANDOM_FOREST, RIDGE

__all__ = ["POINTWISE_RANKERS"]

_POINTWISE = {
    HIST_GRADIENT_BOOSTING.name: "sklearn.ensemble.HistGradientBoostingRegressor",
    RANDOM_FOREST.name: "sklearn.ensemble.RandomForestRegressor",
    RIDGE.name: "sklearn.linear_model.Ridge",
}


def _with_ranking(name: str, class_path: str) -> ModelSpec:
    spec = REGISTRY[name]
    if spec.classes.get("ranking") == class_path:
        return spec
    return register(dataclasses.replace(spec, classes={**spec.classes, "ranking": class_path}))


POINTWISE_RANKERS: tuple[ModelSpec, ...] = tuple(
    _with_ranking(name, path) for name, path in _POINTWISE.items()
)
