"""Serving faults against real uvicorn processes (docs/reliability.md, checklist items 9-14 and 19).

Every server here is ``run_server`` (what ``mlservice serve`` calls) in a subprocess on 127.0.0.1.
Bundles are real: copies of the session's trained penguins bundle, a version 2.0.0 of it written
with ``save_bundle``, a tampered copy, the diabetes regressor as an incompatible bundle, and a
genuinely slow one (brute-force k-nearest neighbours over 300,000 stored points behind the same
preprocessing: a 8,000-row batch takes seconds of real CPU; no sleep is injected and nothing is
mocked). Load comes from threads with httpx, bounded in count and in time.

The hot-reload and bad-bundle tests run on the penguins classifier served by scikit-learn and on
one served by ONNX (``served_bundle``), whose predictions the fast path answers; the slow model
is a scikit-learn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins

from mlservice.api import ApiSettings, create_app
from mlservice.api.deps import ModelState
from mlservice.api.lifecycle import ModelReloader, serving_lifecycle
from mlservice.api.metrics import ApiMetrics
from mlservice.bundle import LATEST_LINK, load_bundle, save_bundle
from mlservice.inference.onnx_runtime import ONNX_FILE
from tests.conftest import runtime_of
from tests.test_api_e2e import GOOD, free_port

pytestmark = pytest.mark.e2e

API_KEY = "reliability-key"
AUTH = {"X-API-Key": API_KEY}
_STARTUP_S = 60.0
_POLL_S = 0.05
_LOAD_LIMIT_S = 60.0  # no load loop runs longer than this, whatever happens


# ------------------------------------------------------------------------------ bundles
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _resave(src: Path, out: Path, *, version: str, pipeline: Any = None) -> Path:
    """A real bundle (hashed, atomically saved) with ``src``'s schema and a new version.

    With ``src``'s own pipeline its verified ONNX graph comes along (served as ``src`` is);
    with another ``pipeline`` the graph would be of the wrong model, so there is none.
    """
    bundle = load_bundle(src)
    drop = {"files", "bundle_id", "created_at", "schema_version", "plots"}
    meta = {k: v for k, v in bundle.metadata.items() if k not in drop}
    meta["version"] = version
    extras = None
    if pipeline is not None:
        meta.pop("onnx", None)
        meta["serving"] = {**meta.get("serving", {}), "runtime": "auto"}
    elif (src / ONNX_FILE).is_file():
        def extras(tmp: Path, _meta: dict[str, Any]) -> None:
            shutil.copyfile(src / ONNX_FILE, tmp / ONNX_FILE)
    return save_bundle(output_dir=out, pipeline=pipeline or bundle.pipeline, metadata=meta,
                       write_extras=extras)


def _tamper(bundle: Path) -> Path:
    model = bundle / "model.skops"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return bundle


def _point_latest(models: Path, target: str) -> None:
    """``model_latest`` → ``target`` (which may not exist) with an atomic swap."""
    tmp = models / f".{LATEST_LINK}.test"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, models / LATEST_LINK)


@dataclass
class Models:
    dir: Path
    v1: Path
    v2: Path
    tampered: Path
    regression: Path
    runtime: str  # what serves v1 and v2: ``onnx`` (the fast path answers) or ``sklearn``


@pytest.fixture(scope="module")
def models(
    served_bundle: Path, regression_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Models:
    root = tmp_path_factory.mktemp("reliability-models")
    v1 = _copy(served_bundle, root / served_bundle.name)
    v2 = _resave(served_bundle, root, version="2.0.0")
    tampered = _tamper(_copy(v2, root / "model_v2.0.0_tampered"))
    regression = _copy(regression_bundle, root / "model_v1.0.0_diabetes")
    runtime = runtime_of(v1)
    assert runtime_of(v2) == runtime
    return Models(root, v1, v2, tampered, regression, runtime)


@pytest.fixture(scope="module")
def slow_bundle(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The penguins preprocessing + brute-force KNN over 300,000 points: really slow per row."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    fitted = load_bundle(trained_bundle).pipeline
    preprocess = fitted[:-1]
    width = preprocess.transform(load_penguins()[list(GOOD)].head(2)).shape[1]
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300_000, width))
    knn = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(
        points, rng.integers(0, 3, size=len(points))
    )
    pipeline = Pipeline([*preprocess.steps, ("model", knn)])
    out = tmp_path_factory.mktemp("slow-model")
    return _resave(trained_bundle, out, version="1.0.0-slow", pipeline=pipeline)


def _rows(n: int) -> list[dict[str, Any]]:
    frame = load_penguins()[list(GOOD)].sample(n, replace=True, random_state=3)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{str(k): v for k, v in row.items()} for row in records]


# ------------------------------------------------------------------------------- server
class Server:
    """``run_server(bundle, **options)`` in a subprocess on a free port."""

    def __init__(
        self, bundle: Path, log_dir: Path, *, env: dict[str, str] | None = None, **options: Any
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        script = (
            "import json, sys; from pathlib import Path; "
            "from mlservice.api.server import run_server; "
            "run_server(Path(sys.argv[1]), port=int(sys.argv[2]), **json.loads(sys.argv[3]))"
        )
        options.setdefault("log_level", "warning")
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, str(bundle), str(self.port), json.dumps(options)],
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_up(self) -> None:
        """Bounded poll of the liveness endpoint; fails with the log when the process died."""
        deadline = time.monotonic() + _STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(_POLL_S)  # poll interval, not synchronization
        raise AssertionError(f"server not up within {_STARTUP_S} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # SIGINT: no shutdown delay
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def serving(bundle: Path, log_dir: Path, **kwargs: Any) -> Iterator[Server]:
    server = Server(bundle, log_dir, **kwargs)
    try:
        server.wait_up()
        yield server
    finally:
        server.stop()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``check`` until it holds (bounded); the assertion says what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(_POLL_S)  # poll interval, not synchronization
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


# --------------------------------------------------------------------------------- load
@dataclass
class Load:
    """Threads posting single predictions until stopped; every outcome is kept, in order."""

    url: str
    threads: int = 3
    headers: dict[str, str] = field(default_factory=dict)
    outcomes: list[list[tuple[int, str]]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            mine: list[tuple[int, str]] = []
            self.outcomes.append(mine)
            worker = threading.Thread(target=self._run, args=(mine,), daemon=True)
            worker.start()
            self._workers.append(worker)
        wait_for(lambda: all(len(o) >= 3 for o in self.outcomes), "load warm-up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self, out: list[tuple[int, str]]) -> None:
        deadline = time.monotonic() + _LOAD_LIMIT_S
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30.0) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post("/api/v1/predict", json={"features": GOOD})
                except httpx.HTTPError as exc:
                    out.append((0, f"{type(exc).__name__}: {exc}"))
                    continue
                body = response.json() if response.status_code == 200 else {}
                out.append((response.status_code, body.get("model_version", response.text)))

    def count(self) -> int:
        return sum(len(o) for o in self.outcomes)

    def failures(self) -> list[tuple[int, str]]:
        return [o for outcomes in self.outcomes for o in outcomes if o[0] != 200]

    def versions(self) -> list[list[str]]:
        """Each thread's served versions, consecutive repeats collapsed."""
        runs = []
        for outcomes in self.outcomes:
            seq: list[str] = []
            for _status, version in outcomes:
                if not seq or seq[-1] != version:
                    seq.append(version)
            runs.append(seq)
        return runs

    def wait_more(self, n: int = 10) -> None:
        target = self.count() + n
        wait_for(lambda: self.count() >= target, f"{n} more requests")


def _is_subsequence(seq: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(item in it for item in seq)


def _ready(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/health/ready", timeout=5.0)


def _fast_path(server: Server, **kwargs: Any) -> tuple[float, float]:
    """The server's ``mlservice_fast_path_total``: (answered, deferred)."""
    text = httpx.get(f"{server.url}/metrics", timeout=5.0, **kwargs).text
    counts = {"answered": 0.0, "deferred": 0.0}
    for outcome in counts:
        prefix = f'mlservice_fast_path_total{{outcome="{outcome}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                counts[outcome] = float(line[len(prefix):])
    return counts["answered"], counts["deferred"]


def _predict(server: Server, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/predict", json={"features": GOOD}, timeout=30.0,
                      **kwargs)


# ------------------------------------------------------------------ hot reload (item 11)
def test_admin_reload_swaps_under_load_and_refuses_bad_bundles(
    models: Models, tmp_path: Path
) -> None:
    _point_latest(models.dir, models.v1.name)
    reload_url = "/admin/reload"
    with serving(models.dir / LATEST_LINK, tmp_path, env={"MLSERVICE_API_KEYS": API_KEY}) as srv, \
            httpx.Client(base_url=srv.url, headers=AUTH, timeout=60.0) as admin:
        with Load(srv.url, headers=AUTH) as load:
            assert _ready(srv).json()["model_version"] == "1.0.0"

            _point_latest(models.dir, models.v2.name)
            good = admin.post(reload_url)
            load.wait_more()
            refused = {}
            for case, target in [("tampered", models.tampered.name),
                                 ("incompatible", models.regression.name),
                                 ("missing", "model_v9.9.9_gone")]:
                _point_latest(models.dir, target)
                refused[case] = admin.post(reload_url)
                refused[case + "_ready"] = _ready(srv)
                load.wait_more()
            _point_latest(models.dir, models.v1.name)
            back = admin.post(reload_url)
            load.wait_more()
            ready_after = _ready(srv)
        # the load has stopped: every request it sent is counted
        metrics = admin.get("/metrics").text
        answered, deferred = _fast_path(srv, headers=AUTH)

    assert good.status_code == 200, good.text
    assert good.json()["model_version"] == "2.0.0"
    assert (good.json()["bundle"], good.json()["previous_bundle"]) == (models.v2.name,
                                                                        models.v1.name)
    for case, needle in [("tampered", "does not match its recorded sha256"),
                         ("incompatible", "is a regression model, this server serves a "
                                          "classification API; restart"),
                         ("missing", "not found")]:
        answer = refused[case]
        assert answer.status_code == 409, (case, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith("reload failed: ") and needle in detail, detail
        assert detail.endswith(f"still serving 'penguins-test' 2.0.0 ({models.v2.name})")
        assert str(models.dir) not in answer.text
        ready = refused[case + "_ready"]
        assert ready.status_code == 200, ready.text
        assert ready.json()["model_version"] == "2.0.0" and needle in ready.json()["reload_error"]
    assert back.status_code == 200 and back.json()["model_version"] == "1.0.0"
    assert ready_after.json() == {"status": "ready", "model_name": "penguins-test",
                                  "model_version": "1.0.0"}
    assert load.failures() == []
    assert load.count() >= 60
    # Served by ONNX before, between and after the swaps, the fast path answered every one.
    expected = (load.count(), 0) if models.runtime == "onnx" else (0, load.count())
    assert (answered, deferred) == expected
    for seq in load.versions():  # each client saw one atomic swap at a time, never a flip-flop
        assert _is_subsequence(seq, ["1.0.0", "2.0.0", "1.0.0"]), seq
    assert any("2.0.0" in seq for seq in load.versions())
    assert 'mlservice_model_reloads_total{result="failed",trigger="admin"} 3.0' in metrics \
        or 'mlservice_model_reloads_total{trigger="admin",result="failed"} 3.0' in metrics
    assert 'mlservice_model_reloads_total{trigger="admin",result="ok"} 2.0' in metrics \
        or 'mlservice_model_reloads_total{result="ok",trigger="admin"} 2.0' in metrics
    logged = [r for r in srv.log_records() if r.get("msg", "").startswith("model reload failed")]
    assert len(logged) == 3 and logged[0]["serving"] == models.v2.name


def test_watcher_follows_model_latest_from_missing_to_good(
    models: Models, tmp_path: Path
) -> None:
    _point_latest(models.dir, "model_v0.0.0_not_trained_yet")
    with serving(models.dir / LATEST_LINK, tmp_path, watch_interval_s=0.2) as srv:
        live, ready, predict = httpx.get(f"{srv.url}/health"), _ready(srv), _predict(srv)
        admin = httpx.post(f"{srv.url}/admin/reload")  # no keys configured: admin is off

        _point_latest(models.dir, models.v1.name)
        wait_for(lambda: _ready(srv).status_code == 200, "ready after model_latest appeared")
        with Load(srv.url) as load:
            _point_latest(models.dir, models.tampered.name)
            wait_for(lambda: "reload_error" in _ready(srv).json(), "failed reload reported")
            load.wait_more()
            refused_ready = _ready(srv).json()
            _point_latest(models.dir, models.v2.name)
            wait_for(lambda: _ready(srv).json().get("model_version") == "2.0.0", "swap to v2")
            load.wait_more()
        final = _ready(srv).json()
        answered, deferred = _fast_path(srv)

    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 503
    assert ready.json()["detail"] == "not ready: bundle 'model_latest' not found; train one " \
        "with `mlservice train CONFIG` or pass an existing bundle directory"
    assert predict.status_code == 503
    assert predict.json()["detail"].startswith("no model is loaded: bundle 'model_latest' not")
    assert admin.status_code == 403 and "no API keys are configured" in admin.json()["detail"]
    assert refused_ready["model_version"] == "1.0.0"
    assert "does not match its recorded sha256" in refused_ready["reload_error"]
    assert final == {"status": "ready", "model_name": "penguins-test", "model_version": "2.0.0"}
    assert load.failures() == [] and load.count() >= 30
    for seq in load.versions():
        assert _is_subsequence(seq, ["1.0.0", "2.0.0"]), seq
    # the one predict request before a model was there went to the route (503)
    expected = (load.count(), 1) if models.runtime == "onnx" else (0, load.count() + 1)
    assert (answered, deferred) == expected


# ---------------------------------------------------------- bad bundle at start (item 10)
def _break_missing(bundle: Path) -> None:
    shutil.rmtree(bundle)


def _break_corrupt_manifest(bundle: Path) -> None:
    (bundle / "metadata.json").write_text('{"name": "penguins-test", "vers', encoding="utf-8")


def _break_truncated_model(bundle: Path) -> None:
    model = bundle / "model.skops"
    model.write_bytes(model.read_bytes()[:1000])


BREAKS = {
    "missing": (_break_missing, "not found"),
    "corrupt manifest": (_break_corrupt_manifest, "metadata.json is not valid JSON"),
    "truncated model": (_break_truncated_model, "does not match its recorded sha256"),
    "hash mismatch": (_tamper, "does not match its recorded sha256"),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_bad_bundle_at_start_then_reload_makes_ready(
    case: str, served_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVICE_API_KEYS", API_KEY)
    bundle = _copy(served_bundle, tmp_path / "bundle")
    breaker, reason = BREAKS[case]
    breaker(bundle)
    app = create_app(bundle, ApiSettings(bundle_path=bundle))
    with TestClient(app) as client:
        live = client.get("/health")
        not_ready = client.get("/health/ready")
        refused = client.post("/api/v1/predict", json={"features": GOOD}, headers=AUTH)
        failed_reload = client.post("/admin/reload", headers=AUTH)
        shutil.rmtree(bundle, ignore_errors=True)
        _copy(served_bundle, bundle)  # a good bundle appears at the same path
        reloaded = client.post("/admin/reload", headers=AUTH)
        ready = client.get("/health/ready")
        served = client.post("/api/v1/predict", json={"features": GOOD}, headers=AUTH)
    assert live.status_code == 200
    assert not_ready.status_code == 503 and reason in not_ready.json()["detail"]
    assert refused.status_code == 503 and reason in refused.json()["detail"]
    assert failed_reload.status_code == 409
    assert failed_reload.json()["detail"].endswith("; no model is serving")
    assert str(tmp_path) not in not_ready.text + refused.text + failed_reload.text
    assert reloaded.status_code == 200 and reloaded.json()["previous_bundle"] is None
    assert ready.json()["status"] == "ready"
    assert served.status_code == 200 and served.json()["prediction"] == "Gentoo"


# --------------------------------------------------------- SIGTERM drain (items 9, 12)
def _raw_post(port: int, path: str, payload: dict[str, Any]) -> socket.socket:
    """Send a whole request over a new socket and return it (the answer is read later)."""
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head + body)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    chunks = []
    with sock:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status = int(raw.split(b" ", 2)[1]) if raw else 0
    return status, raw.partition(b"\r\n\r\n")[2]


def test_sigterm_goes_unready_serves_the_delay_and_drains_in_flight(
    slow_bundle: Path, tmp_path: Path
) -> None:
    delay_s, grace_s = 1.0, 20
    server = Server(slow_bundle, tmp_path, shutdown_delay_s=delay_s,
                    timeout_graceful_shutdown=grace_s, env={"MLSERVICE_REQUEST_TIMEOUT": "60",
                                                            "MLSERVICE_MAX_BATCH_SIZE": "20000"})
    try:
        server.wait_up()
        assert _ready(server).status_code == 200
        with Load(server.url, threads=2) as load:
            # Two batches that take longer than the delay: still running when uvicorn stops
            # accepting, so only its graceful drain lets them finish.
            in_flight = [_raw_post(server.port, "/api/v1/predict/batch",
                                   {"instances": _rows(3000)}) for _ in range(2)]
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            wait_for(lambda: _ready(server).status_code == 503, "readiness 503", delay_s)
            unready = _ready(server)
            during = _predict(server)
            load.stop.set()  # the balancer has seen 503: no new traffic from here on
        answers = []
        for sock in in_flight:
            answers.append((*_read_answer(sock), time.monotonic() - signalled))
        exit_code = server.process.wait(timeout=delay_s + grace_s + 10)
        exit_s = time.monotonic() - signalled
    finally:
        server.stop()
    assert unready.json()["detail"] == "not ready: shutting down (SIGTERM received)"
    assert during.status_code == 200 and during.headers["connection"] == "close"
    assert load.failures() == [] and load.count() > 0
    for status, body, _ in answers:  # in flight at SIGTERM: finished, not cut
        assert status == 200, body[:300]
        assert json.loads(body)["total_instances"] == 3000
    assert max(seconds for *_, seconds in answers) > delay_s  # they outlived the delay
    assert exit_code in (0, -signal.SIGTERM)
    assert exit_s < delay_s + grace_s
    assert any(r.get("msg", "").startswith("SIGTERM: not ready") for r in server.log_records())


def test_drain_hook_in_process_delays_then_hands_sigterm_over(
    trained_bundle: Path, tmp_path: Path
) -> None:
    """The SIGTERM hook itself, in this (main) thread: the same code the servers above run."""
    import asyncio

    handed: list[float] = []
    original = signal.signal(signal.SIGTERM, lambda sig, frame: handed.append(time.monotonic()))
    state = ModelState(path=_copy(trained_bundle, tmp_path / "bundle"))
    reloader = ModelReloader(state, ApiMetrics(), features=None, task=None)
    delay_s = 0.3

    async def scenario() -> tuple[bool, bool, float, int]:
        async with serving_lifecycle(reloader, watch_interval_s=0.05, shutdown_delay_s=delay_s):
            loaded = state.predictor is not None
            sent = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            draining_at_once = state.draining and not handed
            for _ in range(200):  # bounded: up to 10 s
                if handed:
                    break
                await asyncio.sleep(_POLL_S)  # poll interval, not synchronization
            waited = handed[0] - sent if handed else -1.0
            os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM goes through at once
            return loaded, draining_at_once, waited, len(handed)

    try:
        loaded, draining_at_once, waited, count = asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, original)
    assert loaded and draining_at_once
    assert delay_s <= waited < delay_s + 5
    assert count == 2
    assert state.draining


# ------------------------------------------------- timeout and overload (items 13, 14, 19)
_TIMEOUT_S = 2.0
_SLOW_ROWS = 8000


@pytest.fixture(scope="module")
def slow_server(slow_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MLSERVICE_REQUEST_TIMEOUT": str(_TIMEOUT_S), "MLSERVICE_MAX_BATCH_SIZE": "20000"}
    with serving(slow_bundle, tmp_path_factory.mktemp("slow-server"), env=env,
                 limit_concurrency=3) as server:
        yield server


def _wait_idle(server: Server, timeout_s: float = 60.0) -> None:
    """Bounded: until the server uses < 5 % of a core over half a second (timed-out predictions
    still run to the end in their worker threads; they would slow the tests that follow)."""
    stat = Path(f"/proc/{server.process.pid}/stat")
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    def idle() -> bool:
        before = cpu_s()
        time.sleep(0.5)  # the measuring window
        return cpu_s() - before < 0.025

    wait_for(idle, "the server going idle", timeout_s=timeout_s)


def _wait_usable(server: Server) -> list[float]:
    """Bounded: ten single predictions in a row answer 200 within a second each."""
    latencies: list[float] = []

    def ten_fast() -> bool:
        latencies.clear()
        for _ in range(10):
            started = time.monotonic()
            response = _predict(server)
            latencies.append(time.monotonic() - started)
            if response.status_code != 200 or latencies[-1] > 1.0:
                return False
        return True

    wait_for(ten_fast, "recovery to ten fast 200s", timeout_s=30.0)
    return latencies


def test_slow_prediction_times_out_and_the_worker_stays_usable(slow_server: Server) -> None:
    rows = _rows(_SLOW_ROWS)
    started = time.monotonic()
    slow = httpx.post(f"{slow_server.url}/api/v1/predict/batch", json={"instances": rows},
                      timeout=60.0)
    elapsed = time.monotonic() - started
    live_started = time.monotonic()
    live = httpx.get(f"{slow_server.url}/health", timeout=5.0)  # the model is still computing
    live_s = time.monotonic() - live_started
    latencies = _wait_usable(slow_server)
    _wait_idle(slow_server)
    assert slow.status_code == 504, slow.text[:300]
    assert slow.json()["detail"].startswith("prediction took longer than 2 s (request timeout)")
    assert _TIMEOUT_S <= elapsed < _TIMEOUT_S + 2.0
    assert live.status_code == 200 and live_s < 1.0
    assert max(latencies) < 1.0


def test_overload_past_limit_concurrency_is_a_fast_503(slow_server: Server) -> None:
    # Two slow batches hold two of the three slots (limit_concurrency=3 counts connections
    # and running requests); six clients (twice the limit) then send small requests.
    held = [_raw_post(slow_server.port, "/api/v1/predict/batch",
                      {"instances": _rows(5000)}) for _ in range(2)]  # ~3 s each, alone
    results: list[tuple[int, float] | str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer() -> None:
        deadline = time.monotonic() + _TIMEOUT_S
        with httpx.Client(base_url=slow_server.url, timeout=30.0) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status = client.post("/api/v1/predict", json={"features": GOOD}).status_code
                    outcome: tuple[int, float] | str = (status, time.monotonic() - started)
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    results.append(outcome)

    workers = [threading.Thread(target=hammer) for _ in range(6)]
    for worker in workers:
        worker.start()
    held_answers = [_read_answer(sock) for sock in held]
    stop.set()
    for worker in workers:
        worker.join(timeout=30)
    latencies = _wait_usable(slow_server)  # p99 back under a second once the load is gone
    _wait_idle(slow_server)
    assert all(isinstance(r, tuple) for r in results), results  # no hang, no reset
    timed = [r for r in results if isinstance(r, tuple)]
    assert {status for status, _ in timed} <= {200, 503}, timed
    refused = sorted(seconds for status, seconds in timed if status == 503)
    # "Fast": well under the 2 s a slow request holds a slot (the median is what the server
    # adds; the slowest includes this 2-core machine's CPU contention with the running model).
    assert len(refused) >= 6, timed
    assert refused[len(refused) // 2] < 0.5 and refused[-1] < _TIMEOUT_S, timed
    assert [status for status, _ in held_answers] == [504, 504]
    assert max(latencies) < 1.0
