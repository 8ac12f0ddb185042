"""Run a model call of the forecast/rank routes in a worker thread, with the request timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request

from mlservice.api.errors import ModelFailureError, PredictionTimeoutError, request_id_of
from mlservice.errors import MlserviceError

__all__ = ["run_model_call"]

log = logging.getLogger("mlservice.api.predict")

T = TypeVar("T")


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
