"""The estimator registry: names in ``model.type`` → estimator classes, defaults and checks."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from mlservice.errors import ConfigError, MissingExtraError

__all__ = ["REGISTRY", "ModelSpec", "build_estimator", "check_params", "get_spec", "register"]


@dataclass(frozen=True)
class ModelSpec:
    """One estimator family: dotted class path per task, defaults, simple numeric rules."""

    name: str
    classes: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    #: param -> (low, low_inclusive) for libraries without scikit-learn's param validation
    lower_bounds: dict[str, tuple[float, bool]] = field(default_factory=dict)
    seed_param: str | None = "random_state"
    extra: str | None = None
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)

    def class_path(self, task: str) -> str:
        try:
            return self.classes[task]
        except KeyError:
            raise ConfigError(
                f"model type {self.name!r} does not support task {task!r}",
                [("model.type", f"{self.name!r} supports {sorted(self.classes)} only")],
            ) from None

    def load_class(self, task: str) -> type:
        module_name, _, cls_name = self.class_path(task).rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = self.extra or "train"
            raise MissingExtraError(
                f"model type {self.name!r} needs {module_name.split('.')[0]!r}: "
                f"pip install 'mlservice[{extra}]'"
            ) from exc
        cls: type = getattr(module, cls_name)
        return cls


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            "invalid model",
            [("model.type", f"unknown model {name!r}{hint}; known: {sorted(REGISTRY)}")],
        )
    return REGISTRY[name]


def _resolve_params(spec: ModelSpec, params: dict[str, Any]) -> dict[str, Any]:
    return {spec.aliases.get(key, key): value for key, value in params.items()}


def check_params(name: str, task: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem with ``params`` for estimator ``name`` as (key path, message) pairs."""
    try:
        spec = get_spec(name)
        cls = spec.load_class(task)
    except ConfigError as exc:
        return exc.problems
    except MissingExtraError as exc:
        return [("model.type", str(exc))]
    valid = set(cls().get_params())
    problems: list[tuple[str, str]] = []
    resolved = {}
    for key, value in params.items():
        target = spec.aliases.get(key, key)
        if target not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((f"model.params.{key}", f"unknown parameter for {cls.__name__}{hint}"))
            continue
        bound = spec.lower_bounds.get(target)
        if bound is not None and isinstance(value, int | float) and not isinstance(value, bool):
            low, inclusive = bound
            if value < low or (value == low and not inclusive):
                op = ">=" if inclusive else ">"
                problems.append((f"model.params.{key}", f"must be {op} {low:g}, got {value!r}"))
                continue
        resolved[target] = value
    if problems:
        return problems
    estimator = cls(**{**spec.defaults, **resolved})
    validate = getattr(estimator, "_validate_params", None)
    # LightGBM/XGBoost inherit _validate_params but declare no constraints; lower_bounds cover them.
    if callable(validate) and hasattr(estimator, "_parameter_constraints"):
        try:
            validate()
        except (ValueError, TypeError) as exc:
            text = str(exc)
            param = next((k for k in params if f"'{spec.aliases.get(k, k)}'" in text), None)
            path = f"model.params.{param}" if param else "model.params"
            problems.append((path, text))
    return problems


def build_estimator(name: str, task: str, params: dict[str, Any], *, seed: int) -> Any:
    """An unfitted estimator with defaults, the config's params and the seed."""
    spec = get_spec(name)
    cls = spec.load_class(task)
    merged = {**spec.defaults, **_resolve_params(spec, params)}
    if spec.seed_param and spec.seed_param not in merged:
        merged[spec.seed_param] = seed
    return cls(**merged)
