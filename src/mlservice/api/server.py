"""``run_server``: uvicorn around the app factory (what ``mlservice serve`` calls).

Stopping (SIGTERM): ``/health/ready`` answers 503 at once and the server keeps serving for
``shutdown_delay_s`` (so a load balancer stops sending); then uvicorn stops accepting and lets the
requests in flight finish, for ``timeout_graceful_shutdown`` seconds at most, before it cancels
them and exits. Give the orchestrator a kill timeout above the sum of the two.

Overload: past ``limit_concurrency`` open connections or running requests uvicorn answers 503 at
once instead of queueing (set it near what the model sustains, e.g. from ``make soak``).
"""

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
    limit_concurrency: int | None = None,
    timeout_graceful_shutdown: int = 30,
    shutdown_delay_s: float | None = None,
    watch_interval_s: float | None = None,
) -> None:
    """Serve ``bundle`` with uvicorn until interrupted.

    The bundle path travels in ``MLSERVICE_BUNDLE`` (absolute, symlinks kept so that a changed
    ``model_latest`` is followed) so that every worker process builds the same app with
    ``create_app``; so do ``shutdown_delay_s`` (``MLSERVICE_SHUTDOWN_DELAY``) and
    ``watch_interval_s`` (``MLSERVICE_WATCH_INTERVAL``) when given. uvicorn's own access log is
    off because the API writes JSON access logs with request ids.
    """
    import uvicorn

    if limit_concurrency is not None and limit_concurrency < 1:
        raise ValueError(f"limit_concurrency must be at least 1, got {limit_concurrency!r}")
    if timeout_graceful_shutdown < 0:
        raise ValueError(
            "timeout_graceful_shutdown must be 0 or more seconds, "
            f"got {timeout_graceful_shutdown!r}"
        )
    os.environ["MLSERVICE_BUNDLE"] = str(Path(bundle).absolute())
    os.environ.setdefault("MLSERVICE_LOG_LEVEL", log_level)
    if shutdown_delay_s is not None:
        os.environ["MLSERVICE_SHUTDOWN_DELAY"] = str(shutdown_delay_s)
    if watch_interval_s is not None:
        os.environ["MLSERVICE_WATCH_INTERVAL"] = str(watch_interval_s)
    uvicorn.run(
        "mlservice.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        limit_concurrency=limit_concurrency,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
