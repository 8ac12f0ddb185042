"""Plumbing shared by the forecast/rank routes.

``run_model_call`` runs a model call in a worker thread, with the request timeout;
``per_predictor`` builds a task wrapper (``Forecaster``, ``Ranker``) once per served predictor.
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

__all__ = ["per_predictor", "run_model_call"]

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


async def run_model_call(call: Callable[[], T], *, timeout_s: float, request: Request) -> T:
    """``call()`` off the event loop; input errors pass through, model failures become a 500."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(None, call), timeout=timeout_s)
    except TimeoutError as exc:
        raise PredictionTimeoutError(
            f"the model took longer than {timeout_s:g} s (request timeout); send less per request"
        ) from exc
    except MlserviceError:
        raise
    except Exception as exc:
        request_id = request_id_of(request)
        log.exception("model failed", extra={"fields": {"request_id": request_id}})
        raise ModelFailureError(
            f"the model failed on this input; the error is logged under request id {request_id}"
        ) from exc
