"""API keys: the one place that reads a request's key and compares it with the configured keys.

The key is read as FastAPI's security schemes read it (the ``X-API-Key`` header when it is not
empty, else ``Authorization: Bearer <key>``), from the raw ASGI headers, so that the body guard
can refuse a request before its body is read (``BodyGuardMiddleware``), and the OpenAPI
security schemes of the routes (``mlservice.api.deps``) describe the same rule.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

__all__ = ["MISSING_KEY", "WRONG_KEY", "check_key", "key_matches", "request_token"]

MISSING_KEY = (
    "missing API key: send it in the X-API-Key header or as 'Authorization: Bearer <key>'"
)
WRONG_KEY = "invalid API key"


def request_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key a request carries, or ``None``.

    The first ``X-API-Key`` header when it is not empty, else the credentials of the first
    ``Authorization`` header when its scheme is Bearer (case-insensitive).
    """
    api_key = authorization = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"x-api-key" and api_key is None:
            api_key = value
        elif lowered == b"authorization" and authorization is None:
            authorization = value
    if api_key:
        return api_key.decode("latin-1")
    if authorization:
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials
    return None


def key_matches(token: str, keys: tuple[str, ...]) -> bool:
    """Whether ``token`` is one of ``keys``, compared in constant time."""
    given = token.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:  # no early exit: the time taken does not tell which key is close
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def check_key(token: str | None, keys: tuple[str, ...]) -> str | None:
    """``None`` when ``token`` is accepted (or no keys are configured), else why not."""
    if not keys:
        return None
    if not token:
        return MISSING_KEY
    return None if key_matches(token, keys) else WRONG_KEY
