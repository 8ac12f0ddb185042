"""Security items of the checklist in docs/reliability.md that no other test file covers.

Covered elsewhere (see docs/reliability.md): malicious pickle and byte tampering at load
(tests/test_bundle.py, items 20-21), the skops type allowlist (22), member path safety (23),
pickle content types → 415 (tests/test_api.py, tests/test_api_e2e.py, item 24), serving never
importing MLflow (tests/test_layering.py). Here: the admin API's keys, the hot-reload path
refusing a malicious bundle, sklearn version mismatches as errors (21), the skops pin (22), no
MLflow Recipes/MLproject and no tracking endpoint in the service (25). The serving tests run on
the penguins classifier served by scikit-learn and on one served by ONNX (``served_bundle``),
whose valid predict requests the fast path answers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlservice.api import ApiSettings, create_app
from mlservice.bundle import MODEL_FILE, load_bundle, sha256_file
from mlservice.errors import BundleError
from tests.conftest import fast_path_count, runtime_of
from tests.test_api_e2e import GOOD

ROOT = Path(__file__).resolve().parents[1]
KEY = "security-key"


class TouchOnUnpickle:
    """A real malicious pickle payload: unpickling it creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.target,))


def _rehash(bundle: Path) -> None:
    """Record the model file's current sha256, as an attacker who can write the bundle would."""
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["files"][MODEL_FILE] = sha256_file(bundle / MODEL_FILE)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture()
def bundle(served_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(served_bundle, tmp_path / "bundle"))


@pytest.fixture()
def keyed(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("MLSERVICE_API_KEYS", KEY)
    with TestClient(create_app(bundle, ApiSettings(bundle_path=bundle))) as client:
        yield client


# ----------------------------------------------------------------------- admin API keys
def test_admin_reload_is_403_without_keys_and_openapi_shows_no_auth(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSERVICE_API_KEYS", raising=False)
    with TestClient(create_app(bundle, ApiSettings(bundle_path=bundle))) as client:
        refused = client.post("/admin/reload", headers={"X-API-Key": "anything"})
        schema = client.get("/openapi.json").json()
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "admin endpoints are disabled because no API keys are configured; put keys in the "
        "variable named by serving.api_keys_env (default MLSERVICE_API_KEYS) and restart"
    )
    assert "securitySchemes" not in schema.get("components", {})
    assert "403" in schema["paths"]["/admin/reload"]["post"]["responses"]


def test_admin_reload_needs_one_of_the_keys(keyed: TestClient) -> None:
    missing = keyed.post("/admin/reload")
    wrong = keyed.post("/admin/reload", headers={"X-API-Key": KEY + "x"})
    header = keyed.post("/admin/reload", headers={"X-API-Key": KEY})
    bearer = keyed.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    assert header.status_code == 200 and bearer.status_code == 200
    assert header.json()["status"] == "reloaded" and header.json()["model_name"] == "penguins-test"


def test_hot_reload_refuses_a_malicious_pickle_before_unpickling(
    keyed: TestClient, bundle: Path, tmp_path: Path
) -> None:
    sentinel = tmp_path / "SENTINEL"
    (bundle / MODEL_FILE).write_bytes(pickle.dumps(TouchOnUnpickle(sentinel)))
    _rehash(bundle)  # hashes match: only the format check stands in the way
    answer = keyed.post("/admin/reload", headers={"X-API-Key": KEY})
    ready = keyed.get("/health/ready").json()
    answered = fast_path_count(keyed.app)
    served = keyed.post("/api/v1/predict", json={"features": GOOD}, headers={"X-API-Key": KEY})
    answered = fast_path_count(keyed.app) - answered
    assert not sentinel.exists()
    assert answered == (1 if runtime_of(bundle) == "onnx" else 0)  # the old model still serves
    assert answer.status_code == 409
    assert "'model.skops' is not a skops archive; refusing to load it" in answer.json()["detail"]
    assert str(tmp_path) not in answer.text + json.dumps(ready)
    assert "not a skops archive" in ready["reload_error"]
    assert served.status_code == 200 and served.json()["prediction"] == "Gentoo"


def test_every_route_is_known_and_no_tracking_endpoint_is_served(keyed: TestClient) -> None:
    paths = set(keyed.get("/openapi.json", headers={"X-API-Key": KEY}).json()["paths"])
    assert paths == {
        "/health", "/health/ready", "/metrics", "/admin/reload",
        "/api/v1/model", "/api/v1/predict", "/api/v1/predict/batch", "/api/v1/explain",
        "/api/v1/explain/batch", "/api/v1/monitoring", "/ping", "/version", "/invocations",
    }
    for path in ("/ajax-api/2.0/mlflow/experiments/search", "/api/2.0/mlflow/experiments/search"):
        assert keyed.get(path, headers={"X-API-Key": KEY}).status_code == 404
        assert keyed.get(path).status_code == 401  # without a key no path is told apart


# ------------------------------------------------------------- requests without a key
def test_requests_without_a_valid_key_never_reach_the_model(keyed: TestClient) -> None:
    counts = fast_path_count(keyed.app, "answered"), fast_path_count(keyed.app, "deferred")
    predictions = keyed.app.state.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "mlservice_predictions_total", {"prediction": "Gentoo"})
    answers = [
        keyed.post("/api/v1/predict", json={"features": GOOD}),
        keyed.post("/api/v1/predict", json={"features": GOOD}, headers={"X-API-Key": ""}),
        keyed.post("/api/v1/predict/batch", json={"instances": [GOOD] * 3},
                   headers={"Authorization": f"Basic {KEY}"}),
        keyed.post("/api/v1/predict/batch", json={"instances": [GOOD]},
                   headers={"X-API-Key": KEY.upper()}),
        keyed.post("/api/v1/predict", content=b"not json", headers={
            "Content-Type": "text/plain", "Authorization": "Bearer nope"}),
        keyed.get("/api/v1/model"),
        keyed.get("/metrics"),
        keyed.get("/docs"),
    ]
    assert [a.status_code for a in answers] == [401] * len(answers)
    assert all(a.headers["www-authenticate"] == "Bearer" for a in answers)
    assert all("Gentoo" not in a.text and "prediction" not in a.text for a in answers)
    after = fast_path_count(keyed.app, "answered"), fast_path_count(keyed.app, "deferred")
    assert after == counts  # refused before the body was read: the fast path never saw them
    assert keyed.app.state.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "mlservice_predictions_total", {"prediction": "Gentoo"}) == predictions
    served = keyed.post("/api/v1/predict", json={"features": GOOD}, headers={"X-API-Key": KEY})
    assert served.status_code == 200 and served.json()["prediction"] == "Gentoo"


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"features": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
     b'{"instances": [' + b'{"a": ' * 3_000 + b"1" + b"}" * 3_000 + b"]}"],
    ids=["unclosed", "nested-lists", "nested-objects"],
)
def test_deeply_nested_json_is_a_client_error(keyed: TestClient, body: bytes) -> None:
    for path in ("/api/v1/predict", "/api/v1/predict/batch"):
        answer = keyed.post(path, content=body, headers={
            "X-API-Key": KEY, "Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text[:300]
        assert "Traceback" not in answer.text and "Recursion" not in answer.text
    assert keyed.get("/health/ready").status_code == 200
    served = keyed.post("/api/v1/predict", json={"features": GOOD}, headers={"X-API-Key": KEY})
    assert served.status_code == 200


# ------------------------------------------------------- sklearn version mismatch (21)
def _set_sklearn_version(model: Path, fake: str) -> int:
    """Rewrite the ``_sklearn_version`` recorded in a skops file; return how many changed."""
    with zipfile.ZipFile(model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    changed = 0

    def walk(node: Any) -> None:
        nonlocal changed
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_sklearn_version" and isinstance(value, dict) and "content" in value:
                    value["content"] = fake
                    changed += 1
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(model, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return changed


def test_bundle_saved_with_another_sklearn_version_is_refused(bundle: Path) -> None:
    assert _set_sklearn_version(bundle / MODEL_FILE, "1.0") > 0
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"was saved with another scikit-learn version \("
                                          r"Trying to unpickle estimator \w+ from version 1\.0"):
        load_bundle(bundle)


# --------------------------------------------------------------------- pins and scope (22, 25)
def test_skops_is_pinned_at_0_12_or_later() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [d for d in deps["dependencies"] if re.match(r"skops\b", d)]
    assert pins == ["skops>=0.12"]
    major, minor = (int(part) for part in version("skops").split(".")[:2])
    assert (major, minor) >= (0, 12)


def test_no_mlflow_recipes_or_mlproject() -> None:
    # Recipes/MLproject had template injection (CVE-2023-6709, CVE-2023-6940, CVE-2024-37061).
    sources = [p for p in (ROOT / "src").rglob("*") if p.suffix in {".py", ".j2", ".yaml", ".yml"}]
    assert sources
    offending = [
        str(p.relative_to(ROOT)) for p in sources
        if re.search(r"mlflow\.(recipes|projects)|\bMLproject\b|mlflow\s+run\b",
                     p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offending == []
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"build", "mlflow"}]
        found += [os.path.join(folder, f) for f in files if f == "MLproject"]
    assert found == []
