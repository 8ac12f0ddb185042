"""The ONNX fast path: export at training time, verification, runtime choice, serving.

Bundles are built the way training builds them (``save_bundle`` with ``export_onnx`` in
``write_extras``), on penguins (categoricals with missing values) and diabetes (regression).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge

from mlservice.api import ApiSettings, create_app
from mlservice.api.routes import predict as predict_route
from mlservice.bundle import load_metadata, save_bundle
from mlservice.config import PreprocessingConfig
from mlservice.data import build_feature_specs
from mlservice.errors import BundleError, ConfigError, SchemaError
from mlservice.inference import Predictor
from mlservice.inference.onnx_runtime import (
    MISSING_CATEGORY,
    UNKNOWN_CATEGORY,
    categorical_to_onnx,
    requested_runtime,
)
from mlservice.pipelines import build_pipeline
from mlservice.training.onnx_export import PROBA_ATOL, export_onnx
from tests.conftest import PENGUIN_ROW

PENGUIN_TYPES = {
    "island": "categorical",
    "bill_length_mm": "numeric",
    "bill_depth_mm": "numeric",
    "flipper_length_mm": "numeric",
    "body_mass_g": "numeric",
    "sex": "categorical",
    "year": "numeric",
}
GOOD: dict[str, Any] = PENGUIN_ROW


def _split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * 0.75)
    return np.sort(order[:cut]), np.sort(order[cut:])


def _make_bundle(
    out: Path,
    *,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    types: dict[str, str],
    estimator: Any,
    task: str,
    classes: list[Any] | None,
    export: bool = True,
) -> Path:
    """Fit, then save like training does, with the ONNX export hook in ``write_extras``."""
    train_idx, test_idx = _split(len(X))
    X_train, X_test = X.iloc[train_idx], X.iloc[test_idx]  # noqa: N806
    pipeline = build_pipeline(
        types=types, preprocessing=PreprocessingConfig(), estimator=estimator
    ).fit(X_train, y[train_idx])
    specs = build_feature_specs(X_train, types)
    metadata = {
        "name": "onnx-test",
        "version": "1.0.0",
        "task": task,
        "target": {"name": "y", "classes": classes},
        "features": [s.to_dict() for s in specs],
        "feature_names": [s.name for s in specs],
        "serving": {"runtime": "auto"},
    }

    def write_extras(tmp: Path, meta: dict[str, Any]) -> None:
        if export:
            export_onnx(pipeline, X_test, task=task, out_dir=tmp, metadata=meta)

    return save_bundle(
        output_dir=out, pipeline=pipeline, metadata=metadata, write_extras=write_extras
    )


def _penguins() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    frame = load_penguins().dropna(subset=["species"]).reset_index(drop=True)
    X = frame[list(PENGUIN_TYPES)].copy()  # noqa: N806
    for name, kind in PENGUIN_TYPES.items():
        if kind == "categorical":  # what training's frame preparation does
            X[name] = X[name].astype(object).where(X[name].notna(), np.nan)
    classes = sorted(frame["species"].unique())
    codes = pd.Categorical(frame["species"], categories=classes).codes.astype(np.int64)
    return X, codes, classes


@pytest.fixture(scope="module")
def hgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HistGradientBoosting (the converter with the INTS trap) on penguins."""
    X, y, classes = _penguins()  # noqa: N806
    return _make_bundle(
        tmp_path_factory.mktemp("hgb"), X=X, y=y, types=PENGUIN_TYPES,
        estimator=HistGradientBoostingClassifier(max_iter=40, random_state=0),
        task="classification", classes=classes,
    )


@pytest.fixture(scope="module")
def onnx_predictor(hgb_bundle: Path) -> Predictor:
    return Predictor.from_path(hgb_bundle)


@pytest.fixture(scope="module")
def sklearn_predictor(hgb_bundle: Path) -> Predictor:
    return Predictor.from_path(hgb_bundle, runtime="sklearn")


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    sub = frame[list(PENGUIN_TYPES)].astype(object)
    return sub.where(sub.notna(), None).to_dict(orient="records")


# ----------------------------------------------------------------------------- export
def test_export_is_verified_and_recorded(hgb_bundle: Path) -> None:
    meta = load_metadata(hgb_bundle)
    info = meta["onnx"]
    assert info["converted"] is True and info["verified"] is True
    assert "reason" not in info
    assert info["label_mismatches"] == 0
    assert 0.0 <= info["max_abs_diff"] <= PROBA_ATOL
    assert info["tolerance"] == {"probabilities_atol": PROBA_ATOL, "labels": "equal"}
    assert info["opset"] == 18 and info["verified_rows"] > 50
    assert info["inputs"] == [
        {"name": n, "type": "string" if k == "categorical" else "float"}
        for n, k in PENGUIN_TYPES.items()
    ]
    assert info["outputs"] == {"label": "label", "probabilities": "probabilities"}
    assert "model.onnx" in meta["files"]  # hashed like every other file
    assert (hgb_bundle / "model.onnx").stat().st_size > 1000


def test_string_imputer_with_nan_missing_values_is_the_skl2onnx_trap(tmp_path: Path) -> None:
    """skl2onnx refuses the training pipeline as is; the export converts an equivalent copy."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    X, y, _ = _penguins()  # noqa: N806
    pipeline = build_pipeline(
        types=PENGUIN_TYPES, preprocessing=PreprocessingConfig(),
        estimator=LogisticRegression(max_iter=500),
    ).fit(X, y)
    inputs = [
        (n, StringTensorType([None, 1]) if k == "categorical" else FloatTensorType([None, 1]))
        for n, k in PENGUIN_TYPES.items()
    ]
    with pytest.raises(NotImplementedError, match="missing values are string"):
        to_onnx(pipeline, initial_types=inputs, target_opset=18)
    meta: dict[str, Any] = {"features": [{"name": n, "type": k} for n, k in PENGUIN_TYPES.items()]}
    missing_sex = X[X["sex"].isna()]
    assert len(missing_sex) >= 5
    info = export_onnx(pipeline, pd.concat([missing_sex, X.head(40)]), task="classification",
                       out_dir=tmp_path, metadata=meta)
    assert meta["onnx"] is info
    assert info["verified"] is True, info.get("reason")
    assert info["verified_rows"] == len(missing_sex) + 40
    assert (tmp_path / "model.onnx").is_file()
    # the saved pipeline itself is untouched: its imputer still treats NaN as missing
    imputer = pipeline.named_steps["preprocess"].named_transformers_["categorical"][0]
    assert isinstance(imputer.missing_values, float) and math.isnan(imputer.missing_values)


def test_bool_in_ints_attribute_is_the_onnx_trap() -> None:
    """onnx 1.23 refuses a bool in an INTS attribute: what skl2onnx's HGB converter writes."""
    from onnx import helper

    from mlservice.training.onnx_export import _IntAttributes

    with pytest.raises((TypeError, ValueError)):
        helper.make_node("TreeEnsembleClassifier", ["x"], ["y"],
                         nodes_missing_value_tracks_true=[0, True, False])

    made: list[dict[str, Any]] = []

    class _Container:
        def add_node(self, *args: Any, **attrs: Any) -> str:
            made.append(attrs)
            return "ok"

    fixed = _IntAttributes(_Container())
    assert fixed.add_node("Op", [], [], flags=[0, True, np.bool_(False)], values=[0.5]) == "ok"
    assert made == [{"flags": [0, 1, 0], "values": [0.5]}]
    assert all(type(v) is int for v in made[0]["flags"])


def test_regression_export_is_verified_with_a_relative_tolerance(tmp_path: Path) -> None:
    data = load_diabetes(as_frame=True)
    X = data.data  # noqa: N806
    types = {str(c): "numeric" for c in X.columns}
    bundle = _make_bundle(tmp_path, X=X, y=data.target.to_numpy(), types=types,
                          estimator=Ridge(alpha=1.0), task="regression", classes=None)
    info = load_metadata(bundle)["onnx"]
    assert info["verified"] is True and info["outputs"]["probabilities"] is None
    assert info["tolerance"]["rtol"] == 1e-4 and info["max_rel_diff"] <= 1e-4
    onnx, sk = Predictor.from_path(bundle), Predictor.from_path(bundle, runtime="sklearn")
    rows = X.head(30).to_numpy().tolist()
    ours, theirs = onnx.predict_records(rows), sk.predict_records(rows)
    assert onnx.runtime == "onnx"
    for a, b in zip(ours, theirs, strict=True):
        assert a["prediction"] == pytest.approx(b["prediction"], rel=1e-4)
        assert a["interval"] is None and a["probabilities"] is None


def test_unsupported_features_are_served_by_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    X = pd.DataFrame({  # noqa: N806
        "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
        "size": rng.normal(size=n),
    })
    y = (X["size"] > 0).astype(np.int64).to_numpy()
    bundle = _make_bundle(tmp_path, X=X, y=y, types={"when": "datetime", "size": "numeric"},
                          estimator=LogisticRegression(), task="classification",
                          classes=["no", "yes"])
    info = load_metadata(bundle)["onnx"]
    assert info["converted"] is False and info["verified"] is False
    assert "features of type ['datetime'] are not exported" in info["reason"]
    assert not (bundle / "model.onnx").exists()
    assert Predictor.from_path(bundle).runtime == "sklearn"
    with pytest.raises(BundleError, match=r"runtime 'onnx' but the bundle has no ONNX model "
                                          r"\(conversion failed: features of type"):
        Predictor.from_path(bundle, runtime="onnx")


@pytest.mark.parametrize("task", ["time_series", "ranking"])
def test_other_tasks_are_not_exported(tmp_path: Path, task: str) -> None:
    meta: dict[str, Any] = {}
    info = export_onnx(object(), pd.DataFrame(), task=task, out_dir=tmp_path, metadata=meta)
    assert meta["onnx"]["converted"] is False
    assert info["reason"] == f"{task} models are served by scikit-learn (not exported)"
    assert list(tmp_path.iterdir()) == []


def test_random_forest_converts_too(tmp_path: Path) -> None:
    X, y, classes = _penguins()  # noqa: N806
    bundle = _make_bundle(tmp_path, X=X, y=y, types=PENGUIN_TYPES,
                          estimator=RandomForestClassifier(n_estimators=20, random_state=0),
                          task="classification", classes=classes)
    assert load_metadata(bundle)["onnx"]["verified"] is True
    assert Predictor.from_path(bundle).predict_one(GOOD)["prediction"] == "Gentoo"


# ------------------------------------------------------------------------ runtime choice
@pytest.mark.parametrize(
    ("env", "serving", "expected"),
    [
        ({}, None, "auto"),
        ({}, {"runtime": "sklearn"}, "sklearn"),
        ({"MLSERVICE_RUNTIME": "onnx"}, {"runtime": "sklearn"}, "onnx"),
        ({"MLSERVICE_RUNTIME": " SKLEARN "}, {"runtime": "auto"}, "sklearn"),
    ],
)
def test_requested_runtime(env: dict[str, str], serving: Any, expected: str) -> None:
    assert requested_runtime({"serving": serving}, env) == expected


def test_bad_runtime_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"MLSERVICE_RUNTIME must be one of \['auto', 'onnx', "
                                          r"'sklearn'\], got 'gpu'"):
        requested_runtime({}, {"MLSERVICE_RUNTIME": "gpu"})


def test_runtime_follows_the_environment(hgb_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Predictor.from_path(hgb_bundle).runtime == "onnx"
    monkeypatch.setenv("MLSERVICE_RUNTIME", "sklearn")
    assert Predictor.from_path(hgb_bundle).runtime == "sklearn"
    assert Predictor.from_path(hgb_bundle, runtime="onnx").runtime == "onnx"


def test_tampered_onnx_file_is_refused(hgb_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(hgb_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"file 'model.onnx' does not match its recorded sha256"):
        Predictor.from_path(copy)


def test_unlisted_onnx_file_is_not_used(hgb_bundle: Path, tmp_path: Path) -> None:
    """A model.onnx whose hash metadata.json does not record is never run."""
    copy = tmp_path / "bundle"
    shutil.copytree(hgb_bundle, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    del meta["files"]["model.onnx"]
    (copy / "metadata.json").write_text(json.dumps(meta))
    assert Predictor.from_path(copy).runtime == "sklearn"
    with pytest.raises(BundleError, match=r"model.onnx is not listed \(hash-checked\)"):
        Predictor.from_path(copy, runtime="onnx")


# -------------------------------------------------------------------- predictions equal
def test_onnx_equals_sklearn_on_every_penguin(
    onnx_predictor: Predictor, sklearn_predictor: Predictor
) -> None:
    X, _, _ = _penguins()  # noqa: N806
    rows = _rows(X)
    assert sum(r["sex"] is None for r in rows) >= 5  # missing categories go through "" → imputer
    ours, theirs = onnx_predictor.predict_records(rows), sklearn_predictor.predict_records(rows)
    assert [r["prediction"] for r in ours] == [r["prediction"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=PROBA_ATOL)
        assert math.isclose(sum(a["probabilities"].values()), 1.0, rel_tol=1e-12)
        assert a["confidence"] == max(a["probabilities"].values())


def test_one_row_equals_row_i_of_the_batch(onnx_predictor: Predictor) -> None:
    X, _, _ = _penguins()  # noqa: N806
    rows = _rows(X.sample(300, replace=True, random_state=3))
    batch = onnx_predictor.predict_records(rows)
    for i in range(0, 300, 23):
        assert onnx_predictor.predict_one(rows[i]) == batch[i]
        assert onnx_predictor.predict_values([list(rows[i].values())])[0] == batch[i]


def test_named_positional_and_frame_agree(onnx_predictor: Predictor) -> None:
    X, _, _ = _penguins()  # noqa: N806
    frame = X.head(25)
    named = onnx_predictor.predict_records(_rows(frame))
    positional = onnx_predictor.predict_records([list(r.values()) for r in _rows(frame)])
    assert named == positional == onnx_predictor.predict_frame(frame)
    omitted = {k: v for k, v in GOOD.items() if k != "sex"}
    assert onnx_predictor.predict_one(omitted) == onnx_predictor.predict_one({**GOOD, "sex": None})


@pytest.mark.parametrize(
    "change",
    [
        {"island": "Biscoe2"},
        {"bill_length_mm": "abc"},
        {"bill_length_mm": True},
        {"body_mass_g": math.inf},
        {"body_mass_g": -1e300},
        {"body_mass_g": 10**400},
        {"island": None},
        {"year": math.nan},
        {"year": None},
        {"wings": 2},
        {"island": ["Biscoe"]},
        {"sex": {"a": 1}},
    ],
)
def test_onnx_refuses_what_sklearn_refuses_with_the_same_message(
    onnx_predictor: Predictor, sklearn_predictor: Predictor, change: dict[str, Any]
) -> None:
    row = {**GOOD, **change}
    with pytest.raises(SchemaError) as expected:
        sklearn_predictor.predict_records([GOOD, row])
    with pytest.raises(SchemaError) as ours:
        onnx_predictor.predict_records([GOOD, row])
    assert str(ours.value) == str(expected.value)
    assert str(ours.value).startswith("row 1")


def test_nan_in_a_nullable_numeric_is_missing(
    onnx_predictor: Predictor, sklearn_predictor: Predictor
) -> None:
    row = {**GOOD, "bill_length_mm": math.nan}  # the Python API treats NaN as null
    assert onnx_predictor.predict_one(row) == onnx_predictor.predict_one(
        {**GOOD, "bill_length_mm": None})
    assert onnx_predictor.predict_one(row)["prediction"] == (
        sklearn_predictor.predict_one(row)["prediction"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, MISSING_CATEGORY), (math.nan, MISSING_CATEGORY), ("Dream", "Dream"),
     ("", UNKNOWN_CATEGORY), (3, UNKNOWN_CATEGORY), (True, UNKNOWN_CATEGORY)],
)
def test_categorical_values_as_the_graph_takes_them(value: Any, expected: str) -> None:
    assert categorical_to_onnx(value) == expected


# ------------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def onnx_client(hgb_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(hgb_bundle, ApiSettings(bundle_path=hgb_bundle))) as client:
        yield client


def test_api_serves_onnx_like_the_predictor(
    onnx_client: TestClient, onnx_predictor: Predictor
) -> None:
    X, _, _ = _penguins()  # noqa: N806
    rows = _rows(X.sample(80, random_state=5))
    batch = onnx_client.post("/api/v1/predict/batch", json={"instances": rows})
    assert batch.status_code == 200
    assert batch.headers["content-type"] == "application/json"
    assert batch.json()["predictions"] == onnx_predictor.predict_records(rows)
    single = onnx_client.post("/api/v1/predict", json={"features": list(rows[7].values())})
    assert single.json() == {**onnx_predictor.predict_one(rows[7]), "model_version": "1.0.0"}


def test_small_onnx_requests_run_inline_large_ones_in_a_thread(
    onnx_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = onnx_client.app.state.model.predictor  # type: ignore[attr-defined]
    assert predictor.runtime == "onnx"
    loop_thread: list[str] = []
    ran_in: list[str] = []
    real_run = predictor._onnx.run

    def spy(feeds: Any) -> Any:
        ran_in.append(threading.current_thread().name)
        return real_run(feeds)

    monkeypatch.setattr(predictor._onnx, "run", spy)
    monkeypatch.setattr(predict_route, "INLINE_MAX_ROWS", 4)

    async def probe() -> None:
        loop_thread.append(threading.current_thread().name)

    onnx_client.portal.call(probe)  # type: ignore[union-attr]
    small = onnx_client.post("/api/v1/predict/batch", json={"instances": [GOOD] * 4})
    large = onnx_client.post("/api/v1/predict/batch", json={"instances": [GOOD] * 5})
    assert small.status_code == large.status_code == 200
    assert ran_in[0] == loop_thread[0]  # on the event loop
    assert ran_in[1] != loop_thread[0]  # in a worker thread



def test_feed_builder_takes_only_what_needs_no_further_checks() -> None:
    from mlservice.inference.onnx_runtime import ColumnCheck, FeedBuilder, OnnxInput

    builder = FeedBuilder(
        [OnnxInput("c", "string"), OnnxInput("x", "float")],
        [ColumnCheck("string", True, None), ColumnCheck("float", False, None)],
        max_abs=1e15,
    )
    feeds = builder.build([[None, 1], ["", 2.5], ["red", -3]])
    assert feeds is not None
    assert feeds["c"].tolist() == [[MISSING_CATEGORY], [UNKNOWN_CATEGORY], ["red"]]
    assert feeds["x"].dtype == np.float32 and feeds["x"].tolist() == [[1.0], [2.5], [-3.0]]
    for bad in ([3, 1.0], ["a", None], ["a", math.nan], ["a", 2e15], ["a", "1"], ["a", True]):
        assert builder.build([["ok", 0.0], bad]) is None


# ------------------------------------------------------------------------- lazy pipeline
def test_onnx_serving_never_deserializes_the_pipeline(hgb_bundle: Path) -> None:
    predictor = Predictor.from_path(hgb_bundle)
    assert predictor.predict_one(GOOD)["prediction"] == "Gentoo"
    bundle = predictor.bundle
    assert bundle.pipeline_loaded is False  # type: ignore[attr-defined]
    assert "pipeline_loaded=False" in repr(bundle)
    assert list(bundle.pipeline.classes_) == [0, 1, 2]  # loaded (and checked) on first use
    assert bundle.pipeline_loaded is True  # type: ignore[attr-defined]
    eager = Predictor.from_path(hgb_bundle, runtime="sklearn").bundle
    assert eager.pipeline_loaded is True  # type: ignore[attr-defined]


def test_lazy_load_checks_the_model_file_again(hgb_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(hgb_bundle, copy)
    predictor = Predictor.from_path(copy)
    data = bytearray((copy / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.skops").write_bytes(bytes(data))
    assert predictor.predict_one(GOOD)["prediction"] == "Gentoo"  # ONNX still serves
    with pytest.raises(BundleError, match=r"'model.skops' does not match its recorded sha256 "
                                          r"\(it changed after the bundle was opened\)"):
        predictor.bundle.pipeline  # noqa: B018
