"""Start a server process on 127.0.0.1, time its cold start to ready, measure RSS, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["RunningServer", "ServerSpec", "free_port", "start_server"]

_POLL_S = 0.02


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerSpec:
    """How to start one server: its command (``{port}`` is filled in) and readiness path."""

    name: str
    command: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    #: Variables removed from the inherited environment ("default settings" means unset).
    unset: tuple[str, ...] = ("OMP_NUM_THREADS", "MLSERVICE_RUNTIME")
    startup_timeout_s: float = 120.0


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    cold_start_s: float
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """Resident memory of the server's whole process tree (the launcher included)."""
        return sum(_rss_kb(pid) for pid in _tree(self.process.pid)) / 1024

    def stop(self) -> None:
        pids = _tree(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in pids[1:]:  # children the launcher left behind (mlflow → uvicorn)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_server(spec: ServerSpec, *, log_dir: Path) -> RunningServer:
    """Start ``spec`` and return once its readiness path answers 200 (cold start timed)."""
    port = free_port()
    command = [part.format(port=port) for part in spec.command]
    log_path = log_dir / f"{spec.name.replace(' ', '_')}-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in spec.unset}
    env.update(spec.env)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}{spec.ready_path}"
    deadline = started + spec.startup_timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{spec.name} exited early:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                cold = time.perf_counter() - started
                return RunningServer(spec, process, port, cold, log_path)
        except httpx.TransportError:
            pass
        time.sleep(_POLL_S)  # poll interval of the readiness probe
    process.kill()
    raise RuntimeError(f"{spec.name} not ready within {spec.startup_timeout_s} s")
