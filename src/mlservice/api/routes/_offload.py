"""Plumbing shared by the routes and the fast path that call a model.

``call_model`` runs a model call on the event loop or in a worker thread under the request
timeout (504), turning a failure into the generic 500 (``model_failure``); ``run_model_call``
is its worker-thread form for the forecast/rank routes; ``per_predictor`` builds a task
wrapper (``Forecaster``, ``Ranker``) once per served predictor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request

from mlservice.api.errors import ApiError, ModelFailureError, PredictionTimeoutError, request_id_of
from mlservice.errors import MlserviceError, SchemaError

if TYPE_CHECKING:
    from mlservice.inference.predictor import Predictor

__all__ = ["call_model", "model_failure", "per_predictor", "run_model_call"]

log = logging.getLogger("mlservice.api.predict")

T = TypeVar("T")
W = TypeVar("W")


def per_predictor(
    build: Callable[[Predictor], W], wrong_task: type[ApiError]
) -> Callable[[Predictor], W]:
    """``build(predictor)``, cached for the served predictor (rebuilt when a reload swaps it).

    A ``SchemaError`` from ``build`` (the model is of another task) becomes ``wrong_task``.
    """
    cache: dict[int, tuple[Predictor, W]] = {}

    def of(predictor: Predictor) -> W:
        hit = cache.get(id(predictor))
        if hit is not None and hit[0] is predictor:
            return hit[1]
        try:
            built = build(predictor)
        except SchemaError as exc:
            raise wrong_task(str(exc)) from exc
        cache.clear()
        cache[id(predictor)] = (predictor, built)
        return built

    return of


def model_failure(request_id: str | None, exc: BaseException) -> ModelFailureError:
    """The generic 500 for a model that raised; the exception is logged under the request id."""
    log.exception("model failed", extra={"fields": {"request_id": request_id}}, exc_info=exc)
    return ModelFailureError(
        f"the model failed on this input; the error is logged under request id {request_id}"
    )


async def call_model(
    call: Callable[[], T],
    *,
    inline: bool,
    timeout_s: float,
    request_id: str | None,
    advice: str = "send fewer instances per request",
) -> T:
    """``call()`` on the event loop (``inline``) or in a worker thread under ``timeout_s``.

    Input errors (``MlserviceError``) pass through; a timeout becomes a 504 (with ``advice``)
    and any other failure a generic 500 (details in the log under the request id).
    """
    try:
        if inline:
            return call()
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, call), timeout=timeout_s)
        except TimeoutError as exc:
            raise PredictionTimeoutError(
                f"prediction took longer than {timeout_s:g} s (request timeout); {advice}"
            ) from exc
    except (MlserviceError, ApiError):
        raise
    except Exception as exc:
        raise model_failure(request_id, exc) from exc


async def run_model_call(call: Callable[[], T], *, timeout_s: float, request: Request) -> T:
    """``call()`` in a worker thread (``call_model``) for the forecast and rank routes."""
    return await call_model(
        call,
        inline=False,
        timeout_s=timeout_s,
        request_id=request_id_of(request),
        advice="send less per request",
    )
