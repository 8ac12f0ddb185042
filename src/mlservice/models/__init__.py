"""Estimator registry. Importing registers every family; estimator libraries load lazily."""

from mlservice.models import boosting, ranking, sklearn_models  # noqa: F401  (registration side effect)
from mlservice.models.base import REGISTRY, ModelSpec, build_estimator, check_params, get_spec

__all__ = ["REGISTRY", "ModelSpec", "build_estimator", "check_params", "config_checks", "get_spec"]

from typing import Any


def config_checks(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Extra config check for ``load_config``: the model type and params fit the estimator."""
    from mlservice.config import DEFAULT_MODEL

    task = raw.get("task")
    model = raw.get("model") or {}
    if task not in DEFAULT_MODEL or not isinstance(model, dict):
        return []
    name = model.get("type") or DEFAULT_MODEL[task]
    params = model.get("params") or {}
    if not isinstance(name, str) or not isinstance(params, dict):
        return []
    return check_params(name, task, params)
