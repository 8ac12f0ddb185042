"""Routers of the API: health/metrics, model metadata, and the per-bundle predict routes."""

from mlservice.api.routes.health import router as health_router
from mlservice.api.routes.model import router as model_router
from mlservice.api.routes.monitoring import router as monitoring_router
from mlservice.api.routes.predict import build_predict_router

__all__ = ["build_predict_router", "health_router", "model_router", "monitoring_router"]
