"""Drop-in serving: MLflow's scoring protocol, the Open Inference Protocol, the MLflow registry.

Each protocol is driven by its own client against a real uvicorn server on 127.0.0.1
(``ScoringServerClient`` of MLflow, ``tritonclient.http``), and every answer is compared with
``POST /api/v1/predict/batch`` of the same server on the same rows: the raw penguins frame as
users have it (its target column, integer years, missing numbers and categories) and the
diabetes regressor. The registry tests train with a real SQLite tracking store in a temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins

from mlservice.api import create_app
from mlservice.api.routes.mlflow_protocol import build_mlflow_router
from mlservice.api.routes.open_inference import build_open_inference_router
from mlservice.bundle import load_metadata, sha256_file
from mlservice.errors import BundleError, ConfigError, TrackingError
from tests.conftest import make_config
from tests.test_api_e2e import Server, free_port

pytestmark = pytest.mark.e2e

MAX_ROWS = 400  # the raw penguins frame (344 rows) fits; twice it does not
CLF = "penguins-test"
PROBA = "predict_proba"

_APP = """
import os, sys, uvicorn
from mlservice.api import create_app
from mlservice.api.routes.mlflow_protocol import build_mlflow_router
from mlservice.api.routes.open_inference import build_open_inference_router
app = create_app(os.environ["MLSERVICE_BUNDLE"])
if not any(getattr(route, "path", None) == "/invocations" for route in app.routes):
    app.include_router(build_mlflow_router())
    app.include_router(build_open_inference_router())
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


class InteropServer(Server):
    """``Server`` (``tests.test_api_e2e``) serving the app with the protocol routers."""

    def __init__(self, bundle: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"interop-{self.port}.log"
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if k != "MLSERVICE_API_KEYS"}
        env.update({"MLSERVICE_BUNDLE": str(bundle), "MLSERVICE_MAX_BATCH_SIZE": str(MAX_ROWS)})
        self.process = subprocess.Popen(
            [sys.executable, "-c", _APP, str(self.port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )


def _serve(bundle: Path, factory: pytest.TempPathFactory) -> Iterator[InteropServer]:
    server = InteropServer(bundle, factory.mktemp("interop"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clf_server(
    trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropServer]:
    yield from _serve(trained_bundle, tmp_path_factory)


@pytest.fixture(scope="module")
def reg_server(
    regression_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InteropServer]:
    yield from _serve(regression_bundle, tmp_path_factory)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{str(k): v for k, v in row.items()} for row in rows]


def _batch(url: str, frame: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """The batch route's answers for the feature columns of ``frame``."""
    response = httpx.post(f"{url}/api/v1/predict/batch", json={"instances": _records(frame[names])},
                          timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def _invoke(url: str, body: str | bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": content_type},
                      timeout=30)


def _diabetes(bundle: Path) -> tuple[pd.DataFrame, list[str]]:
    from sklearn.datasets import load_diabetes

    names = [str(n) for n in load_metadata(bundle)["feature_names"]]
    frame = load_diabetes(as_frame=True).frame.head(MAX_ROWS)
    assert set(names) <= set(frame.columns)
    return frame, names


# ------------------------------------------------------------------------ MLflow protocol
def test_mlflow_client_scores_the_raw_frame_like_the_batch_route(
    clf_server: InteropServer, trained_bundle: Path
) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", clf_server.port)
    client.wait_server_ready(timeout=30)
    client.ping()
    assert client.get_version().count(".") == 2
    raw = load_penguins()  # species (the target), int64 year, NaN numbers and sexes
    assert raw.isna().any().any() and "species" in raw.columns
    names = load_metadata(trained_bundle)["feature_names"]
    expected = [p["prediction"] for p in _batch(clf_server.url, raw, names)]
    answer = client.invoke(raw)
    assert list(answer["predictions"]) == expected
    assert set(expected) == {"Adelie", "Chinstrap", "Gentoo"}
    assert np.mean(np.asarray(expected) == raw["species"].to_numpy()) > 0.9


@pytest.mark.parametrize("form", ["records", "instances", "inputs", "split", "positional", "csv"])
def test_every_mlflow_input_format_answers_like_the_batch_route(
    clf_server: InteropServer, trained_bundle: Path, form: str
) -> None:
    raw = load_penguins()
    names = list(load_metadata(trained_bundle)["feature_names"])
    expected = [p["prediction"] for p in _batch(clf_server.url, raw, names)]
    shuffled = raw[[*reversed(raw.columns)]]  # other column order, target column included
    bodies: dict[str, Any] = {
        "records": {"dataframe_records": shuffled.to_dict(orient="records")},
        "instances": {"instances": shuffled.to_dict(orient="records")},
        "inputs": {"inputs": shuffled.to_dict(orient="list")},
        "split": {"dataframe_split": shuffled.to_dict(orient="split")},
        "positional": {"instances": raw[names].to_numpy(dtype=object).tolist()},
    }
    if form == "csv":
        response = _invoke(clf_server.url, raw.to_csv(), "text/csv")  # with its index column
    else:
        response = _invoke(clf_server.url, json.dumps(bodies[form]))  # NaN written as NaN
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    assert response.headers["X-Model-Bundle"] == trained_bundle.name


def test_mlflow_client_scores_the_regressor_like_the_batch_route(
    reg_server: InteropServer, regression_bundle: Path
) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame, names = _diabetes(regression_bundle)
    client = ScoringServerClient("127.0.0.1", reg_server.port)
    client.wait_server_ready(timeout=30)
    expected = [p["prediction"] for p in _batch(reg_server.url, frame, names)]
    answer = list(client.invoke(frame)["predictions"])  # with its target column
    assert answer == pytest.approx(expected, rel=1e-12)
    assert all(isinstance(v, float) for v in answer) and len(set(answer)) > 100


def test_invocations_refuses_like_the_batch_route(
    clf_server: InteropServer, trained_bundle: Path
) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    raw = load_penguins()
    names = list(load_metadata(trained_bundle)["feature_names"])
    bad_island = raw.head(3).assign(island=["Biscoe", "Atlantis", "Dream"])
    no_year = raw.head(3).assign(year=[2008.0, np.nan, 2009.0])
    cases = [
        (pd.concat([raw, raw]), 413, "max_batch_size"),
        (bad_island, 422, "'island'"),
        (no_year, 422, "'year'"),
        (raw.head(3).drop(columns=["island"]), 422, "missing features ['island']"),
    ]
    for frame, status, text in cases:
        body = {"dataframe_split": frame.to_dict(orient="split")}
        response = _invoke(clf_server.url, json.dumps(body))
        assert response.status_code == status, response.text
        payload = response.json()
        assert text in payload["detail"] and payload["message"] == payload["detail"]
        assert payload["request_id"] == response.headers["X-Request-ID"]
        batch = httpx.post(f"{clf_server.url}/api/v1/predict/batch",
                           json={"instances": _records(frame[[n for n in names if n in frame]])})
        assert batch.status_code == status, batch.text
    with pytest.raises(Exception, match="error code 422"):
        ScoringServerClient("127.0.0.1", clf_server.port).invoke(bad_island)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "text"),
    [
        ("{not json", "application/json", 400, "not valid JSON"),
        ("[1, 2]", "application/json", 400, "got a list"),
        ('{"instances": [], "inputs": {}}', "application/json", 400, "exactly one"),
        ('{"dataframe_split": {"data": [], "rows": 1}}', "application/json", 400, "'data'"),
        ('{"dataframe_records": {"island": "Biscoe"}}', "application/json", 400, "list"),
        ("island\nBiscoe", "text/plain", 415, "text/csv"),
        ("island\nBiscoe", "text/csv; charset=latin-1", 415, "UTF-8"),
        ("{}", "application/json; format=pandas-split", 415, "format"),
        ("", "text/csv", 400, "CSV"),
        ("island,sex\nBiscoe,male", "text/csv", 422, "missing features ['year']"),
        ("island,year\nBiscoe,", "text/csv", 422, "'year' must not be null"),
    ],
)
def test_invocations_names_what_is_wrong_with_a_body(
    clf_server: InteropServer, body: str, content_type: str, status: int, text: str
) -> None:
    response = _invoke(clf_server.url, body, content_type)
    assert response.status_code == status, response.text
    assert text in response.json()["detail"]
    assert httpx.get(f"{clf_server.url}/ping").status_code == 200  # still serving


# ------------------------------------------------------------- Open Inference Protocol
def _triton_inputs(frame: pd.DataFrame, meta: dict[str, Any], binary: bool) -> list[Any]:
    import tritonclient.http as triton

    inputs = []
    for spec in meta["inputs"]:
        name, datatype = spec["name"], spec["datatype"]
        column = frame[[name]]
        if name == "year":  # an integer column, as MLServer's pandas codec sends it
            values, datatype = column.to_numpy(dtype=np.int64), "INT64"
        elif datatype == "BYTES":
            values = column.to_numpy(dtype=object)  # a gap is sent as the string "nan"
        else:
            values = column.to_numpy(dtype=np.float64)
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infers_like_the_batch_route(
    clf_server: InteropServer, trained_bundle: Path, binary: bool
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{clf_server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(CLF) and client.is_model_ready(CLF, "1.0.0")
    assert not client.is_model_ready("another-model") and not client.is_model_ready(CLF, "2")
    meta = client.get_model_metadata(CLF)
    names = list(load_metadata(trained_bundle)["feature_names"])
    assert [i["name"] for i in meta["inputs"]] == names
    kinds = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert kinds["island"] == kinds["sex"] == "BYTES" and kinds["body_mass_g"] == "FP64"
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
        ("predict", [-1, 1]), ("predict_proba", [-1, 3])
    ]
    raw = load_penguins()
    expected = _batch(clf_server.url, raw, names)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("predict", PROBA)]
    result = client.infer(CLF, _triton_inputs(raw, meta, binary), outputs=outputs, request_id="7")
    assert result.get_response()["id"] == "7"
    assert _text(result.as_numpy("predict")) == [p["prediction"] for p in expected]
    classes = load_metadata(trained_bundle)["target"]["classes"]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(raw), 3)
    wanted = [[p["probabilities"][str(c)] for c in classes] for p in expected]
    np.testing.assert_allclose(proba, np.asarray(wanted), rtol=0, atol=1e-12)
    default = client.infer(CLF, _triton_inputs(raw.head(5), meta, binary))  # every output
    assert _text(default.as_numpy("predict")) == [p["prediction"] for p in expected[:5]]


def test_tritonclient_matrix_and_columns_of_the_regressor(
    reg_server: InteropServer, regression_bundle: Path
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    frame, names = _diabetes(regression_bundle)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{reg_server.port}")
    meta = client.get_model_metadata("diabetes-test")
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert [o["name"] for o in meta["outputs"]] == ["predict"]
    matrix = frame[names].to_numpy(dtype=np.float32)  # KServe sklearn's one [N, F] tensor
    rounded = pd.DataFrame(matrix.astype(np.float64), columns=names)
    expected = [p["prediction"] for p in _batch(reg_server.url, rounded, names)]
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix)
    result = client.infer("diabetes-test", [tensor])
    assert result.as_numpy("predict").reshape(-1).tolist() == pytest.approx(expected, rel=1e-12)
    columns = []
    for name in names:
        column = triton.InferInput(name, [len(rounded), 1], "FP64")
        column.set_data_from_numpy(rounded[[name]].to_numpy(), binary_data=False)
        columns.append(column)
    by_column = client.infer("diabetes-test", columns).as_numpy("predict").reshape(-1)
    assert by_column.tolist() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(InferenceServerException, match="unknown output 'predict_proba'") as err:
        client.infer("diabetes-test", columns, outputs=[triton.InferRequestedOutput(PROBA)])
    assert err.value.status() == "400"


def _v2(url: str, inputs: list[dict[str, Any]], model: str = CLF) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)


def _column(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(data), 1], "data": data}


def test_open_inference_errors_follow_the_protocol(clf_server: InteropServer) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    url = clf_server.url
    good = [_column("island", "BYTES", ["Biscoe"]), _column("year", "INT64", [2008])]
    assert _v2(url, good).status_code == 200
    cases = [
        (_v2(url, good, model="other"), 404, "'other'"),
        (httpx.post(f"{url}/v2/models/{CLF}/versions/9/infer", json={"inputs": good}), 404, "'9'"),
        (_v2(url, [*good, _column("colour", "BYTES", ["red"])]), 400, "['colour']"),
        (_v2(url, [_column("island", "FP64", [1.0]), good[1]]), 400, "'island'"),
        (_v2(url, [_column("island", "BYTES", ["Atlantis"]), good[1]]), 400, "'island'"),
        (_v2(url, [good[0]]), 400, "['year']"),
        (_v2(url, [_column("island", "BYTES", ["Biscoe"] * (MAX_ROWS + 1)),
                   _column("year", "INT64", [2008] * (MAX_ROWS + 1))]), 413, "max_batch_size"),
        (_v2(url, [{**good[0], "shape": [2, 1]}, _column("year", "INT64", [1, 2])]), 400,
         "elements"),
        (_v2(url, [good[0], _column("year", "INT64", [1, 2])]), 400, "numbers of rows"),
        (httpx.post(f"{url}/v2/models/{CLF}/infer", content=b"{oops"), 400, "JSON"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["error"]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{clf_server.port}")
    with pytest.raises(InferenceServerException, match="not served here") as err:
        client.get_model_metadata("other")
    assert err.value.status() == "404"
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


# ------------------------------------------------------------------------ in-process app
def _app(bundle: Path, **env: str) -> FastAPI:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        app = create_app(bundle)
    from mlservice.api.deps import require_api_key

    auth = [Depends(require_api_key)] if env else []
    if not any(getattr(route, "path", None) == "/invocations" for route in app.routes):
        app.include_router(build_mlflow_router(dependencies=auth))
        app.include_router(build_open_inference_router(dependencies=auth))
    return app


def test_keys_guard_the_protocol_routes(trained_bundle: Path) -> None:
    app = _app(trained_bundle, MLSERVICE_API_KEYS="interop-key")
    records = {"dataframe_records": [{"island": "Dream", "year": 2009}]}
    tensors = {"inputs": [_column("island", "BYTES", ["Dream"]), _column("year", "INT64", [2009])]}
    with TestClient(app) as client:
        for headers, status in (({}, 401), ({"X-API-Key": "interop-key"}, 200)):
            for path, body in (("/invocations", records), (f"/v2/models/{CLF}/infer", tensors)):
                assert client.post(path, json=body, headers=headers).status_code == status


def test_no_model_loaded_is_503_on_every_protocol(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path / "no-bundle-here")) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        for path in ("/ping", "/v2/health/ready", f"/v2/models/{CLF}/ready"):
            assert client.get(path).status_code == 503, path
        response = client.post("/invocations", json={"instances": [{"island": "Dream"}]})
        assert response.status_code == 503
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        infer = client.post(f"/v2/models/{CLF}/infer", json={"inputs": []})
        assert infer.status_code == 503 and "no model is loaded" in infer.json()["error"]


# ------------------------------------------------------------------------- MLflow registry
@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> dict[str, Any]:
    """The penguins classifier trained with a SQLite tracking store: version 1, ``champion``."""
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    config = make_config(tmp, **{"data.source": str(penguins_csv),
                                 "tracking": {"enabled": True, "uri": uri}})
    result = train(config, base_dir=tmp)
    assert result.tracking is not None and result.tracking["alias"] == "champion"
    return {"tmp": tmp, "uri": uri, "result": result, "run_id": result.tracking["run_id"]}


def test_registry_champion_downloads_verifies_and_serves(
    tracked: dict[str, Any], tmp_path: Path
) -> None:
    from mlservice.inference.registry import registry_watch_key, resolve_registry_uri

    local = tracked["result"].bundle_path
    path = resolve_registry_uri(f"models:/{CLF}@champion", tracked["uri"], tmp_path)
    assert path.is_relative_to(tmp_path.resolve()) and path != local
    meta = load_metadata(path)
    assert meta["bundle_id"] == load_metadata(local)["bundle_id"]
    for name in ("model.skops", "model.onnx"):
        assert sha256_file(path / name) == sha256_file(local / name)
    key = registry_watch_key(f"models:/{CLF}@champion", tracked["uri"])
    assert key == f"{CLF}/1/{tracked['run_id']}"
    raw = load_penguins()
    with TestClient(_app(path)) as client, TestClient(_app(local)) as original:
        body = {"dataframe_split": raw.to_dict(orient="split")}
        served = client.post("/invocations", content=json.dumps(body),
                             headers={"Content-Type": "application/json"})
        assert served.status_code == 200, served.text
        expected = original.post("/api/v1/predict/batch", json={
            "instances": _records(raw[meta["feature_names"]])}).json()["predictions"]
        assert served.json()["predictions"] == [p["prediction"] for p in expected]
    stamp = (path / "model.skops").stat().st_mtime_ns
    again = resolve_registry_uri(f"models:/{CLF}/1", tracked["uri"], tmp_path)
    assert again == path and (path / "model.skops").stat().st_mtime_ns == stamp  # cached


def test_registry_alias_move_changes_the_key_and_the_bundle(
    tracked: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from mlservice.inference.registry import registry_watch_key, resolve_registry_uri

    uri = f"models:/{CLF}@champion"
    first = resolve_registry_uri(uri, tracked["uri"], tmp_path)
    client = MlflowClient(tracking_uri=tracked["uri"], registry_uri=tracked["uri"])
    current = client.get_model_version_by_alias(CLF, "champion")
    moved = client.create_model_version(CLF, source=str(current.source), run_id=current.run_id)
    try:
        client.set_registered_model_alias(CLF, "champion", moved.version)
        assert registry_watch_key(uri, tracked["uri"]) == f"{CLF}/{moved.version}/{current.run_id}"
        second = resolve_registry_uri(uri, tracked["uri"], tmp_path)
        assert second != first and second.name.startswith(f"v{moved.version}-")
        assert load_metadata(second)["bundle_id"] == load_metadata(first)["bundle_id"]
    finally:
        client.set_registered_model_alias(CLF, "champion", current.version)


def test_registry_refuses_a_tampered_bundle_and_repairs_its_cache(
    tracked: dict[str, Any], tmp_path: Path
) -> None:
    from mlservice.inference.registry import resolve_registry_uri

    uri = f"models:/{CLF}@champion"
    cached = resolve_registry_uri(uri, tracked["uri"], tmp_path / "cache")
    good = sha256_file(cached / "model.onnx")
    (cached / "model.onnx").write_bytes(b"not the model")
    repaired = resolve_registry_uri(uri, tracked["uri"], tmp_path / "cache")
    assert repaired == cached and sha256_file(repaired / "model.onnx") == good
    stored = next(tracked["tmp"].rglob("artifacts/bundle/model.skops"))
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(BundleError, match="does not match its recorded sha256"):
            resolve_registry_uri(uri, tracked["uri"], tmp_path / "fresh")
        assert not any((tmp_path / "fresh").rglob("model.skops"))  # nothing half-verified kept
    finally:
        stored.write_bytes(original)


def test_registry_uri_errors(tracked: dict[str, Any], tmp_path: Path) -> None:
    from mlservice.inference.registry import is_registry_uri, resolve_registry_uri

    assert is_registry_uri("models:/x@y") and not is_registry_uri(tmp_path)
    with pytest.raises(ConfigError, match="models:/NAME@ALIAS"):
        resolve_registry_uri("models:/a/b/c", tracked["uri"], tmp_path)
    with pytest.raises(TrackingError, match="nope"):
        resolve_registry_uri(f"models:/{CLF}@nope", tracked["uri"], tmp_path)
    with pytest.raises(TrackingError, match="name=no-such-model"):
        resolve_registry_uri("models:/no-such-model/1", tracked["uri"], tmp_path)


def test_registry_module_imports_no_mlflow() -> None:
    code = "import sys, mlservice.inference.registry; print('mlflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"
