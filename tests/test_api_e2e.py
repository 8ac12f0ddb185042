"""End to end: `python -m uvicorn mlservice.api.main:app` in a subprocess on 127.0.0.1.

After every bad request the server must still be ready (docs/reliability.md). Every test
runs against a server of the penguins classifier served by scikit-learn and one served by ONNX,
whose valid predict requests the fast path answers (``served_bundle``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.conftest import PENGUIN_ROW, fast_path_answered, runtime_of

pytestmark = pytest.mark.e2e

API_KEY = "e2e-secret-key"
AUTH = {"X-API-Key": API_KEY}
GOOD: dict[str, Any] = PENGUIN_ROW
_STARTUP_TIMEOUT_S = 60.0
_POLL_S = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real uvicorn process serving a bundle; ``stop()`` terminates it."""

    def __init__(self, bundle: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "MLSERVICE_BUNDLE": str(bundle), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "mlservice.api.main:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log"],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        """Poll /health (bounded) until the server answers; fail with its log if it died."""
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_S)  # poll interval, not synchronization
        raise AssertionError(f"server not up within {_STARTUP_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture(scope="module")
def server(served_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MLSERVICE_API_KEYS": API_KEY, "MLSERVICE_MAX_BATCH_SIZE": "1000",
           "MLSERVICE_MAX_BODY_BYTES": "1000000"}
    srv = Server(served_bundle, tmp_path_factory.mktemp("e2e"), env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def _answered(http: httpx.Client) -> float:
    """The server's ``mlservice_fast_path_total{outcome="answered"}``."""
    metrics = http.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200, metrics.text
    return fast_path_answered(metrics.text)


def _assert_still_ready(http: httpx.Client) -> None:
    ready = http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["model_name"] == "penguins-test"


def test_health_ready_and_model(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    _assert_still_ready(http)
    model = http.get("/api/v1/model", headers=AUTH).json()
    assert [f["name"] for f in model["features"]] == list(GOOD)


def test_named_and_positional_predict(http: httpx.Client, served_bundle: Path) -> None:
    before = _answered(http)
    named = http.post("/api/v1/predict", json={"features": GOOD}, headers=AUTH)
    positional = http.post("/api/v1/predict", json={"features": list(GOOD.values())},
                           headers=AUTH)
    # Served by ONNX, the fast path answers both; by scikit-learn, the route does.
    assert _answered(http) - before == (2 if runtime_of(served_bundle) == "onnx" else 0)
    assert named.status_code == 200
    assert named.json()["prediction"] == "Gentoo"
    assert positional.json() == named.json()


def test_1000_row_batch(
    http: httpx.Client, penguins_frame: pd.DataFrame, served_bundle: Path
) -> None:
    sample = penguins_frame[list(GOOD)].sample(1000, replace=True, random_state=11)
    rows = sample.astype(object).where(sample.notna(), None).to_dict(orient="records")
    before = _answered(http)
    response = http.post("/api/v1/predict/batch", json={"instances": rows}, headers=AUTH)
    assert _answered(http) - before == (1 if runtime_of(served_bundle) == "onnx" else 0)
    assert response.status_code == 200
    body = response.json()
    assert body["total_instances"] == 1000 and len(body["predictions"]) == 1000
    single = http.post("/api/v1/predict", json={"features": rows[123]}, headers=AUTH).json()
    assert single["prediction"] == body["predictions"][123]["prediction"]


def _raw(payload: str) -> dict[str, Any]:
    return {"content": payload, "headers": {**AUTH, "Content-Type": "application/json"}}


_NAN_BODY = json.dumps({"features": {**GOOD, "bill_length_mm": 0.5}}).replace("0.5", "NaN")

BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("missing field", "/api/v1/predict",
     {"json": {"features": {k: v for k, v in GOOD.items() if k != "year"}}, "headers": AUTH},
     422),
    ("wrong type", "/api/v1/predict",
     {"json": {"features": {**GOOD, "body_mass_g": "heavy"}}, "headers": AUTH}, 422),
    ("unknown category", "/api/v1/predict",
     {"json": {"features": {**GOOD, "island": "Atlantis"}}, "headers": AUTH}, 422),
    ("raw NaN", "/api/v1/predict", _raw(_NAN_BODY), 422),
    ("invalid JSON", "/api/v1/predict", _raw('{"features": {'), 400),
    ("empty batch", "/api/v1/predict/batch", {"json": {"instances": []}, "headers": AUTH}, 422),
    ("batch over max", "/api/v1/predict/batch",
     {"json": {"instances": [GOOD] * 1001}, "headers": AUTH}, 413),
    ("body over limit", "/api/v1/predict/batch", _raw(" " * 1_000_001), 413),
    ("non-JSON content type", "/api/v1/predict",
     {"content": b"\x80\x04pickle",
      "headers": {**AUTH, "Content-Type": "application/python-pickle"}},
     415),
    ("no API key", "/api/v1/predict", {"json": {"features": GOOD}}, 401),
    ("wrong API key", "/api/v1/predict",
     {"json": {"features": GOOD}, "headers": {"Authorization": "Bearer nope"}}, 401),
    ("wrong API key, batch", "/api/v1/predict/batch",
     {"json": {"instances": [GOOD]}, "headers": {"X-API-Key": "nope"}}, 401),
    ("trailing slash", "/api/v1/predict/", {"json": {"features": GOOD}, "headers": AUTH}, 404),
    ("batch trailing slash", "/api/v1/predict/batch/",
     {"json": {"instances": [GOOD]}, "headers": AUTH}, 404),
]


@pytest.mark.parametrize(("case", "path", "kwargs", "status"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_then_still_ready(
    http: httpx.Client, case: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    before = _answered(http)
    response = http.post(path, **kwargs)
    assert response.status_code == status, f"{case}: {response.text}"
    assert "location" not in response.headers  # never a redirect
    assert _answered(http) == before  # nothing here is the fast path's to answer
    body = response.json()
    assert body["detail"] and "Traceback" not in response.text
    assert response.headers["x-request-id"] == body["request_id"]
    _assert_still_ready(http)


def test_bad_content_length_is_400(server: Server, http: httpx.Client) -> None:
    # httpx always computes Content-Length itself, so this request goes over a raw socket.
    request = (
        b"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: abc\r\nConnection: close\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    _assert_still_ready(http)


def test_api_key_is_checked_before_the_body_is_read(server: Server, http: httpx.Client) -> None:
    # Headers announce a 500 kB body, 100 bytes of it are sent, no key: the answer must come
    # at once (refused from the headers), not after the body timeout (408).
    head = (
        b"POST /api/v1/predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + b'{"instances": [' + b" " * 85)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 401"), status_line
    _assert_still_ready(http)


def test_logs_are_json_with_request_id(server: Server, http: httpx.Client) -> None:
    http.get("/health", headers={"X-Request-ID": "e2e-log-check"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log().splitlines()
                 if line.startswith("{") and "e2e-log-check" in line]
        if lines:
            break
        time.sleep(_POLL_S)
    assert lines, server.log()
    assert lines[-1]["request_id"] == "e2e-log-check" and lines[-1]["status"] == 200
    assert lines[-1]["route"] == "/health"


def test_metrics_endpoint(http: httpx.Client, served_bundle: Path) -> None:
    refused = http.get("/metrics")  # keys are configured: the metrics need one too
    assert http.post("/api/v1/predict", json={"features": GOOD}, headers=AUTH).status_code == 200
    text = http.get("/metrics", headers=AUTH).text
    assert refused.status_code == 401
    assert 'mlservice_errors_total{kind="unauthorized"}' in text
    assert "mlservice_http_request_duration_seconds_bucket" in text
    assert (fast_path_answered(text) > 0) is (runtime_of(served_bundle) == "onnx")
