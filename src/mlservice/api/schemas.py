"""Request and response models of the HTTP API.

The request models are generated per bundle from its feature schema (``build_request_models``):
named, typed fields (strict finite floats, categories as ``Literal``, strict booleans), nullable
only where training data had missing values, unknown fields forbidden, with an example row. The
response models are fixed; routes never return internal objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
)
from pydantic_core import PydanticCustomError

from mlservice.categories import canonical_category, canonical_request_value
from mlservice.inference import MAX_ABS_NUMERIC, MAX_TEXT_LENGTH, FeatureInfo

__all__ = [
    "TOO_MANY_ITEMS",
    "BatchPredictResponse",
    "CvMetric",
    "ErrorItem",
    "ErrorResponse",
    "FeatureDescription",
    "HealthResponse",
    "ModelInfoResponse",
    "NumericRange",
    "PredictResponse",
    "Prediction",
    "ReadyResponse",
    "RequestModels",
    "TargetDescription",
    "TargetResult",
    "build_request_models",
    "max_items",
    "row_to_python",
    "row_values",
    "too_many_items",
]

Scalar = str | int | float | bool


# ------------------------------------------------------------------------------ responses
class ErrorItem(BaseModel):
    """One validation problem: where (``loc``) and what."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer."""

    detail: str
    errors: list[ErrorItem] | None = None
    request_id: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model_name: str
    model_version: str


class Prediction(BaseModel):
    """One prediction; floats that the model could not produce are ``null``."""

    prediction: Scalar | None = Field(description="class label, or the predicted number")
    confidence: float | None = Field(None, ge=0.0, le=1.0, description="highest probability")
    probabilities: dict[str, Annotated[float, Field(ge=0.0, le=1.0)] | None] | None = Field(
        None, description="probability of each class (classification)"
    )
    interval: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[low, high] prediction interval (regression)"
    )


class PredictResponse(Prediction):
    model_version: str


class BatchPredictResponse(BaseModel):
    predictions: list[Prediction]
    total_instances: int = Field(ge=1)
    model_version: str


class NumericRange(BaseModel):
    min: float | None
    max: float | None


class FeatureDescription(BaseModel):
    name: str
    type: str
    dtype: str
    nullable: bool
    categories: list[Scalar] | None = None
    range: NumericRange | None = None
    example: Scalar | None = None


class TargetDescription(BaseModel):
    name: str | None
    classes: list[Scalar] | None = None


class TargetResult(BaseModel):
    metric: str
    target: str
    observed: float | None = None
    met: bool | None = None


class CvMetric(BaseModel):
    mean: float | None = None
    std: float | None = None


class ModelMetrics(BaseModel):
    train: dict[str, float | None] = Field(default_factory=dict)
    test: dict[str, float | None] = Field(default_factory=dict)
    cv: dict[str, CvMetric] = Field(default_factory=dict)


class DataFingerprint(BaseModel):
    sha256: str | None = None
    dvc_md5: str | None = None


class IntervalInfo(BaseModel):
    level: float | None = None
    halfwidth: float | None = None


class ModelInfoResponse(BaseModel):
    """What the served model is, what it expects, and how good it was at training time."""

    name: str
    version: str
    task: str
    description: str | None = None
    bundle_id: str | None = None
    trained_at: str | None = None
    features: list[FeatureDescription]
    target: TargetDescription
    classes: list[Scalar] | None = None
    metrics: ModelMetrics
    targets: list[TargetResult]
    gate_passed: bool | None = None
    interval: IntervalInfo | None = None
    data_fingerprint: DataFingerprint | None = None

    @classmethod
    def from_metadata(
        cls, meta: Mapping[str, Any], features: tuple[FeatureInfo, ...]
    ) -> ModelInfoResponse:
        """Build from bundle metadata (every float made JSON-safe)."""
        target = _mapping(meta.get("target"))
        metrics = _mapping(meta.get("metrics"))
        fingerprint = _mapping(_mapping(meta.get("data")).get("fingerprint"))
        gate = _mapping(meta.get("gate"))
        interval = _mapping(meta.get("interval"))
        return cls(
            name=str(meta.get("name", "")),
            version=str(meta.get("version", "")),
            task=str(meta.get("task", "")),
            description=meta.get("description"),
            bundle_id=meta.get("bundle_id"),
            trained_at=meta.get("created_at"),
            features=[_describe(f) for f in features],
            target=TargetDescription(name=target.get("name"), classes=target.get("classes")),
            classes=target.get("classes"),
            metrics=ModelMetrics(
                train=_floats(metrics.get("train")),
                test=_floats(metrics.get("test")),
                cv={k: CvMetric(**_floats(v)) for k, v in _mapping(metrics.get("cv")).items()},
            ),
            targets=[_target(row) for row in meta.get("targets") or [] if isinstance(row, Mapping)],
            gate_passed=gate.get("passed"),
            interval=IntervalInfo(**_floats(interval)) if interval else None,
            data_fingerprint=DataFingerprint(**fingerprint) if fingerprint else None,
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _floats(values: Any) -> dict[str, float | None]:
    return {str(k): _finite(v) for k, v in _mapping(values).items()}


def _target(row: Mapping[str, Any]) -> TargetResult:
    text = row.get("text") or f"{row.get('op', '')} {row.get('value', '')}".strip()
    met = row.get("met")
    return TargetResult(
        metric=str(row.get("metric", "")),
        target=str(text),
        observed=_finite(row.get("observed")),
        met=met if isinstance(met, bool) else None,
    )


def _describe(info: FeatureInfo) -> FeatureDescription:
    numeric = info.kind == "numeric"
    example = info.example if isinstance(info.example, Scalar) else None
    return FeatureDescription(
        name=info.name,
        type=info.kind,
        dtype=info.dtype,
        nullable=info.nullable,
        categories=list(info.categories) if info.categories else None,
        range=NumericRange(min=info.minimum, max=info.maximum) if numeric else None,
        example=_finite(example) if isinstance(example, float) else example,
    )


# ------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestModels:
    """The per-bundle request models and their examples."""

    predict: type[BaseModel]
    batch: type[BaseModel]
    named_example: dict[str, Any]
    positional_example: list[Any]
    typed: bool

    def predict_examples(self) -> dict[str, Any]:
        """``openapi_examples`` of ``POST /api/v1/predict``."""
        return {
            "named": {"summary": "Features by name", "value": {"features": self.named_example}},
            "positional": {
                "summary": "Features in model order",
                "value": {"features": self.positional_example},
            },
        }

    def batch_examples(self) -> dict[str, Any]:
        """``openapi_examples`` of ``POST /api/v1/predict/batch``."""
        rows = [self.named_example, self.positional_example]
        return {"instances": {"summary": "Two instances", "value": {"instances": rows}}}


def _describe_field(info: FeatureInfo) -> str:
    if info.kind == "numeric":
        text = "Number"
        if info.minimum is not None and info.maximum is not None:
            text += f"; training range {info.minimum:g} to {info.maximum:g}"
    elif info.categories and info.closed:
        text = "One of: " + ", ".join(str(c) for c in info.categories)
        if info.canonical and any(_number_form(c) is not None for c in info.categories):
            text += " (a number means the category of the same digits)"
    elif info.kind == "categorical" and info.canonical:
        text = "Category: a string, or a number meaning the category of the same digits"
    elif info.kind == "datetime":
        text = "Date/time, ISO 8601"
    elif info.kind == "boolean":
        text = "true or false"
    else:
        text = "Text" if info.kind == "text" else "Category"
    return text + ("; null when unknown" if info.nullable else "")


def _field_type(info: FeatureInfo) -> Any:
    if info.kind == "numeric":
        return Annotated[
            float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_NUMERIC, le=MAX_ABS_NUMERIC)
        ]
    if info.kind == "boolean":
        return Annotated[bool, Field(strict=True)]
    if info.kind == "datetime":
        return datetime
    if info.kind == "categorical" and info.canonical:
        return _canonical_category_type(info)
    if info.kind == "categorical" and info.categories and info.closed:
        return Literal[info.categories]
    return Annotated[str, Field(strict=True, max_length=MAX_TEXT_LENGTH)]


def _number_form(category: Any) -> int | float | None:
    """The JSON number that means ``category`` (``"123"`` → 123), if one does."""
    if not isinstance(category, str):
        return None
    try:
        number = int(category) if category.lstrip("-").isdigit() else float(category)
    except ValueError:
        return None
    return number if canonical_category(number) == category else None


def _canonical_category_type(info: FeatureInfo) -> Any:
    """A category of a canonical bundle: a string, or a number meaning the category of the
    same digits (a zip code sent as ``123`` or ``"123"``). Closed features list both forms
    in the schema; open ones (many levels) take any string or integer."""
    to_string = BeforeValidator(canonical_request_value)
    if info.categories and info.closed:
        numbers = [n for n in map(_number_form, info.categories) if n is not None]
        return Annotated[Literal[(*info.categories, *numbers)], to_string]
    return Annotated[
        Annotated[str, Field(strict=True, max_length=MAX_TEXT_LENGTH)] | int, to_string
    ]


def _example(info: FeatureInfo) -> Any:
    value = info.example
    if info.kind == "boolean" and isinstance(value, str):  # a canonical bundle's "True"
        value = value == "True"
    if info.kind == "categorical" and info.closed and info.categories:
        return value if value in info.categories else info.categories[0]
    if value is None and not info.nullable:
        return {"numeric": 0.0, "boolean": False, "datetime": "2024-01-01T00:00:00"}.get(
            info.kind, ""
        )
    return value


def _length_check(names: list[str]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) != len(names):
            raise PydanticCustomError(
                "positional_length",
                "expected {expected} values in the order {names}, got {got}",
                {"expected": len(names), "names": names, "got": len(value)},
            )
        return value

    return check


#: Error type of a list longer than its limit; the API answers it with 413.
TOO_MANY_ITEMS = "too_many_items"


def max_items(limit: int, what: str) -> Callable[[Any], Any]:
    """A ``BeforeValidator`` refusing a list longer than ``limit`` before its items are
    validated: pydantic's own ``max_length`` is checked after every item was (a million empty
    rows cost a million errors first)."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise too_many_items(len(value), limit, what)
        return value

    return check


def too_many_items(count: int, limit: int, what: str) -> PydanticCustomError:
    """The error of a request with more rows than ``max_batch_size`` (answered 413)."""
    return PydanticCustomError(
        TOO_MANY_ITEMS,
        "request has {count} {what}; the limit is {limit} (max_batch_size). "
        "Split it into smaller requests.",
        {"count": count, "limit": limit, "what": what},
    )


def _positional_tag(value: Any) -> str:
    return "positional" if isinstance(value, list | tuple) else "named"


def build_request_models(
    features: tuple[FeatureInfo, ...] | None,
    *,
    model_name: str = "model",
    max_batch_size: int = 10_000,
) -> RequestModels:
    """Request models for ``features`` (``None``: a generic schema for an unreadable bundle).

    ``instances`` of a batch holds at most ``max_batch_size`` rows, checked before any row.
    """
    if not features:
        row: Any = dict[str, Any] | list[Any]
        named: dict[str, Any] = {}
        positional: list[Any] = []
        typed = False
    else:
        named = {f.name: _example(f) for f in features}
        positional = list(named.values())
        fields: dict[str, Any] = {}
        item_types = []
        for i, info in enumerate(features):
            base = _field_type(info)
            annotation = base | None if info.nullable else base
            field = Field(
                None if info.nullable else ...,
                alias=info.name,
                description=_describe_field(info),
                examples=[named[info.name]],
            )
            fields[f"f{i}"] = (annotation, field)
            item_types.append(Annotated[annotation, Field(description=info.name)])
        feature_model = create_model(
            "Features",
            __config__=ConfigDict(
                extra="forbid", populate_by_name=False, json_schema_extra={"examples": [named]}
            ),
            __doc__=f"Input features of {model_name!r} by name.",
            **fields,
        )
        positional_type: Any = Annotated[
            tuple.__class_getitem__(tuple(item_types)),
            BeforeValidator(_length_check([f.name for f in features])),
        ]
        row = Annotated[
            Annotated[feature_model, Tag("named")] | Annotated[positional_type, Tag("positional")],
            Discriminator(_positional_tag),
        ]
        typed = True
    instances_type: Any = Annotated[
        Annotated[list[row], Field(min_length=1, max_length=max_batch_size)],
        BeforeValidator(max_items(max_batch_size, "instances")),
    ]
    predict = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="One instance: an object of features by name, or a list in model feature order.",
        features=(row, Field(...)),
    )
    batch = create_model(
        "BatchPredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Several instances, each an object of features or a list in feature order.",
        instances=(instances_type, Field(...)),
    )
    return RequestModels(predict, batch, named, positional, typed)


def row_to_python(row: Any) -> Any:
    """A validated request row as the predictor takes it (dict by feature name, or a list)."""
    if isinstance(row, BaseModel):
        return row.model_dump(by_alias=True)
    if isinstance(row, tuple):
        return list(row)
    return row


def row_values(row: Any) -> Any:
    """A validated request row as its values in model feature order (no dict built).

    A typed ``Features`` model holds one field per feature, declared in feature order, so its
    ``__dict__`` values are the row; a positional row is already in that order. Rows of the
    generic schema (unreadable bundle metadata) pass through for the predictor's full checks.
    """
    if isinstance(row, BaseModel):
        return list(row.__dict__.values())
    if isinstance(row, tuple):
        return list(row)
    return row
