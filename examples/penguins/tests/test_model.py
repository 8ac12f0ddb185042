"""The model of this project: its config is valid and a training run meets its targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlservice.training import TrainResult

from penguins import load_config, load_predictor, train_model

# Fast and offline: 2 CV folds (test metrics do not depend on them), no MLflow.
FAST = ["cv.folds=2", "tracking.enabled=false"]


def test_config_is_valid_and_defines_targets() -> None:
    config = load_config()
    assert config.targets, "define targets in configs/model_config.yaml BEFORE training"
    assert {t.metric for t in config.parsed_targets()} <= set(config.targets)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    output = tmp_path_factory.mktemp("models")
    return train_model([*FAST, f"output.dir={output}"])


def test_training_meets_its_targets(trained: TrainResult) -> None:
    short = {r["metric"]: r["observed"] for r in trained.gate.rows if not r["met"]}
    assert trained.gate.passed, f"targets not met: {short}"
    assert (trained.bundle_path / "MODEL_CARD.md").is_file()


def test_bundle_predicts_a_known_label(trained: TrainResult) -> None:
    features = trained.metadata["features"]
    row = {f["name"]: f["example"] for f in features}
    [result] = load_predictor(Path(trained.bundle_path)).predict_records([row])
    classes = trained.metadata["target"]["classes"]
    if classes:
        assert result["prediction"] in classes
        assert abs(sum(result["probabilities"].values()) - 1.0) < 1e-6
    else:
        assert isinstance(result["prediction"], float)
