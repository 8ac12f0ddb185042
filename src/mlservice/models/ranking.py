"""The pointwise ranking baseline: ``hist_gradient_boosting`` regresses the relevance grade.

``lightgbm`` (``LGBMRanker``, lambdarank) and ``xgboost`` (``XGBRanker``) learn from whole queries;
the pointwise baseline scores each candidate alone, a baseline the listwise rankers should beat.
Importing this module adds ``ranking`` to the ``hist_gradient_boosting`` registry entry
(idempotent); ``mlservice.models`` should import it so the registry never depends on import order.
"""

from __future__ import annotations

import dataclasses

from mlservice.models.base import REGISTRY, ModelSpec, register
from mlservice.models.sklearn_models import HIST_GRADIENT_BOOSTING

__all__ = ["POINTWISE_RANKERS"]

_POINTWISE = {HIST_GRADIENT_BOOSTING.name: "sklearn.ensemble.HistGradientBoostingRegressor"}


def _with_ranking(name: str, class_path: str) -> ModelSpec:
    spec = REGISTRY[name]
    if spec.classes.get("ranking") == class_path:
        return spec
    return register(dataclasses.replace(spec, classes={**spec.classes, "ranking": class_path}))


POINTWISE_RANKERS: tuple[ModelSpec, ...] = tuple(
    _with_ranking(name, path) for name, path in _POINTWISE.items()
)
