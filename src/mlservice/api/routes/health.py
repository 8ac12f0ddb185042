"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from mlservice.api.deps import MetricsDep, ModelStateDep
from mlservice.api.errors import error_response, request_id_of
from mlservice.api.metrics import CONTENT_TYPE
from mlservice.api.schemas import ErrorResponse, HealthResponse, ReadyResponse

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health", summary="Liveness")
def health() -> HealthResponse:
    """200 while the process serves requests, whether or not a model is loaded."""
    return HealthResponse()


@router.get(
    "/health/ready",
    operation_id="ready",
    summary="Readiness",
    responses={503: {"model": ErrorResponse, "description": "No model loaded (with the reason)"}},
    response_model=ReadyResponse,
)
def ready(request: Request, state: ModelStateDep) -> ReadyResponse | JSONResponse:
    """200 with the model name and version once a verified model is loaded, 503 otherwise."""
    if state.predictor is None:
        # Not counted as an error: probes poll this endpoint by design.
        return error_response(503, f"not ready: {state.error}", request_id=request_id_of(request))
    return ReadyResponse(model_name=state.predictor.name, model_version=state.predictor.version)


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        }
    },
)
def metrics(metrics: MetricsDep) -> Response:
    """Requests and latency by route and status, predictions by class, errors by kind."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
