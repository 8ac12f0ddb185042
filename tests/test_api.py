"""Tests of mlservice.api with TestClient(create_app(...)) on real bundles.

The serving tests run twice (``served_bundle``): on the penguins classifier served by
scikit-learn, where the FastAPI routes answer every request, and on one served by ONNX, where
the fast path (``mlservice.api.fast_path``) answers valid predict requests and hands everything
else to the routes. On the ONNX one, ``mlservice_fast_path_total`` says which of the two did.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlservice.api import ApiSettings, create_app, settings_from_env
from mlservice.api.errors import format_validation_errors
from mlservice.api.middleware import JsonFormatter
from mlservice.bundle import Bundle
from mlservice.errors import ConfigError
from mlservice.inference import Predictor
from tests.conftest import PENGUIN_ROW, fast_path_count, runtime_of

HINT = "See GET /api/v1/model for the feature schema."
GOOD: dict[str, Any] = PENGUIN_ROW
NAMES = list(GOOD)


def _settings(bundle: Path, **changes: Any) -> ApiSettings:
    return ApiSettings(bundle_path=bundle, **changes)


def _small_settings(bundle: Path) -> ApiSettings:
    return _settings(bundle, max_batch_size=5, max_body_bytes=2000, request_timeout_s=0.2)


@pytest.fixture(scope="module")
def client(served_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(served_bundle, _settings(served_bundle))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def small_client(served_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(served_bundle, _small_settings(served_bundle))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def sklearn_small_client(sklearn_trained_bundle: Path) -> Iterator[TestClient]:
    """For the tests that swap in a scikit-learn model of their own (one runtime only)."""
    bundle = sklearn_trained_bundle
    with TestClient(create_app(bundle, _small_settings(bundle))) as test_client:
        yield test_client


def _onnx(client: TestClient) -> bool:
    """Whether ``client``'s app serves its model with ONNX (so the fast path answers)."""
    predictor = client.app.state.model.predictor  # type: ignore[attr-defined]
    assert predictor is not None
    return bool(predictor.runtime == "onnx")


class _FastPathCounts:
    """What the fast path of ``client``'s app did since this was built: (answered, deferred)."""

    def __init__(self, client: TestClient) -> None:
        self.app = client.app
        self.start = self._now()

    def _now(self) -> tuple[float, float]:
        return fast_path_count(self.app, "answered"), fast_path_count(self.app, "deferred")

    def delta(self) -> tuple[int, int]:
        now = self._now()
        return int(now[0] - self.start[0]), int(now[1] - self.start[1])


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    sub = frame[NAMES].astype(object)
    return sub.where(sub.notna(), None).to_dict(orient="records")


def _ready(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200


# --------------------------------------------------------------------------- health & model
def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_name": "penguins-test",
                            "model_version": "1.0.0"}


def test_model_metadata(client: TestClient) -> None:
    body = client.get("/api/v1/model").json()
    assert (body["name"], body["version"], body["task"]) == ("penguins-test", "1.0.0",
                                                             "classification")
    features = {f["name"]: f for f in body["features"]}
    assert list(features) == NAMES
    assert features["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert features["island"]["nullable"] is False
    assert features["bill_length_mm"]["nullable"] is True
    assert features["bill_length_mm"]["range"]["min"] < features["bill_length_mm"]["range"]["max"]
    assert body["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert body["target"] == {"name": "species", "classes": ["Adelie", "Chinstrap", "Gentoo"]}
    assert body["metrics"]["test"]["accuracy"] >= 0.8
    assert body["targets"][0]["metric"] == "accuracy" and body["targets"][0]["met"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", body["data_fingerprint"]["sha256"])
    assert body["trained_at"].startswith("20")
    assert "files" not in body and "config" not in body  # never the raw internal dict


# ------------------------------------------------------------------------------- predict
def test_predict_named_and_positional(client: TestClient) -> None:
    counts = _FastPathCounts(client)
    named = client.post("/api/v1/predict", json={"features": GOOD})
    positional = client.post("/api/v1/predict", json={"features": list(GOOD.values())})
    # ONNX-served: both answered by the fast path; scikit-learn-served: both by the route.
    assert counts.delta() == ((2, 0) if _onnx(client) else (0, 2))
    assert named.status_code == 200
    predictor = client.app.state.model.predictor  # type: ignore[attr-defined]
    assert named.headers["x-model-bundle"] == positional.headers["x-model-bundle"]
    assert named.headers["x-model-bundle"] == predictor.bundle_id
    body = named.json()
    assert set(body) == {"prediction", "confidence", "probabilities", "interval", "model_version"}
    assert body["prediction"] == "Gentoo"
    assert body["model_version"] == "1.0.0"
    assert body["confidence"] == max(body["probabilities"].values())
    assert body["interval"] is None
    assert positional.json() == body


def test_api_equals_predictor(
    client: TestClient, served_bundle: Path, penguins_frame: pd.DataFrame
) -> None:
    rows = _rows(penguins_frame.sample(60, random_state=1))
    predictor = Predictor.from_path(served_bundle)
    assert predictor.runtime == runtime_of(served_bundle)
    expected = predictor.predict_records(rows)
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict/batch", json={"instances": rows})
    assert counts.delta() == ((1, 0) if _onnx(client) else (0, 1))
    assert response.status_code == 200
    body = response.json()
    assert body["total_instances"] == 60 and body["model_version"] == "1.0.0"
    assert body["predictions"] == expected


def test_one_row_equals_row_i_of_a_1000_row_batch(
    client: TestClient, penguins_frame: pd.DataFrame
) -> None:
    rows = _rows(penguins_frame.sample(1000, replace=True, random_state=7))
    batch = client.post("/api/v1/predict/batch", json={"instances": rows})
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == 1000
    for i in np.random.default_rng(3).choice(1000, 8, replace=False):
        single = client.post("/api/v1/predict", json={"features": rows[int(i)]}).json()
        assert single["prediction"] == predictions[i]["prediction"]
        assert single["probabilities"] == pytest.approx(predictions[i]["probabilities"],
                                                        rel=1e-12)


def test_batch_mixes_named_and_positional(client: TestClient) -> None:
    response = client.post("/api/v1/predict/batch",
                           json={"instances": [GOOD, list(GOOD.values())]})
    first, second = response.json()["predictions"]
    assert first == second


def test_regression_bundle_serves_numbers_with_interval(regression_bundle: Path) -> None:
    with TestClient(create_app(regression_bundle, _settings(regression_bundle))) as reg:
        names = [f["name"] for f in reg.get("/api/v1/model").json()["features"]]
        body = reg.post("/api/v1/predict", json={"features": [0.01] * len(names)}).json()
    low, high = body["interval"]
    assert isinstance(body["prediction"], float)
    assert low < body["prediction"] < high
    assert body["probabilities"] is None and body["confidence"] is None


# -------------------------------------------------------------------------------- 422
@pytest.mark.parametrize(
    ("features", "detail"),
    [
        ({k: v for k, v in GOOD.items() if k != "year"}, f"features.year: Field required. {HINT}"),
        ({**GOOD, "island": "Biscoe2"},
         "features.island: Input should be 'Biscoe', 'Dream' or 'Torgersen' (got 'Biscoe2'). "
         + HINT),
        ({**GOOD, "bill_length_mm": "abc"},
         f"features.bill_length_mm: Input should be a valid number (got 'abc'). {HINT}"),
        ({**GOOD, "bill_length_mm": "3"},
         f"features.bill_length_mm: Input should be a valid number (got '3'). {HINT}"),
        ({**GOOD, "body_mass_g": True},
         f"features.body_mass_g: Input should be a valid number (got True). {HINT}"),
        ({**GOOD, "island": None},
         "features.island: Input should be 'Biscoe', 'Dream' or 'Torgersen' (got None). " + HINT),
        ({**GOOD, "wings": 2}, f"features.wings: Extra inputs are not permitted (got 2). {HINT}"),
        (list(GOOD.values())[:3],
         "features: expected 7 values in the order ['island', 'bill_length_mm', 'bill_depth_mm', "
         "'flipper_length_mm', 'body_mass_g', 'sex', 'year'], got 3 (got ['Biscoe', 45.1, 14.5]). "
         + HINT),
        ({**GOOD, "year": 1e16},
         "features.year: Input should be less than or equal to 1000000000000000 (got 1e+16). "
         + HINT),
    ],
)
def test_validation_422_names_the_field(client: TestClient, features: Any, detail: str) -> None:
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict", json={"features": features})
    assert counts.delta() == (0, 1)  # the fast path (if any) handed it to the route
    assert response.status_code == 422
    assert response.json()["detail"] == detail
    _ready(client)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", '"NaN"'])
def test_non_finite_numbers_are_422(client: TestClient, raw: str) -> None:
    row = json.dumps({**GOOD, "bill_length_mm": 0.0}).replace("0.0", raw, 1)
    response = client.post("/api/v1/predict", content=f'{{"features": {row}}}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["features", "bill_length_mm"]
    _ready(client)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"instances": []},
         f"instances: List should have at least 1 item after validation, not 0 (got []). {HINT}"),
        ({"instances": [GOOD, {**GOOD, "sex": "m"}]},
         f"instances.1.sex: Input should be 'female' or 'male' (got 'm'). {HINT}"),
        ({"rows": [1]},
         f"instances: Field required; rows: Extra inputs are not permitted (got [1]). {HINT}"),
    ],
)
def test_batch_422(client: TestClient, body: Any, detail: str) -> None:
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict/batch", json=body)
    assert counts.delta() == (0, 1)
    assert response.status_code == 422
    assert response.json()["detail"] == detail


def test_invalid_json_is_400(client: TestClient) -> None:
    response = client.post("/api/v1/predict", content=b'{"features": ',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("request body is not valid JSON")
    _ready(client)


# ----------------------------------------------------------------------- 413, 415, 400
def test_batch_over_max_is_413(small_client: TestClient) -> None:
    counts = _FastPathCounts(small_client)
    response = small_client.post("/api/v1/predict/batch", json={"instances": [GOOD] * 6})
    assert counts.delta() == (0, 1)
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "instances: request has 6 instances; the limit is 5 (max_batch_size). "
        "Split it into smaller requests."
    )
    ok = small_client.post("/api/v1/predict/batch", json={"instances": [GOOD] * 5})
    assert ok.status_code == 200
    assert counts.delta() == ((1, 1) if _onnx(small_client) else (0, 2))


TOO_LARGE = ("request body exceeds the limit of 2000 bytes (max_body_bytes); "
             "send fewer instances per request")


def test_body_over_limit_is_413_from_content_length(small_client: TestClient) -> None:
    body = json.dumps({"instances": [GOOD] * 30}).encode()
    response = small_client.post("/api/v1/predict/batch", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == TOO_LARGE


def test_streamed_body_over_limit_is_413(small_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check
        yield b'{"instances": ['
        for _ in range(40):
            yield json.dumps(GOOD).encode() + b","
        yield json.dumps(GOOD).encode() + b"]}"

    response = small_client.post("/api/v1/predict/batch", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == TOO_LARGE


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("text/plain", "Content-Type must be application/json, got 'text/plain'"),
        ("application/x-www-form-urlencoded",
         "Content-Type must be application/json, got 'application/x-www-form-urlencoded'"),
        ("application/octet-stream",
         "Content-Type must be application/json, got 'application/octet-stream'"),
    ],
)
def test_non_json_content_type_is_415(client: TestClient, content_type: str, detail: str) -> None:
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict", content=json.dumps({"features": GOOD}),
                           headers={"Content-Type": content_type})
    assert counts.delta() == (0, 0)  # refused before the body reached the fast path
    assert response.status_code == 415
    assert response.json()["detail"] == detail
    _ready(client)


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"],
)
def test_json_content_types_are_accepted(client: TestClient, content_type: str) -> None:
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict", content=json.dumps({"features": GOOD}),
                           headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == "Gentoo"
    assert counts.delta() == ((1, 0) if _onnx(client) else (0, 1))


def test_utf8_bom_in_front_of_the_body_is_ignored(client: TestClient) -> None:
    plain = client.post("/api/v1/predict", json={"features": GOOD})
    counts = _FastPathCounts(client)
    response = client.post("/api/v1/predict/batch",
                           content=b"\xef\xbb\xbf" + json.dumps({"instances": [GOOD]}).encode(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["prediction"] == plain.json()["prediction"]
    assert counts.delta() == ((1, 0) if _onnx(client) else (0, 1))


@pytest.mark.parametrize("path", ["/api/v1/predict/", "/api/v1/predict/batch/", "/api/v1//predict"])
def test_predict_path_variants_are_404_not_redirects(client: TestClient, path: str) -> None:
    counts = _FastPathCounts(client)
    body = {"features": GOOD} if "batch" not in path else {"instances": [GOOD]}
    response = client.post(path, json=body, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert counts.delta() == (0, 0)  # never answered nor seen by the fast path


def test_bad_content_length_is_400(client: TestClient) -> None:
    response = client.post("/api/v1/predict", content=b"{}",
                           headers={"Content-Type": "application/json", "Content-Length": "abc"})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Content-Length header must be a non-negative integer, got 'abc'"
    )


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    response = client.delete("/api/v1/predict")
    assert response.status_code == 405
    assert response.json()["detail"] == "Method Not Allowed"


# -------------------------------------------------------------------------- 401 / CORS
def test_api_keys(served_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVICE_API_KEYS", "key-one, key-two")
    with TestClient(create_app(served_bundle, _settings(served_bundle))) as secured:
        counts = _FastPathCounts(secured)
        missing = secured.post("/api/v1/predict", json={"features": GOOD})
        wrong = secured.post("/api/v1/predict", json={"features": GOOD},
                             headers={"X-API-Key": "key-three"})
        wrong_batch = secured.post("/api/v1/predict/batch", json={"instances": [GOOD]},
                                   headers={"Authorization": "Bearer key-three"})
        refused = counts.delta()
        header = secured.post("/api/v1/predict", json={"features": GOOD},
                              headers={"X-API-Key": "key-two"})
        bearer = secured.get("/api/v1/model", headers={"Authorization": "Bearer key-one"})
        batch = secured.post("/api/v1/predict/batch", json={"instances": [GOOD]},
                             headers={"Authorization": "Bearer key-one"})
        accepted = counts.delta()
        onnx = _onnx(secured)
        assert secured.get("/health/ready").status_code == 200  # probes need no key
        docs_without_key = secured.get("/openapi.json")
        schemes = secured.get("/openapi.json", headers={"X-API-Key": "key-one"}).json()[
            "components"]["securitySchemes"]
    assert refused == (0, 0)  # a request without a valid key never reaches the fast path
    assert accepted == ((2, 0) if onnx else (0, 2))
    assert docs_without_key.status_code == 401
    assert wrong_batch.status_code == 401 and batch.status_code == 200
    assert missing.status_code == 401
    assert missing.json()["detail"] == (
        "missing API key: send it in the X-API-Key header or as 'Authorization: Bearer <key>'"
    )
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    assert header.status_code == 200 and bearer.status_code == 200
    assert set(schemes) == {"APIKeyHeader", "HTTPBearer"}


def test_no_keys_means_no_auth(client: TestClient) -> None:
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})
    assert client.post("/api/v1/predict", json={"features": GOOD}).status_code == 200


def test_cors_closed_by_default(client: TestClient) -> None:
    simple = client.get("/health", headers={"Origin": "https://evil.example"})
    preflight = client.options("/api/v1/predict", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_open_for_configured_origin(served_bundle: Path) -> None:
    settings = _settings(served_bundle, cors_origins=["https://app.example"])
    with TestClient(create_app(served_bundle, settings)) as cors:
        allowed = cors.get("/health", headers={"Origin": "https://app.example"})
        other = cors.get("/health", headers={"Origin": "https://evil.example"})
        preflight = cors.options("/api/v1/predict", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        predicted = cors.post("/api/v1/predict", json={"features": GOOD},
                              headers={"Origin": "https://app.example"})
        answered = fast_path_count(cors.app)
        onnx = _onnx(cors)
    assert predicted.status_code == 200
    assert predicted.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in predicted.headers["access-control-expose-headers"].lower()
    assert answered == (1 if onnx else 0)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"


def test_wildcard_cors_is_refused(trained_bundle: Path) -> None:
    with pytest.raises(ValueError, match="opens the API to every site"):
        _settings(trained_bundle, cors_origins=["*"])


# ------------------------------------------------------------------------------ 503 / 500
def test_missing_bundle_starts_but_is_not_ready(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with TestClient(create_app(missing, _settings(missing))) as down:
        assert down.get("/health").json() == {"status": "ok"}
        ready = down.get("/health/ready")
        predict = down.post("/api/v1/predict", json={"features": GOOD})
        model = down.get("/api/v1/model")
        assert down.get("/docs").status_code == 200
    assert ready.status_code == 503
    assert ready.json()["detail"].startswith("not ready: bundle 'nothing-here' not found")
    assert predict.status_code == 503 and model.status_code == 503
    assert predict.json()["detail"].startswith("no model is loaded: bundle 'nothing-here'")
    assert str(tmp_path) not in predict.text + ready.text


def test_tampered_bundle_is_not_ready(served_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(served_bundle, copy)
    model_file = copy / "model.skops"  # served by ONNX, the pipeline is still hash-checked
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with TestClient(create_app(copy, _settings(copy))) as down:
        assert down.get("/health").status_code == 200
        ready = down.get("/health/ready")
        predict = down.post("/api/v1/predict", json={"features": GOOD})
        bad = down.post("/api/v1/predict", json={"features": {"island": "Biscoe"}})
    assert ready.status_code == 503
    assert "does not match its recorded sha256" in ready.json()["detail"]
    assert predict.status_code == 503 and bad.status_code == 503
    assert str(tmp_path) not in predict.text + ready.text


class _Exploding:
    classes_ = np.array([0, 1, 2])

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        raise RuntimeError("boom in /secret/path/model.py")


class _Blocking:
    """A model that hangs until released: the request timeout must answer first."""

    classes_ = np.array([0, 1, 2])

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        self.release.wait(10)
        return np.full((len(X), 3), 1 / 3)


def _swap_model(client: TestClient, model: Any) -> Predictor:
    state = client.app.state.model  # type: ignore[attr-defined]
    old: Predictor = state.predictor
    state.predictor = Predictor(Bundle(old.bundle.path, old.metadata, model))
    return old


def test_tampered_onnx_graph_is_not_ready(onnx_trained_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(onnx_trained_bundle, tmp_path / "bundle"))
    graph = copy / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with TestClient(create_app(copy, _settings(copy))) as down:
        ready = down.get("/health/ready")
        predict = down.post("/api/v1/predict", json={"features": GOOD})
        deferred = fast_path_count(down.app, "deferred")
    assert ready.status_code == 503
    assert "'model.onnx' does not match its recorded sha256" in ready.json()["detail"]
    assert predict.status_code == 503 and deferred == 1  # no model: the route answers
    assert str(tmp_path) not in predict.text + ready.text


def test_model_exception_is_generic_500(sklearn_small_client: TestClient) -> None:
    small_client = sklearn_small_client
    old = _swap_model(small_client, _Exploding())
    try:
        response = small_client.post("/api/v1/predict", json={"features": GOOD},
                                     headers={"X-Request-ID": "req-500"})
    finally:
        small_client.app.state.model.predictor = old  # type: ignore[attr-defined]
    assert response.status_code == 500
    assert response.json() == {
        "detail": "the model failed on this input; the error is logged under request id req-500",
        "request_id": "req-500",
    }
    assert "Traceback" not in response.text and "/secret" not in response.text
    _ready(small_client)


def test_slow_model_times_out_with_504(sklearn_small_client: TestClient) -> None:
    small_client = sklearn_small_client
    blocking = _Blocking()
    old = _swap_model(small_client, blocking)
    try:
        response = small_client.post("/api/v1/predict", json={"features": GOOD})
    finally:
        blocking.release.set()
        small_client.app.state.model.predictor = old  # type: ignore[attr-defined]
    assert response.status_code == 504
    assert response.json()["detail"].startswith("prediction took longer than 0.2 s")
    assert small_client.post("/api/v1/predict", json={"features": GOOD}).status_code == 200


# ------------------------------------------------------------------- request id, metrics
def test_request_id_echoed_or_generated(client: TestClient) -> None:
    echoed = client.get("/health", headers={"X-Request-ID": "abc-123"})
    generated = client.get("/health")
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert echoed.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    error = client.post("/api/v1/predict", json={"features": {}},
                        headers={"X-Request-ID": "req-422"})
    assert error.json()["request_id"] == "req-422"
    answered = client.post("/api/v1/predict", json={"features": GOOD},
                           headers={"X-Request-ID": "req-200"})
    assert answered.status_code == 200 and answered.headers["x-request-id"] == "req-200"


def test_metrics_count_requests_predictions_and_errors(served_bundle: Path) -> None:
    with TestClient(create_app(served_bundle, _settings(served_bundle))) as fresh:
        for _ in range(3):
            fresh.post("/api/v1/predict", json={"features": GOOD})
        fresh.post("/api/v1/predict", json={"features": {**GOOD, "island": "x"}})
        fresh.post("/api/v1/predict", content=b"x", headers={"Content-Type": "text/plain"})
        text = fresh.get("/metrics").text
        onnx = _onnx(fresh)
    # The 415 never reaches the fast path; the 422 is handed to the route.
    answered, deferred = (3, 1) if onnx else (0, 4)
    assert f'mlservice_fast_path_total{{outcome="answered"}} {answered}.0' in text
    assert f'mlservice_fast_path_total{{outcome="deferred"}} {deferred}.0' in text
    assert ('mlservice_http_requests_total{method="POST",route="/api/v1/predict",status="200"} 3.0'
            in text)
    assert ('mlservice_http_requests_total{method="POST",route="/api/v1/predict",status="422"} 1.0'
            in text)
    assert 'mlservice_predictions_total{prediction="Gentoo"} 3.0' in text
    assert 'mlservice_errors_total{kind="validation"} 1.0' in text
    assert 'mlservice_errors_total{kind="unsupported_media_type"} 1.0' in text
    assert ('mlservice_http_request_duration_seconds_count{method="POST",'
            'route="/api/v1/predict",status="200"} 3.0' in text)
    assert "mlservice_model_loaded 1.0" in text


def test_json_log_formatter_keeps_fields() -> None:
    import logging

    record = logging.LogRecord("mlservice.api.access", logging.INFO, __file__, 1, "request", (),
                               None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "request" and line["request_id"] == "r1" and line["status"] == 200


# ---------------------------------------------------------------------------- OpenAPI/docs
def test_openapi_request_schema_is_typed(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    features = spec["components"]["schemas"]["Features"]
    assert features["additionalProperties"] is False
    assert features["required"] == ["island", "year"]
    assert features["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    assert features["examples"][0]["island"] in ("Biscoe", "Dream", "Torgersen")
    examples = spec["paths"]["/api/v1/predict"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]
    assert set(examples) == {"named", "positional"}
    assert len(examples["positional"]["value"]["features"]) == 7


def test_docs_are_served_locally(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert re.findall(r"https?://", html) == []  # every asset is local
    assert '"validatorUrl": null' in html
    assert client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
    view = client.get("/openapi-3.0.json").json()
    assert view["openapi"] == "3.0.3"
    text = json.dumps(view)
    assert '"prefixItems"' not in text and '{"type": "null"}' not in text
    assert client.get("/redoc").status_code == 404


# ------------------------------------------------------------------------------ settings
def test_settings_from_bundle_then_env(trained_bundle: Path) -> None:
    base = settings_from_env(trained_bundle, environ={})
    assert base.max_batch_size == 10_000 and base.cors_origins == []
    env = {"MLSERVICE_MAX_BATCH_SIZE": "50", "MLSERVICE_CORS_ORIGINS": "https://a.example, "
           "https://b.example", "MLSERVICE_REQUEST_TIMEOUT": "2.5"}
    tuned = settings_from_env(trained_bundle, environ=env)
    assert tuned.max_batch_size == 50 and tuned.request_timeout_s == 2.5
    assert tuned.cors_origins == ["https://a.example", "https://b.example"]
    default = settings_from_env(environ={"MLSERVICE_BUNDLE": str(trained_bundle)})
    assert default.bundle_path == trained_bundle


def test_bad_env_setting_names_the_variable(trained_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"MLSERVICE_MAX_BATCH_SIZE: .*got 'lots'"):
        settings_from_env(trained_bundle, environ={"MLSERVICE_MAX_BATCH_SIZE": "lots"})


def test_format_validation_errors_truncates_long_lists() -> None:
    errors = [{"loc": ("body", "features", f"f{i}"), "msg": "bad", "type": "x"} for i in range(8)]
    detail, items = format_validation_errors(errors)
    assert detail.endswith(f"; and 3 more. {HINT}")
    assert items[0] == {"loc": ["features", "f0"], "msg": "bad", "type": "x"}
