"""The holes found when the served API was attacked from outside, each closed and kept closed.

Every test runs against an ONNX-served bundle, the path production takes (the fast path answers
its valid predict requests); the numbers in the test names follow docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sklearn.preprocessing import FunctionTransformer

from mlservice.api.main import create_app
from mlservice.api.settings import ApiSettings
from mlservice.bundle import METADATA_FILE, MODEL_FILE, sha256_file
from mlservice.errors import BundleError
from mlservice.inference import Predictor
from tests.conftest import PENGUIN_ROW
from tests.test_api_e2e import Server

KEY = "hardening-key"
AUTH = {"X-API-Key": KEY}
JSON = {"Content-Type": "application/json"}
PREDICT = "/api/v1/predict"
BATCH = "/api/v1/predict/batch"


@pytest.fixture(scope="module")
def onnx_bundle(onnx_trained_bundle: Path) -> Path:
    """The session's ONNX-served penguins classifier (categoricals, missing values)."""
    return onnx_trained_bundle


@pytest.fixture(scope="module")
def keyed_server(onnx_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"MLSERVICE_API_KEYS": KEY, "MLSERVICE_BODY_TIMEOUT": "1.5"}
    server = Server(onnx_bundle, tmp_path_factory.mktemp("hardening-e2e"), env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _client(bundle: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(bundle, ApiSettings(bundle_path=bundle, **settings)))


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def _raw_request(url: str, head: bytes, body: bytes, *, timeout: float) -> tuple[bytes, float]:
    """Send ``head`` + ``body`` on a fresh socket; the whole answer and the seconds it took."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
    return b"".join(chunks), time.perf_counter() - started


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _head(path: str, length: int, *, key: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ----------------------------------------------------------- 1. bounded batch validation
def test_1_huge_malformed_batch_is_refused_fast_and_small(keyed_server: Server) -> None:
    body = json.dumps({"instances": [[]] * 200_000}).encode()
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        started = time.perf_counter()
        answer = http.post(BATCH, content=body, headers={**JSON, **AUTH})
        seconds = time.perf_counter() - started
        assert http.get("/health/ready").status_code == 200
    assert answer.status_code == 413
    assert seconds < 1.5, f"{seconds:.2f} s"
    assert len(answer.content) < 100_000
    detail = answer.json()["detail"]
    assert detail.startswith("instances: request has 200000 instances; the limit is 10000")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_1_error_list_of_a_bad_batch_is_capped(onnx_bundle: Path, fast_path: bool) -> None:
    with _client(onnx_bundle, fast_path=fast_path) as client:
        answer = client.post(BATCH, json={"instances": [{}] * 10_000})
    assert answer.status_code == 422
    assert len(answer.content) < 100_000
    body = answer.json()
    assert len(body["errors"]) == 50
    assert "(the first 50 of" in body["detail"]
    assert body["errors"][0]["loc"][:2] == ["instances", 0]


# -------------------------------------------------- 2. no key: refused before the body
def test_2_unauthenticated_body_is_not_read(keyed_server: Server) -> None:
    pid = keyed_server.process.pid
    with httpx.Client(base_url=keyed_server.url, timeout=30) as http:
        http.post(PREDICT, json={"features": PENGUIN_ROW}, headers=AUTH).raise_for_status()
    before = _rss_kb(pid)
    body = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 800_000 + b"[1]]}"
    assert len(body) > 16_000_000
    answer, seconds = _raw_request(keyed_server.url, _head(BATCH, len(body)), body, timeout=10)
    grown_mb = (_rss_kb(pid) - before) / 1024
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"missing API key" in answer
    assert seconds < 0.3, f"{seconds:.2f} s"
    assert grown_mb < 80, f"RSS grew {grown_mb:.0f} MB"


def test_2_truncated_body_without_key_is_401_not_400(onnx_bundle: Path) -> None:
    os.environ["MLSERVICE_API_KEYS"] = KEY
    try:
        client = _client(onnx_bundle)
    finally:
        del os.environ["MLSERVICE_API_KEYS"]
    with client:
        answer = client.post(PREDICT, content=b'{"features": {"isla', headers=JSON)
        wrong = client.post(PREDICT, content=b"{", headers={**JSON, "X-API-Key": "nope"})
        good = client.post(PREDICT, content=b"{", headers={**JSON, **AUTH})
    assert answer.status_code == 401
    assert answer.json()["detail"].startswith("missing API key")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "invalid API key")
    assert good.status_code == 400  # with the key, the body is read and found broken


# ----------------------------------------------------- 3. ready means fully verified
def _copy_bundle(bundle: Path, dest: Path) -> Path:
    target = dest / bundle.name
    shutil.copytree(bundle, target)
    return target


def _rehash(bundle: Path, rel: str) -> None:
    meta_path = bundle / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["files"][rel] = sha256_file(bundle / rel)
    meta_path.write_text(json.dumps(meta))


def test_3_a_bundle_with_untrusted_types_is_never_ready(onnx_bundle: Path, tmp_path: Path) -> None:
    import skops.io as sio

    bad = _copy_bundle(onnx_bundle, tmp_path)
    sio.dump(FunctionTransformer(func=eval), bad / MODEL_FILE)
    _rehash(bad, MODEL_FILE)  # the hashes check out: only the type audit can refuse it
    with _client(bad) as client:
        ready = client.get("/health/ready")
        predicted = client.post(PREDICT, json={"features": PENGUIN_ROW})
        live = client.get("/health")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert "not on the allowlist" in ready.json()["detail"]
    assert "builtins.eval" in ready.json()["detail"]
    assert predicted.status_code == 503


def test_3_a_pipeline_that_fails_on_use_is_a_json_503_once(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    legacy = _copy_bundle(onnx_bundle, tmp_path)
    meta = json.loads((legacy / METADATA_FILE).read_text())
    del meta["onnx"]["class_codes"]  # an older bundle: the class order comes from the pipeline
    (legacy / METADATA_FILE).write_text(json.dumps(meta))
    with _client(legacy) as client:
        assert client.get("/health/ready").status_code == 200
        (legacy / MODEL_FILE).write_bytes(b"changed after the server opened it")
        first = client.post(PREDICT, json={"features": PENGUIN_ROW})
        (legacy / MODEL_FILE).unlink()  # a second try that re-read the file would now differ
        second = client.post(PREDICT, json={"features": PENGUIN_ROW})
        bundle = client.app.state.model.predictor.bundle  # type: ignore[attr-defined]
    for answer in (first, second):
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["request_id"]
        assert "cannot be loaded" in answer.json()["detail"]
        assert str(tmp_path) not in answer.text
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        bundle.pipeline  # noqa: B018  (the first failure, kept: no FileNotFoundError)


# ----------------------------------------------------- 4. a corrupt metadata.json
@pytest.mark.parametrize(
    "content",
    ['{"schema_version": ' + "9" * 5000 + "}", "[" * 100_000],
    ids=["5000-digit-integer", "deep-nesting"],
)
def test_4_corrupt_metadata_leaves_the_process_up(
    onnx_bundle: Path, tmp_path: Path, content: str
) -> None:
    bad = _copy_bundle(onnx_bundle, tmp_path)
    (bad / METADATA_FILE).write_text(content)
    with TestClient(create_app(bad)) as client:
        live = client.get("/health")
        ready = client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert "metadata.json is not valid JSON" in ready.json()["detail"]


# ----------------------------------------------------- 5. a bundle copied in file by file
def test_5_watcher_retries_a_bundle_that_arrives_file_by_file(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    first = _copy_bundle(onnx_bundle, tmp_path / "a")
    served = tmp_path / "served"
    served.symlink_to(first)
    with _client(served) as client:
        reloader = client.app.state.reloader  # type: ignore[attr-defined]
        old = client.app.state.model.predictor  # type: ignore[attr-defined]
        second = tmp_path / "b" / "bundle"
        second.mkdir(parents=True)
        for name in (METADATA_FILE, MODEL_FILE):  # rsync: the first files are there
            shutil.copy2(onnx_bundle / name, second / name)
        link = tmp_path / "next"
        link.symlink_to(second)
        link.replace(served)
        failed = reloader.poll()
        assert failed is not None and not failed.ok
        assert "missing file" in failed.error
        assert reloader.poll() is None  # nothing changed: not tried again
        for item in onnx_bundle.iterdir():  # the other files arrive
            if item.name not in (METADATA_FILE, MODEL_FILE):
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, second / item.name)
        loaded = reloader.poll()
        assert loaded is not None and loaded.ok, loaded
        new = client.app.state.model.predictor  # type: ignore[attr-defined]
        assert new is not old and new.bundle.path == second.resolve()
        assert client.post(PREDICT, json={"features": PENGUIN_ROW}).status_code == 200


# ----------------------------------------------------- 6. one content-type rule
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_6_content_types_have_one_rule(onnx_bundle: Path, fast_path: bool) -> None:
    body = json.dumps({"features": PENGUIN_ROW}).encode()
    with _client(onnx_bundle, fast_path=fast_path) as client:
        plain = client.post(PREDICT, content=body, headers=JSON)
        text_json = client.post(PREDICT, content=body, headers={"Content-Type": "text/x+json"})
        vendor = client.post(
            PREDICT, content=body, headers={"Content-Type": "application/vnd.api+json"}
        )
        bom = client.post(PREDICT, content=b"\xef\xbb\xbf" + body, headers=JSON)
        answered = client.app.state.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
            "mlservice_fast_path_total", {"outcome": "answered"}
        )
    assert plain.status_code == 200
    assert text_json.status_code == 415
    assert text_json.json()["detail"] == "Content-Type must be application/json, got 'text/x+json'"
    assert vendor.status_code == 200 and vendor.json() == plain.json()
    assert bom.status_code == 200 and bom.json() == plain.json()
    assert (answered or 0) == (3 if fast_path else 0)


# ----------------------------------------------------- 7. no redirects from the Host header
def test_7_trailing_slash_is_404_without_redirect(onnx_bundle: Path) -> None:
    with _client(onnx_bundle) as client:
        answer = client.post(
            PREDICT + "/",
            json={"features": PENGUIN_ROW},
            headers={"Host": "evil.example"},
            follow_redirects=False,
        )
        docs = client.get("/docs/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert docs.status_code == 404 and "location" not in docs.headers


# ----------------------------------------------------- 8. a body that stops arriving
def test_8_slow_body_gets_408_and_the_connection_closes(keyed_server: Server) -> None:
    answer, seconds = _raw_request(
        keyed_server.url, _head(PREDICT, 100, key=KEY), b'{"feat', timeout=10
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1.5 s" in answer
    assert b"connection: close" in answer.lower()
    assert 1.4 < seconds < 5, f"{seconds:.2f} s"
    with httpx.Client(base_url=keyed_server.url, timeout=10) as http:
        assert http.get("/health/ready").status_code == 200


# ----------------------------------------------------- 9. schema and metrics need the key
_PRIVATE = ["/openapi.json", "/openapi-3.0.json", "/docs", "/metrics", "/api/v1/model"]


def _keyed_client(bundle: Path, **settings: Any) -> TestClient:
    os.environ["MLSERVICE_API_KEYS"] = KEY
    try:
        return _client(bundle, **settings)
    finally:
        del os.environ["MLSERVICE_API_KEYS"]


def test_9_docs_and_metrics_need_the_key_by_default(onnx_bundle: Path) -> None:
    with _keyed_client(onnx_bundle) as client:
        without = {path: client.get(path).status_code for path in _PRIVATE}
        with_key = {path: client.get(path, headers=AUTH).status_code for path in _PRIVATE}
        public = {
            path: client.get(path).status_code
            for path in ("/health", "/health/ready", "/static/swagger-ui/swagger-ui.css")
        }
    assert without == dict.fromkeys(_PRIVATE, 401)
    assert with_key == dict.fromkeys(_PRIVATE, 200)
    assert set(public.values()) == {200}


def test_9_operators_can_open_docs_and_metrics(onnx_bundle: Path) -> None:
    with _keyed_client(onnx_bundle, public_docs=True, public_metrics=True) as client:
        opened = {path: client.get(path).status_code for path in _PRIVATE}
        schema = client.get("/openapi.json").json()
    assert opened == {**dict.fromkeys(_PRIVATE, 200), "/api/v1/model": 401}
    assert "/api/v1/predict" in schema["paths"]


def test_9_without_keys_everything_is_open(onnx_bundle: Path) -> None:
    with _client(onnx_bundle) as client:
        assert {client.get(path).status_code for path in _PRIVATE} == {200}


# ----------------------------------------------------- which bundle answered
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_answers_name_the_bundle(onnx_bundle: Path, tmp_path: Path, fast_path: bool) -> None:
    twin = tmp_path / (onnx_bundle.name + "-1")
    shutil.copytree(onnx_bundle, twin)
    meta = json.loads((twin / METADATA_FILE).read_text())
    meta["bundle_id"] = twin.name
    (twin / METADATA_FILE).write_text(json.dumps(meta))
    seen = {}
    for bundle in (onnx_bundle, twin):
        with _client(bundle, fast_path=fast_path) as client:
            single = client.post(PREDICT, json={"features": PENGUIN_ROW})
            batch = client.post(BATCH, json={"instances": [PENGUIN_ROW] * 2})
        assert single.headers["x-model-bundle"] == batch.headers["x-model-bundle"]
        assert single.json()["model_version"] == "1.0.0"
        seen[bundle.name] = single.headers["x-model-bundle"]
    assert seen == {onnx_bundle.name: onnx_bundle.name, twin.name: twin.name}
    assert Predictor.from_path(twin).bundle_id == twin.name


def test_3_readiness_audit_of_our_bundles_needs_no_skops_import(onnx_bundle: Path) -> None:
    """The audit reads the schema itself for the types our training writes: importing skops
    (every scikit-learn estimator, torch where installed) cost seconds of every start."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from fastapi.testclient import TestClient; "
        "from mlservice.api.main import create_app\n"
        "with TestClient(create_app(Path(sys.argv[1]))) as client:\n"
        "    status = client.get('/health/ready').status_code\n"
        "print(status, 'skops.io' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(onnx_bundle)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["200", "False"], done.stderr[-2000:]
