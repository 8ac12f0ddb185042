"""HTTP errors of the API and the one place that maps exceptions to responses.

==================================  ======  ==========================
exception                           status  ``mlservice_errors_total``
==================================  ======  ==========================
malformed JSON body                 400     ``bad_request``
``RequestValidationError``          422     ``validation``
``SchemaError`` (predictor)         422     ``validation``
a list over its limit (batch rows)  413     ``too_large``
``BundleError`` (pipeline load)     503     ``model_unavailable``
``UnauthorizedError``               401     ``unauthorized``
``BatchTooLargeError``              413     ``too_large``
``ModelUnavailableError``           503     ``model_unavailable``
``PredictionTimeoutError``          504     ``timeout``
``ModelFailureError``               500     ``model_error`` (generic body)
==================================  ======  ==========================

Body size (413), bad ``Content-Length`` (400) and content type (415) are refused earlier, by
``mlservice.api.middleware``, with the same body shape: ``{"detail": ..., "request_id": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlservice.api.metrics import ApiMetrics
from mlservice.api.schemas import TOO_MANY_ITEMS, ErrorResponse
from mlservice.errors import BundleError, SchemaError

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "BatchTooLargeError",
    "ModelFailureError",
    "ModelUnavailableError",
    "PredictionTimeoutError",
    "UnauthorizedError",
    "error_response",
    "format_validation_errors",
    "install_error_handlers",
    "request_id_of",
]

log = logging.getLogger("mlservice.api")

_FEATURE_HINT = "See GET /api/v1/model for the feature schema."
_MAX_SHOWN = 5
#: Items of the ``errors`` list of one answer (a batch of bad rows could list millions).
MAX_ERROR_ITEMS = 50
_MAX_INPUT_ITEMS = 20
_MAX_INPUT_REPR = 80
_TAGS = frozenset({"named", "positional"})


class ApiError(Exception):
    """An error with its HTTP status and metric kind."""

    status_code = 500
    kind = "internal"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class UnauthorizedError(ApiError):
    status_code = 401
    kind = "unauthorized"


class BatchTooLargeError(ApiError):
    status_code = 413
    kind = "too_large"


class ModelUnavailableError(ApiError):
    status_code = 503
    kind = "model_unavailable"


class PredictionTimeoutError(ApiError):
    status_code = 504
    kind = "timeout"


class ModelFailureError(ApiError):
    status_code = 500
    kind = "model_error"


def _error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


#: ``responses=`` for routes that take a JSON body: every status they can answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_doc("Malformed JSON or Content-Length"),
    401: _error_doc("Missing or wrong API key (only when keys are configured)"),
    413: _error_doc("Body or batch too large"),
    415: _error_doc("Content-Type is not application/json"),
    422: _error_doc("Input does not match the feature schema; names the field"),
    500: _error_doc("The model failed; generic message, details in the server log"),
    503: _error_doc("No model loaded"),
    504: _error_doc("Prediction took longer than the request timeout"),
}


def request_id_of(request: Request) -> str | None:
    """The request id set by the request-context middleware."""
    return getattr(request.state, "request_id", None)


def error_response(
    status: int,
    detail: str,
    *,
    request_id: str | None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body every handler and middleware answers with."""
    body: dict[str, Any] = {"detail": detail, "request_id": request_id}
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _clean_loc(loc: Sequence[Any]) -> list[str | int]:
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out: list[str | int] = []
    for i, part in enumerate(parts):
        # The discriminator tag of the named/positional union is noise for the client.
        after_row = i > 0 and (parts[i - 1] == "features" or isinstance(parts[i - 1], int))
        if after_row and part in _TAGS:
            continue
        out.append(part if isinstance(part, int) else str(part))
    return out


def _short(value: Any) -> str:
    if isinstance(value, list | tuple | dict) and len(value) > _MAX_INPUT_ITEMS:
        # repr of a 200,000-row list would be built only to be cut
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[: _MAX_INPUT_REPR - 1] + "…"


def format_validation_errors(
    errors: Sequence[Mapping[str, Any]],
) -> tuple[str, list[dict[str, Any]]]:
    """A one-line ``detail`` naming each bad field, and the cleaned error list."""
    items, lines = [], []
    for err in errors[:MAX_ERROR_ITEMS]:
        loc = _clean_loc(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        kind = str(err.get("type", "value_error"))
        items.append({"loc": loc, "msg": msg, "type": kind})
        where = ".".join(str(p) for p in loc) or "body"
        got = "" if kind == "missing" or "input" not in err else f" (got {_short(err['input'])})"
        lines.append(f"{where}: {msg}{got}")
    detail = "; ".join(lines[:_MAX_SHOWN])
    if len(errors) > _MAX_SHOWN:
        detail += f"; and {len(errors) - _MAX_SHOWN} more"
    if len(errors) > len(items):
        detail += f" (the first {len(items)} of {len(errors)} problems are listed in 'errors')"
    return f"{detail}. {_FEATURE_HINT}", items


def install_error_handlers(app: FastAPI, metrics: ApiMetrics) -> None:
    """Register the handlers that turn exceptions into JSON error bodies."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        metrics.count_error(exc.kind)
        return error_response(
            exc.status_code, exc.detail, request_id=request_id_of(request), headers=exc.headers
        )

    async def on_schema_error(request: Request, exc: Exception) -> JSONResponse:
        metrics.count_error("validation")
        return error_response(422, str(exc), request_id=request_id_of(request))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        raw = list(exc.errors())
        broken = [e for e in raw if e.get("type") == "json_invalid"]
        if broken:
            metrics.count_error("bad_request")
            reason = (broken[0].get("ctx") or {}).get("error", "cannot be parsed")
            return error_response(
                400,
                f"request body is not valid JSON: {reason}. Send a JSON object.",
                request_id=request_id_of(request),
            )
        too_many = [e for e in raw if e.get("type") == TOO_MANY_ITEMS]
        if too_many:
            metrics.count_error("too_large")
            where = ".".join(str(p) for p in _clean_loc(too_many[0].get("loc", ()))) or "body"
            return error_response(
                413, f"{where}: {too_many[0].get('msg')}", request_id=request_id_of(request)
            )
        metrics.count_error("validation")
        state = getattr(request.app.state, "model", None)
        if state is not None and getattr(state, "window", None) is not None:
            from mlservice.api.monitoring import record_rejected

            record_rejected(state, raw)  # a data-quality signal, by feature
        detail, items = format_validation_errors(raw)
        return error_response(422, detail, request_id=request_id_of(request), errors=items)

    async def on_bundle_error(request: Request, exc: Exception) -> JSONResponse:
        # The pipeline was needed and could not be loaded (changed on disk, a library missing):
        # 503 like any unavailable model; the reason, with server paths, goes to the log only.
        metrics.count_error("model_unavailable")
        log.error(
            "the model cannot be loaded for this request",
            extra={"fields": {"reason": str(exc), "request_id": request_id_of(request)}},
        )
        return error_response(
            503,
            "the model cannot be loaded (the server log has the reason); "
            "GET /health/ready reports readiness",
            request_id=request_id_of(request),
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        metrics.count_error(
            {404: "not_found", 405: "method_not_allowed"}.get(
                exc.status_code, f"http_{exc.status_code}"
            )
        )
        return error_response(
            exc.status_code,
            str(exc.detail),
            request_id=request_id_of(request),
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(SchemaError, on_schema_error)
    app.add_exception_handler(BundleError, on_bundle_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
