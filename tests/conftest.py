"""Shared fixtures: small real datasets trained once per session into tmp dirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from palmerpenguins import load_penguins

from mlservice.config import Config, parse_config

FIXTURES = Path(__file__).parent / "fixtures"

#: One valid penguins row in the API's named form (shared by the serving tests).
PENGUIN_ROW: dict[str, Any] = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 215.0,
    "body_mass_g": 5000.0,
    "sex": "female",
    "year": 2008,
}


def make_config(tmp: Path, **overrides: Any) -> Config:
    """A small valid penguins config rooted in ``tmp`` (tracking off unless overridden)."""
    raw: dict[str, Any] = {
        "name": "penguins-test",
        "version": "1.0.0",
        "task": "classification",
        "data": {"source": str(tmp / "penguins.csv"), "target": "species"},
        "model": {"type": "random_forest", "params": {"n_estimators": 30}},
        "cv": {"folds": 3},
        "targets": {"accuracy": ">= 0.8"},
        "tracking": {"enabled": False, "uri": f"sqlite:///{tmp}/mlflow/mlflow.db"},
        "output": {"dir": str(tmp / "models")},
    }
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return parse_config(raw)


def write_config(path: Path, config: Config | dict[str, Any]) -> Path:
    data = config.model_dump(mode="json", by_alias=True) if isinstance(config, Config) else config
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def penguins_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "penguins.csv"
    load_penguins().to_csv(path, index=False)
    path.chmod(0o444)  # raw data is read-only: training must never write it
    return path


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    """A penguins classifier (categoricals + missing values), tracking off."""
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("clf")
    config = make_config(tmp, **{"data.source": str(penguins_csv)})
    result = train(config, base_dir=tmp)
    assert result.gate.passed
    return result.bundle_path


@pytest.fixture(scope="session")
def onnx_trained_bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    """A penguins classifier like ``trained_bundle``, served by ONNX as in production.

    Gradient boosting with 10 trees per class trains in about a second and its ONNX graph
    verifies with a wide margin (its probabilities differ from scikit-learn's by ~1e-7, the
    tolerance is 1e-4). ``serving.runtime: onnx`` makes the server refuse to fall back to
    scikit-learn, so a bundle that stopped verifying fails here instead of silently testing
    the other runtime.
    """
    from mlservice.bundle import load_metadata
    from mlservice.inference import Predictor
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("clf-onnx")
    config = make_config(
        tmp,
        **{
            "data.source": str(penguins_csv),
            "model": {"type": "hist_gradient_boosting", "params": {"max_iter": 10}},
            "serving.runtime": "onnx",
        },
    )
    result = train(config, base_dir=tmp)
    assert result.gate.passed
    onnx = load_metadata(result.bundle_path)["onnx"]
    assert onnx["verified"] is True, onnx.get("reason")
    predictor = Predictor.from_path(result.bundle_path)
    assert (predictor.runtime, predictor.onnx_self_contained) == ("onnx", True)
    return result.bundle_path


@pytest.fixture(scope="session")
def sklearn_trained_bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    """``trained_bundle``'s penguins classifier with ``serving.runtime: sklearn``: served
    by the scikit-learn pipeline whether or not its ONNX export verifies (a bundle whose export
    fails verification is served the same way), so the FastAPI routes answer every request."""
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("clf-sklearn")
    config = make_config(tmp, **{"data.source": str(penguins_csv), "serving.runtime": "sklearn"})
    result = train(config, base_dir=tmp)
    assert result.gate.passed
    return result.bundle_path


#: The runtimes the API suites serve the penguins classifier with (``served_bundle``).
SERVED_RUNTIMES = ("sklearn", "onnx")


@pytest.fixture(scope="session", params=SERVED_RUNTIMES, ids=SERVED_RUNTIMES)
def served_bundle(request: pytest.FixtureRequest) -> Path:
    """The penguins classifier once per serving runtime: ``sklearn_trained_bundle`` (every
    predict request answered by the FastAPI route) and ``onnx_trained_bundle`` (onnxruntime:
    valid predict requests answered by the fast path, as in production)."""
    from mlservice.inference import Predictor

    path: Path = request.getfixturevalue(f"{request.param}_trained_bundle")
    assert Predictor.from_path(path).runtime == request.param
    return path


def runtime_of(bundle: Path) -> str:
    """``onnx`` or ``sklearn``: the runtime the API picks for ``bundle`` (from its metadata)."""
    from mlservice.bundle import load_metadata
    from mlservice.inference.onnx_runtime import onnx_status, requested_runtime

    meta = load_metadata(bundle)
    if requested_runtime(meta) == "sklearn" or onnx_status(meta, bundle) is not None:
        return "sklearn"
    return "onnx"


def fast_path_count(app: Any, outcome: str = "answered") -> float:
    """``mlservice_fast_path_total{outcome=...}`` of an app built by ``create_app``."""
    value = app.state.metrics.registry.get_sample_value(
        "mlservice_fast_path_total", {"outcome": outcome}
    )
    return float(value or 0.0)


def fast_path_answered(metrics_text: str) -> float:
    """``mlservice_fast_path_total{outcome="answered"}`` read from a ``/metrics`` page."""
    prefix = 'mlservice_fast_path_total{outcome="answered"} '
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


@pytest.fixture(scope="session")
def regression_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diabetes regressor (builtin dataset), tracking off, easy targets."""
    from mlservice.training import train

    tmp = tmp_path_factory.mktemp("reg")
    config = make_config(
        tmp,
        name="diabetes-test",
        task="regression",
        **{
            "data": {"source": "builtin:diabetes", "target": "target"},
            "model": {"type": "ridge", "params": {"alpha": 1.0}},
            "targets": {"r2": ">= 0.2"},
        },
    )
    result = train(config, base_dir=tmp)
    assert result.gate.passed
    return result.bundle_path


@pytest.fixture()
def penguins_frame() -> pd.DataFrame:
    return load_penguins()
