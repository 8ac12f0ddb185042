"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from mlservice.api.deps import MetricsDep, ModelStateDep
from mlservice.api.errors import error_response, request_id_of
from mlservice.api.metrics import CONTENT_TYPE
from mlservice.api.schemas import ErrorResponse, HealthResponse, ReadyResponse

__all__ = ["ReadyDetailsResponse", "router"]

router = APIRouter(tags=["health"])


class ReadyDetailsResponse(ReadyResponse):
    """Readiness, and why the last reload failed when it did (the model named here serves)."""

    reload_error: str | None = Field(
        None, description="Why the last reload was refused; absent when it succeeded."
    )


@router.get("/health", operation_id="health", summary="Liveness")
def health() -> HealthResponse:
    """200 while the process serves requests, whether or not a model is loaded."""
    return HealthResponse()


@router.get(
    "/health/ready",
    operation_id="ready",
    summary="Readiness",
    responses={
        503: {
            "model": ErrorResponse,
            "description": "No verified model loaded (with the reason), or shutting down",
        }
    },
    response_model=ReadyDetailsResponse,
    response_model_exclude_none=True,
)
def ready(request: Request, state: ModelStateDep) -> ReadyDetailsResponse | JSONResponse:
    """200 with the model name and version once a verified model is loaded; 503 before that,
    and again from SIGTERM on (the process still finishes the requests it has)."""
    predictor = state.predictor  # read once: a reload may swap it meanwhile
    # Not counted as errors: probes poll this endpoint by design.
    if state.draining:
        return error_response(
            503, "not ready: shutting down (SIGTERM received)", request_id=request_id_of(request)
        )
    if predictor is None:
        return error_response(503, f"not ready: {state.error}", request_id=request_id_of(request))
    return ReadyDetailsResponse(
        model_name=predictor.name,
        model_version=predictor.version,
        reload_error=state.reload_error or None,
    )


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
