"""The training cycle end to end on real data with a real MLflow SQLite store in a temp dir."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlservice.bundle import LATEST_LINK, load_bundle, load_metadata
from mlservice.data import fingerprint_file
from mlservice.errors import DataError
from mlservice.training import train
from tests.conftest import make_config


def _tracked(tmp: Path, **overrides: object) -> dict[str, object]:
    return {
        "tracking": {"enabled": True, "uri": f"sqlite:///{tmp}/mlflow/mlflow.db"},
        **overrides,
    }


@pytest.fixture(scope="module")
def tracked_penguins(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path):
    tmp = tmp_path_factory.mktemp("tracked")
    before = fingerprint_file(penguins_csv)
    config = make_config(tmp, **_tracked(tmp, **{"data.source": str(penguins_csv)}))
    result = train(config, base_dir=tmp)
    return tmp, config, result, before


def test_penguins_csv_trains_tracks_and_registers(tracked_penguins, penguins_csv: Path) -> None:
    import mlflow

    _tmp, config, result, before = tracked_penguins
    assert result.gate.passed and result.promoted
    assert result.tracking_error is None
    assert fingerprint_file(penguins_csv) == before  # raw data untouched
    meta = load_metadata(result.bundle_path)
    assert meta["mlflow"]["run_id"] == result.tracking["run_id"]
    assert meta["data"]["fingerprint"]["sha256"] == before
    # categoricals and missing values made it into the schema
    kinds = {f["name"]: f for f in meta["features"]}
    assert kinds["island"]["type"] == "categorical"
    assert kinds["sex"]["nullable"] is True
    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[config.name])
    assert result.tracking["run_id"] in set(runs["run_id"])
    row = runs.set_index("run_id").loc[result.tracking["run_id"]]
    assert row["metrics.test_accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert "metrics.cv_mean_accuracy" in runs.columns and "metrics.cv_std_f1" in runs.columns
    assert row["tags.data_sha256"] == before
    run = mlflow.get_run(result.tracking["run_id"])
    assert run.inputs.dataset_inputs[0].dataset.digest == before[:36]
    card = (result.bundle_path / "MODEL_CARD.md").read_text()
    assert "## Métricas" in card and result.tracking["run_id"] in card
    for plot in ("confusion_matrix.png", "roc_curve.png", "feature_importance.png"):
        assert (result.bundle_path / "plots" / plot).stat().st_size > 1000
        assert f"plots/{plot}" in card
    load_bundle(result.bundle_path)  # hashes still valid after the card rewrite


def test_champion_pyfunc_predicts_like_the_bundle(tracked_penguins, penguins_csv: Path) -> None:
    import mlflow

    _tmp, config, result, _ = tracked_penguins
    mlflow.set_tracking_uri(config.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{config.name}@champion")
    bundle = load_bundle(result.bundle_path)
    raw = pd.read_csv(penguins_csv)  # as users have it: the target column, int years, gaps
    frame = raw[bundle.metadata["feature_names"]]
    assert np.array_equal(np.asarray(model.predict(raw)), bundle.pipeline.predict(frame))


def test_unmet_target_keeps_model_latest(tracked_penguins, penguins_csv: Path) -> None:
    tmp, config, result, _ = tracked_penguins
    link = Path(config.output.dir) / LATEST_LINK
    assert os.readlink(link) == result.bundle_path.name
    hard = make_config(
        tmp, **_tracked(tmp, **{"data.source": str(penguins_csv), "targets": {"accuracy": "> 1"}})
    )
    failed = train(hard, base_dir=tmp)
    assert not failed.gate.passed and not failed.promoted
    assert failed.gate.failed == ["accuracy"]
    assert failed.bundle_path.is_dir() and failed.bundle_path != result.bundle_path
    assert os.readlink(link) == result.bundle_path.name  # untouched
    assert load_metadata(failed.bundle_path)["gate"]["passed"] is False
    assert failed.tracking is not None and failed.tracking["alias"] is None


@pytest.mark.parametrize(
    ("task", "source", "target", "model", "targets", "plots"),
    [
        (
            "classification",
            "builtin:breast_cancer",
            "target",
            "logistic_regression",
            {"accuracy": ">= 0.9", "roc_auc": ">= 0.95"},
            ["calibration.png", "roc_curve.png"],
        ),
        (
            "regression",
            "builtin:diabetes",
            "target",
            "hist_gradient_boosting",
            {"r2": ">= 0.2", "mape": "< 60%"},
            ["residuals.png", "predicted_vs_actual.png"],
        ),
    ],
)
def test_builtin_datasets_train_with_tracking(
    tmp_path: Path,
    task: str,
    source: str,
    target: str,
    model: str,
    targets: dict[str, str],
    plots: list[str],
) -> None:
    import mlflow

    config = make_config(
        tmp_path,
        **_tracked(
            tmp_path,
            name=f"{task}-builtin",
            task=task,
            targets=targets,
            data={"source": source, "target": target},
            model={"type": model, "params": {}},
        ),
    )
    result = train(config, base_dir=tmp_path)
    assert result.gate.passed, result.gate.rows
    meta = result.metadata
    expected = {
        "classification": {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"},
        "regression": {"mse", "rmse", "mae", "r2", "mape"},
    }[task]
    assert set(meta["metrics"]["test"]) == expected == set(meta["metrics"]["train"])
    assert set(meta["metrics"]["cv"]) == expected
    for plot in plots:
        assert (result.bundle_path / "plots" / plot).is_file()
    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[config.name])
    assert list(runs["run_id"]) == [result.tracking["run_id"]]
    if task == "regression":
        assert meta["interval"]["level"] == 0.9 and meta["interval"]["halfwidth"] > 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_tracking_server_fails_fast_and_keeps_bundle(
    tmp_path: Path, penguins_csv: Path
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    config = make_config(
        tmp_path,
        **{"data.source": str(penguins_csv), "tracking": {"uri": uri, "timeout_s": 2}},
    )
    started = time.monotonic()
    result = train(config, base_dir=tmp_path)
    assert time.monotonic() - started < 60
    assert result.tracking is None
    assert result.tracking_error is not None and "unreachable" in result.tracking_error
    assert str(result.bundle_path) in result.tracking_error or result.bundle_path.is_dir()
    load_bundle(result.bundle_path)  # complete and valid
    out = Path(config.output.dir)
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]
    assert leftovers == []


def test_missing_column_is_a_data_error(tmp_path: Path, penguins_csv: Path) -> None:
    config = make_config(
        tmp_path, data={"source": str(penguins_csv), "target": "species", "features": ["nope"]}
    )
    with pytest.raises(DataError, match=r"no column\(s\) \['nope'\]"):
        train(config, base_dir=tmp_path)
    assert not Path(config.output.dir).exists()


def test_same_seed_same_metrics(tmp_path: Path, penguins_csv: Path) -> None:
    first = train(make_config(tmp_path / "a", **{"data.source": str(penguins_csv)}))
    second = train(make_config(tmp_path / "b", **{"data.source": str(penguins_csv)}))
    assert first.metadata["metrics"] == second.metadata["metrics"]
    assert first.metadata["split"] == second.metadata["split"]


def test_api_predictor_and_mlflow_pyfunc_agree(tracked_penguins, penguins_csv: Path) -> None:
    """The same rows through the HTTP API, the in-process Predictor and the MLflow model."""
    import mlflow
    from fastapi.testclient import TestClient

    from mlservice.api.main import create_app
    from mlservice.inference import Predictor

    _tmp, config, result, _ = tracked_penguins
    predictor = Predictor.from_path(result.bundle_path)
    frame = pd.read_csv(penguins_csv)[list(predictor.feature_names)]
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    with TestClient(create_app(result.bundle_path)) as client:
        answer = client.post("/api/v1/predict/batch", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    api_labels = [p["prediction"] for p in answer.json()["predictions"]]
    local_labels = [p["prediction"] for p in predictor.predict_records(rows)]
    mlflow.set_tracking_uri(config.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{config.name}@champion")
    codes = np.asarray(model.predict(frame))  # the raw frame: integer years as users have them
    classes = predictor.classes
    assert classes is not None
    assert api_labels == local_labels == [classes[int(c)] for c in codes]
    assert len(api_labels) == len(frame) == 344
