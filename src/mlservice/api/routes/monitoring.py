"""``GET /api/v1/monitoring``: drift of recent traffic against the training reference."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from mlservice.api.deps import ModelStateDep, PredictorDep
from mlservice.api.errors import ERROR_RESPONSES

__all__ = ["MonitoringResponse", "router"]

router = APIRouter(prefix="/api/v1", tags=["monitoring"])

_OFF = (
    "monitoring is off (MLSERVICE_MONITORING=false or the bundle's monitoring.enabled: false)"
)


class MonitoringResponse(BaseModel):
    """The drift report; ``features`` holds one entry per monitored feature (see the docs)."""

    model_config = ConfigDict(extra="allow")

    drift: bool
    window: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    prediction: dict[str, Any] | None = None


@router.get(
    "/monitoring",
    operation_id="get_monitoring",
    summary="Drift of recent traffic",
    response_model=MonitoringResponse,
    responses={k: ERROR_RESPONSES[k] for k in (401, 422, 503)},
)
def get_monitoring(
    state: ModelStateDep,
    predictor: PredictorDep,
    detail: bool = Query(False, description="add each feature's binned distributions"),
) -> dict[str, Any]:
    """Per feature: PSI against the training data, drift flag, missing, out-of-range, unseen
    and rejected rates; the predictions' drift; for classifiers an accuracy estimate."""
    window = state.window
    if window is None:
        return {"drift": False, "enabled": False, "note": _OFF, "window": {}, "features": {}}
    report: dict[str, Any] = window.report(detail=detail)
    report["model_version"] = predictor.version
    return report
