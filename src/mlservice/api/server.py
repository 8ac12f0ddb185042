"""``run_server``: uvicorn around the app factory (what ``mlservice serve`` calls)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_server"]


def run_server(
    bundle: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve ``bundle`` with uvicorn until interrupted.

    The bundle path travels in ``MLSERVICE_BUNDLE`` (absolute) so that every worker process
    builds the same app with ``create_app``; uvicorn's own access log is off because the API
    writes JSON access logs with request ids.
    """
    import uvicorn

    os.environ["MLSERVICE_BUNDLE"] = str(Path(bundle).absolute())
    os.environ.setdefault("MLSERVICE_LOG_LEVEL", log_level)
    uvicorn.run(
        "mlservice.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
