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
