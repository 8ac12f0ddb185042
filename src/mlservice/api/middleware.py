"""ASGI middleware: request id + JSON access log + metrics timing, and the body guard.

``RequestContextMiddleware`` is the outermost layer so every answer (even a 413 from the guard)
carries ``X-Request-ID``, is timed and is logged as one JSON line. ``BodyGuardMiddleware`` checks
the API key before anything else (401 without reading the body), refuses a body that is too large
from its ``Content-Length`` before reading it (and by counting streamed bytes when there is
none), a non-integer ``Content-Length`` (400), a non-JSON content type on the JSON routes (415)
and a body that stops arriving (408); uvicorn itself has no body limit nor body timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlservice.api.auth import check_key, request_token
from mlservice.api.errors import error_response
from mlservice.api.metrics import ApiMetrics

__all__ = [
    "ACCESS_LOGGER",
    "API_LOGGER",
    "AccessLog",
    "BodyGuardMiddleware",
    "JsonFormatter",
    "RequestContextMiddleware",
    "configure_json_logging",
    "is_json_content_type",
    "replay_body",
]

API_LOGGER = "mlservice.api"
ACCESS_LOGGER = "mlservice.api.access"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNMATCHED = "<unmatched>"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _json_line(data)


class _StderrHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a request
            self.handleError(record)


def configure_json_logging(level: str = "info") -> None:
    """Send ``mlservice.api`` logs to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger(API_LOGGER)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False


def _json_line(data: dict[str, Any]) -> str:
    """One JSON log line. orjson: one access line per request, and the stdlib encoder cost more
    than the rest of the line's work (measured under load); the stdlib writes what orjson
    refuses (lone surrogates, integers past 64 bits) so that no line is lost."""
    try:
        return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(data, default=str, ensure_ascii=False)


class AccessLog:
    """The JSON access log line of each request (logger ``mlservice.api.access``, level info).

    While logging is set up as ``configure_json_logging`` leaves it (the ``mlservice.api``
    logger's one stderr handler, no filters, not propagating), the line is written straight
    to stderr in ``JsonFormatter``'s format: building a ``LogRecord`` (caller lookup, thread
    and process names) and taking the handler's lock cost three times the line itself, once
    per request. Any other setup (a handler or filter added by the application, pytest's
    ``caplog``) gets a regular log record, so the logging configuration stays in charge.
    """

    def __init__(self) -> None:
        self.log = logging.getLogger(ACCESS_LOGGER)
        self.parent = logging.getLogger(API_LOGGER)

    def _direct(self) -> bool:
        log, parent = self.log, self.parent
        if log.handlers or log.filters or not log.propagate or log.parent is not parent:
            return False
        if parent.propagate or parent.filters or len(parent.handlers) != 1:
            return False
        handler = parent.handlers[0]
        return (
            type(handler) is _StderrHandler
            and not handler.filters
            and handler.level <= logging.INFO
            and type(handler.formatter) is JsonFormatter
        )

    def write(self, fields: dict[str, Any]) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        if not self._direct():
            self.log.info("request", extra={"fields": fields})
            return
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "msg": "request",
            **fields,
        }
        try:
            sys.stderr.write(_json_line(line) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a request (as logging.Handler)
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


class RequestContextMiddleware:
    """Request id (echoed or generated), JSON access log, request count and latency.

    While ``draining()`` is true (after SIGTERM) every answer also says ``Connection: close``, so
    keep-alive clients reconnect, through the load balancer, to an instance that stays up.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ApiMetrics,
        static_prefix: str = "/static",
        draining: Callable[[], bool] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.static_prefix = static_prefix
        self.draining = draining
        self.access_log = AccessLog()

    def _route(self, scope: Scope) -> str:
        """A low-cardinality route label: the path template, never raw unmatched paths."""
        route = getattr(scope.get("route"), "path", None)
        if route:
            return str(route)
        path = str(scope.get("path", ""))
        if path.startswith(self.static_prefix + "/"):
            return self.static_prefix
        if "endpoint" in scope:  # a plain Starlette route (e.g. /openapi.json): path has no params
            return path
        return str(_state(scope).get("route_hint", _UNMATCHED))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
        _state(scope)["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                if self.draining is not None and self.draining():
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope)
            method = scope.get("method", "")
            self.metrics.observe_request(method=method, route=route, status=status, seconds=seconds)
            self.access_log.write(
                {
                    "request_id": request_id,
                    "method": method,
                    "path": scope.get("path"),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                }
            )


def is_json_content_type(value: str | None) -> bool:
    """The one rule for a JSON body: ``application/json`` or ``application/<type>+json``
    (parameters such as ``charset`` ignored). Both predict paths and every JSON route rely on
    the body guard applying it, so none of them needs a rule of its own."""
    mime = (value or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


_BOM = b"\xef\xbb\xbf"


class BodyGuardMiddleware:
    """What every request must pass before its body is read or parsed.

    In order: the API key (401, when keys are configured and the path is not public), a
    non-integer ``Content-Length`` (400), a declared size over the limit (413), the content
    type of JSON routes (415), then the body itself: over the limit while streaming (413), or
    not arrived in full within ``body_timeout_s`` (408, connection closed). A UTF-8 byte order
    mark in front of a JSON body is dropped (RFC 8259 lets a parser ignore it), so every layer
    after this one sees the same bytes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        json_paths: Collection[str],
        metrics: ApiMetrics,
        api_keys: tuple[str, ...] = (),
        public_paths: Collection[str] = (),
        public_prefixes: tuple[str, ...] = (),
        body_timeout_s: float = 15.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_paths = frozenset(json_paths)
        self.metrics = metrics
        self.api_keys = api_keys
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = public_prefixes
        self.body_timeout_s = body_timeout_s

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        kind: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.metrics.count_error(kind)
        response = error_response(
            status, detail, request_id=_state(scope).get("request_id"), headers=headers
        )
        await response(scope, receive, send)

    def _needs_key(self, path: str) -> bool:
        if not self.api_keys or path in self.public_paths:
            return False
        return not (self.public_prefixes and path.startswith(self.public_prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self._needs_key(path):
            problem = check_key(request_token(scope["headers"]), self.api_keys)
            if problem is not None:  # refused before a byte of the body is read
                await self._refuse(
                    scope, receive, send, 401, "unauthorized", problem,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        json_path = path in self.json_paths
        if json_path:
            _state(scope)["route_hint"] = path
        problem_status = self._check_headers(scope, json_path)
        if problem_status is not None:
            status, kind, detail = problem_status
            await self._refuse(scope, receive, send, status, kind, detail)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        if json_path and body.startswith(_BOM):
            body = body[len(_BOM):]
        await self.app(scope, replay_body(body, receive), send)

    def _too_large(self) -> str:
        return (
            f"request body exceeds the limit of {self.max_body_bytes} bytes (max_body_bytes); "
            "send fewer instances per request"
        )

    def _check_headers(self, scope: Scope, json_path: bool) -> tuple[int, str, str] | None:
        declared = _header(scope, b"content-length")
        if declared is not None:
            text = declared.strip()
            if not (text.isascii() and text.isdigit()):
                detail = f"Content-Length header must be a non-negative integer, got {declared!r}"
                return 400, "bad_request", detail
            if int(text) > self.max_body_bytes:
                return 413, "too_large", self._too_large()
        if json_path:
            content_type = _header(scope, b"content-type")
            if not is_json_content_type(content_type):
                mime = (content_type or "").split(";")[0].strip().lower()
                got = repr(mime) if mime else "no Content-Type"
                detail = f"Content-Type must be application/json, got {got}"
                return 415, "unsupported_media_type", detail
        return None

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or ``None`` when the client left or an error was answered."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        detail = self._too_large()
                        await self._refuse(scope, receive, send, 413, "too_large", detail)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = (
                f"the request body did not arrive within {self.body_timeout_s:g} s "
                f"(body_timeout_s); {size} bytes were received. Send the whole body at once."
            )
            await self._refuse(
                scope, receive, send, 408, "body_timeout", detail,
                headers={"Connection": "close"},
            )
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
