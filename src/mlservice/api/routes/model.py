"""``GET /api/v1/model``: what the served model is and what it expects."""

from __future__ import annotations

from fastapi import APIRouter

from mlservice.api.deps import PredictorDep
from mlservice.api.errors import ERROR_RESPONSES
from mlservice.api.schemas import ModelInfoResponse

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["model"])


@router.get(
    "/model",
    operation_id="get_model",
    summary="Model metadata",
    responses={k: ERROR_RESPONSES[k] for k in (401, 503)},
)
def get_model(predictor: PredictorDep) -> ModelInfoResponse:
    """Name, version, task, feature schema, target and classes, metrics, targets, data hash."""
    return ModelInfoResponse.from_metadata(predictor.metadata, predictor.features)
