"""FastAPI dependencies as ``Annotated`` aliases: the loaded model and the API-key checks.

``ModelState.predictor`` is the one slot the routes read the model from, once per request (via
``PredictorDep``); a hot reload replaces it with a single assignment, so a request in flight keeps
the predictor it started with and the next one gets the new model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mlservice.api.auth import check_key
from mlservice.api.errors import ApiError, ModelUnavailableError, UnauthorizedError
from mlservice.api.metrics import ApiMetrics
from mlservice.api.settings import ApiSettings
from mlservice.inference import Predictor

__all__ = [
    "ForbiddenError",
    "MetricsDep",
    "ModelState",
    "ModelStateDep",
    "PredictorDep",
    "SettingsDep",
    "get_metrics",
    "get_model_state",
    "get_predictor",
    "get_settings",
    "refuse_admin",
    "require_admin_key",
    "require_api_key",
]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the keys in the API keys variable."
)
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`.")


class ForbiddenError(ApiError):
    status_code = 403
    kind = "forbidden"


@dataclass
class ModelState:
    """The model slot of one app: a predictor once loaded, else why not.

    ``reload_error`` is why the last reload failed while ``predictor`` (the older model) still
    serves; ``draining`` turns true when SIGTERM arrives (readiness answers 503 from then on).
    """

    path: Path
    predictor: Predictor | None = None
    error: str = "the model is still loading"
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    reload_error: str = ""
    draining: bool = False
    #: The drift window of the model being served (``mlservice.api.monitoring``); replaced
    #: with the predictor on a reload; ``None`` when monitoring is off.
    window: Any = None


# Dependencies are ``async def``: none blocks, and a plain ``def`` costs a thread-pool hop per
# request (measured: most of the per-request overhead before this change).
async def get_model_state(request: Request) -> ModelState:
    state: ModelState = request.app.state.model
    return state


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


ModelStateDep = Annotated[ModelState, Depends(get_model_state)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


async def get_predictor(state: ModelStateDep) -> Predictor:
    """The loaded predictor, or 503 with the reason it is not there."""
    if state.predictor is None:
        raise ModelUnavailableError(
            f"no model is loaded: {state.error}. GET /health/ready reports readiness."
        )
    return state.predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


async def require_api_key(
    state: ModelStateDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    """401 unless the request carries one of the configured keys (``X-API-Key`` or Bearer).

    ``BodyGuardMiddleware`` refuses such requests before their body is read, by the same rule
    (``mlservice.api.auth``); this dependency declares the security schemes in OpenAPI and
    guards the routes of an app built without that middleware.
    """
    token = api_key if api_key else (bearer.credentials if bearer else None)
    problem = check_key(token, state.api_keys)
    if problem is not None:
        raise UnauthorizedError(problem, headers={"WWW-Authenticate": "Bearer"})


_ADMIN_OFF = (
    "admin endpoints are disabled because no API keys are configured; put keys in the "
    "variable named by serving.api_keys_env (default MLSERVICE_API_KEYS) and restart"
)


async def refuse_admin() -> None:
    """403: the admin routes of an app without API keys (an open admin API would let anyone
    swap the model). Declares no security scheme, so the OpenAPI document shows no auth."""
    raise ForbiddenError(_ADMIN_OFF)


async def require_admin_key(
    state: ModelStateDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    """Admin routes need a key: 403 without any keys configured, else as ``require_api_key``."""
    if not state.api_keys:
        raise ForbiddenError(_ADMIN_OFF)
    await require_api_key(state, api_key, bearer)
