"""``POST /admin/reload``: load the bundle again from disk and swap it in without a restart.

Needs one of the API keys; with no keys configured the admin routes answer 403 (an open admin
API would let anyone swap the model). The reload runs in a worker thread; requests keep being
served by the current model meanwhile and no request fails because of the swap. A bundle that is
missing, tampered, unloadable or incompatible with the API's request schema leaves the current
model serving: the answer is 409 with the reason, also shown by ``/health/ready``.

With ``--workers N`` each worker process holds its own model and this request reaches one of
them; use the bundle watcher (``MLSERVICE_WATCH_INTERVAL``) there, or restart.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mlservice.api.deps import refuse_admin, require_admin_key
from mlservice.api.errors import ERROR_RESPONSES, error_response, request_id_of
from mlservice.api.lifecycle import ModelReloader
from mlservice.api.schemas import ErrorResponse

__all__ = ["ReloadResponse", "build_admin_router"]


class ReloadResponse(BaseModel):
    """The model serving after a successful reload, and the bundle it replaced."""

    status: Literal["reloaded"] = "reloaded"
    model_name: str
    model_version: str
    bundle: str = Field(description="Directory name of the bundle now serving")
    previous_bundle: str | None = Field(description="The bundle served before (null: none)")
    seconds: float = Field(description="Time taken to load and verify the bundle")


def get_reloader(request: Request) -> ModelReloader:
    reloader: ModelReloader = request.app.state.reloader
    return reloader


ReloaderDep = Annotated[ModelReloader, Depends(get_reloader)]


def build_admin_router(*, keys_configured: bool) -> APIRouter:
    """The admin routes: key-protected, or (no keys configured) always 403."""
    guard = require_admin_key if keys_configured else refuse_admin
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(guard)])

    @router.post(
        "/reload",
        operation_id="reload_model",
        summary="Reload the model from the bundle path",
        response_model=ReloadResponse,
        responses={
            401: ERROR_RESPONSES[401],
            403: {"model": ErrorResponse, "description": "No API keys configured: admin is off"},
            409: {"model": ErrorResponse, "description": "Reload refused; the old model serves"},
        },
    )
    async def reload_model(
        request: Request, reloader: ReloaderDep
    ) -> ReloadResponse | JSONResponse:
        """Load and verify the bundle at the served path (e.g. `model_latest`) and swap it in."""
        result = await run_in_threadpool(reloader.reload, trigger="admin")
        if not result.ok or result.predictor is None:
            serving = result.predictor
            still = (
                f"still serving {serving.name!r} {serving.version} ({serving.bundle.path.name})"
                if serving is not None
                else "no model is serving"
            )
            return error_response(
                409, f"reload failed: {result.error}; {still}", request_id=request_id_of(request)
            )
        new, old = result.predictor, result.previous
        return ReloadResponse(
            model_name=new.name,
            model_version=new.version,
            bundle=new.bundle.path.name,
            previous_bundle=old.bundle.path.name if old is not None else None,
            seconds=round(result.seconds, 3),
        )

    return router
