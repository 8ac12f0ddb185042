"""Drive an ASGI app in-process (no sockets): lifespan and timed requests.

Used by the benchmark to say where a request's time goes without the HTTP server and the load
generator in the measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

__all__ = ["AsgiDriver", "Call"]

Message = dict[str, Any]
App = Callable[..., Coroutine[Any, Any, None]]


@dataclass
class Call:
    """One finished request."""

    status: int
    body: bytes


class AsgiDriver:
    """Runs an app's lifespan, then requests against it on the current event loop."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._lifespan: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Message] = asyncio.Queue()

    async def start(self) -> None:
        started = asyncio.Event()
        failed: list[Message] = []

        async def receive() -> Message:
            return await self._queue.get()

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failed.append(message)
            if message["type"].startswith("lifespan.startup."):
                started.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.create_task(self.app(scope, receive, send))
        await self._queue.put({"type": "lifespan.startup"})
        await started.wait()
        if failed:
            raise RuntimeError(f"app startup failed: {failed[0].get('message')}")

    async def stop(self) -> None:
        if self._lifespan is not None:
            await self._queue.put({"type": "lifespan.shutdown"})
            await self._lifespan

    async def request(self, method: str, path: str, body: bytes = b"") -> Call:
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return Call(status, b"".join(chunks))

    async def time_requests(self, path: str, body: bytes, count: int) -> float:
        """Mean seconds per request over ``count`` sequential requests (after a warm-up)."""
        for _ in range(min(50, count)):
            await self.request("POST", path, body)
        started = time.perf_counter()
        for _ in range(count):
            call = await self.request("POST", path, body)
            if call.status != 200:
                raise RuntimeError(f"{path} answered {call.status}: {call.body[:300]!r}")
        return (time.perf_counter() - started) / count

    async def time_concurrent(self, path: str, body: bytes, count: int, at_once: int) -> float:
        """Mean seconds per request, ``at_once`` requests in flight together (as from wrk's
        connections: what the micro-batcher joins)."""

        async def one() -> None:
            call = await self.request("POST", path, body)
            if call.status != 200:
                raise RuntimeError(f"{path} answered {call.status}: {call.body[:300]!r}")

        await asyncio.gather(*(one() for _ in range(at_once)))  # warm-up
        waves = max(1, count // at_once)
        started = time.perf_counter()
        for _ in range(waves):
            await asyncio.gather(*(one() for _ in range(at_once)))
        return (time.perf_counter() - started) / (waves * at_once)
