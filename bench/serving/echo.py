"""The HTTP floor: a bare FastAPI app that answers a JSON body with the same JSON.

``uvicorn --factory bench.serving.echo:create_echo_app``. It parses the body (FastAPI's own JSON
handling into a ``dict``) and returns it, the least any JSON API does per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["create_echo_app"]


def create_echo_app() -> FastAPI:
    """``POST /echo`` → the request body; ``GET /health`` → ``{"status": "ok"}``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return app
