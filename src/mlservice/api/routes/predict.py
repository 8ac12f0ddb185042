"""``POST /api/v1/predict`` and ``/predict/batch``, typed by the bundle's feature schema.

The request models differ per bundle, so the router is built by ``build_predict_router`` once
the metadata is known. This module does not use ``from __future__ import annotations``: FastAPI
must see the generated models in the endpoint signatures.
"""

import asyncio
import logging
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from mlservice.api.deps import MetricsDep, PredictorDep, SettingsDep
from mlservice.api.errors import (
    ERROR_RESPONSES,
    BatchTooLargeError,
    ModelFailureError,
    PredictionTimeoutError,
    request_id_of,
)
from mlservice.api.metrics import ApiMetrics
from mlservice.api.schemas import (
    BatchPredictResponse,
    PredictResponse,
    RequestModels,
    row_to_python,
)
from mlservice.errors import MlserviceError
from mlservice.inference import Predictor

__all__ = ["build_predict_router", "run_prediction"]

log = logging.getLogger("mlservice.api.predict")


async def run_prediction(
    predictor: Predictor,
    rows: list[Any],
    *,
    timeout_s: float,
    request: Request,
    metrics: ApiMetrics,
) -> list[dict[str, Any]]:
    """Predict in a worker thread with a timeout; model failures become a generic 500."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, partial(predictor.predict_records, rows))
    try:
        results = await asyncio.wait_for(future, timeout=timeout_s)
    except TimeoutError as exc:
        raise PredictionTimeoutError(
            f"prediction took longer than {timeout_s:g} s (request timeout); "
            "send fewer instances per request"
        ) from exc
    except MlserviceError:
        raise
    except Exception as exc:
        request_id = request_id_of(request)
        log.exception("model failed", extra={"fields": {"request_id": request_id}})
        raise ModelFailureError(
            f"the model failed on this input; the error is logged under request id {request_id}"
        ) from exc
    metrics.count_predictions(
        (r["prediction"] for r in results), classification=predictor.is_classifier
    )
    return results


def build_predict_router(models: RequestModels) -> APIRouter:
    """The predict routes with request bodies typed by ``models``."""
    router = APIRouter(prefix="/api/v1", tags=["predict"])
    predict_body: Any = models.predict
    batch_body: Any = models.batch

    @router.post(
        "/predict",
        operation_id="predict",
        summary="Predict one instance",
        responses=ERROR_RESPONSES,
    )
    async def predict(
        request: Request,
        body: Annotated[predict_body, Body(openapi_examples=models.predict_examples())],
        predictor: PredictorDep,
        settings: SettingsDep,
        metrics: MetricsDep,
    ) -> PredictResponse:
        """Features by name (`{"features": {...}}`) or as a list in model feature order."""
        rows = [row_to_python(body.features)]
        results = await run_prediction(
            predictor,
            rows,
            timeout_s=settings.request_timeout_s,
            request=request,
            metrics=metrics,
        )
        return PredictResponse(**results[0], model_version=predictor.version)

    @router.post(
        "/predict/batch",
        operation_id="predict_batch",
        summary="Predict a batch of instances",
        responses=ERROR_RESPONSES,
    )
    async def predict_batch(
        request: Request,
        body: Annotated[batch_body, Body(openapi_examples=models.batch_examples())],
        predictor: PredictorDep,
        settings: SettingsDep,
        metrics: MetricsDep,
    ) -> BatchPredictResponse:
        """Up to `max_batch_size` instances, each an object of features or a list."""
        count = len(body.instances)
        if count > settings.max_batch_size:
            raise BatchTooLargeError(
                f"batch has {count} instances; the limit is {settings.max_batch_size} "
                "(max_batch_size). Split it into smaller batches."
            )
        rows = [row_to_python(row) for row in body.instances]
        results = await run_prediction(
            predictor,
            rows,
            timeout_s=settings.request_timeout_s,
            request=request,
            metrics=metrics,
        )
        return BatchPredictResponse.model_validate(
            {"predictions": results, "total_instances": count, "model_version": predictor.version}
        )

    return router
