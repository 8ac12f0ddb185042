"""``POST /api/v1/forecast``: recursive multi-step forecasts of a time-series model.

The body carries the recent history of each series (time, target, series id when the model is
grouped) and the number of steps; see ``mlservice.inference.forecast`` for how the steps are
computed. Input problems are 422 with a message that names the row and what is needed (for
instance how many history rows a series must have); a model of another task is 400.
"""

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlservice.api.deps import MetricsDep, PredictorDep, SettingsDep
from mlservice.api.errors import ERROR_RESPONSES, ApiError
from mlservice.api.routes._offload import per_predictor, run_model_call
from mlservice.api.schemas import too_many_items
from mlservice.inference.forecast import FORECAST_METHOD, Forecaster, example_request

__all__ = [
    "MAX_HORIZON",
    "ForecastItem",
    "ForecastRequest",
    "ForecastResponse",
    "WrongTaskError",
    "build_forecast_router",
]

#: Most steps one request may ask for: recursion costs one model call per step.
MAX_HORIZON = 1000


class WrongTaskError(ApiError):
    """The served model's task has no such endpoint (e.g. /forecast on a classifier)."""

    status_code = 400
    kind = "bad_request"


class ForecastRequest(BaseModel):
    """Recent history of each series, and how many steps to forecast after it."""

    model_config = ConfigDict(extra="forbid")
    #: Most history + future rows (``max_batch_size``), counted before any row is validated.
    max_rows: ClassVar[int] = 10_000

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            rows = sum(len(v) for k in ("history", "future") if isinstance(v := data.get(k), list))
            if rows > cls.max_rows:
                raise too_many_items(rows, cls.max_rows, "history/future rows")
        return data

    history: list[dict[str, Any]] = Field(
        ...,
        min_length=1,
        description="Rows with the time column (ISO 8601), the target and, for a grouped model, "
        "the series id; at least `min_history` consecutive rows per series (GET /api/v1/model "
        "lists the model's time-series settings).",
    )
    horizon: int | None = Field(
        None, ge=1, le=MAX_HORIZON, description="Steps to forecast (default: the trained horizon)"
    )
    future: list[dict[str, Any]] | None = Field(
        None,
        description="Only for models with exogenous features: their values for each future "
        "step of each series, in time order.",
    )


class ForecastItem(BaseModel):
    series: str | int | None = Field(description="series id; null for a single-series model")
    step: int = Field(ge=1)
    time: str = Field(description="ISO 8601 time of the forecast step")
    forecast: float | None


class ForecastResponse(BaseModel):
    forecasts: list[ForecastItem]
    horizon: int
    method: Literal["recursive"] = FORECAST_METHOD
    model_version: str


def _example(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    if meta and meta.get("task") == "time_series":
        try:
            return example_request(meta)
        except (KeyError, TypeError, ValueError):
            pass  # unreadable metadata: the generic example below
    return {"history": [{"date": "2024-01-01T00:00:00", "value": 1.0}], "horizon": 1}


def build_forecast_router(
    meta: Mapping[str, Any] | None = None, *, max_rows: int = 10_000
) -> APIRouter:
    """The forecast route; ``meta`` (bundle metadata, optional) only shapes the /docs example;
    a request holds at most ``max_rows`` history and future rows."""
    router = APIRouter(prefix="/api/v1", tags=["forecast"])

    class BoundedForecastRequest(ForecastRequest):
        __doc__ = ForecastRequest.__doc__

    BoundedForecastRequest.max_rows = max_rows

    forecaster_of = per_predictor(Forecaster, WrongTaskError)

    example = {"history": {"summary": "Recent history", "value": _example(meta)}}

    @router.post(
        "/forecast",
        operation_id="forecast",
        summary="Forecast the next steps of one or more series",
        responses=ERROR_RESPONSES,
    )
    async def forecast(
        request: Request,
        body: Annotated[BoundedForecastRequest, Body(openapi_examples=example)],
        predictor: PredictorDep,
        settings: SettingsDep,
        metrics: MetricsDep,
    ) -> ForecastResponse:
        """One forecast per series and step, computed recursively (see the module docs)."""
        forecaster = forecaster_of(predictor)  # rows counted by the request model
        steps = body.horizon or forecaster.spec.horizon
        points = await run_model_call(
            lambda: forecaster.forecast(body.history, horizon=steps, future=body.future),
            timeout_s=settings.request_timeout_s,
            request=request,
        )
        metrics.count_predictions((p.forecast for p in points), classification=False)
        return ForecastResponse(
            forecasts=[
                ForecastItem(series=p.group, step=p.step, time=p.time, forecast=p.forecast)
                for p in points
            ],
            horizon=steps,
            model_version=predictor.version,
        )

    return router
