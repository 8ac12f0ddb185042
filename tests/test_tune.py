"""``mlservice tune``: Optuna on penguins, nested MLflow runs, the overlay, cooperating workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import typer
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from mlservice.bundle import load_metadata
from mlservice.commands.tune import tune as tune_command
from mlservice.config import Config
from mlservice.errors import ConfigError
from mlservice.training.hyperparameter_search import (
    TuneResult,
    config_with_params,
    default_study_name,
    search_space,
    tune,
    write_overlay,
)
from tests.conftest import make_config, write_config

MLSERVICE = Path(sys.executable).parent / "mlservice"


def _config(tmp: Path, penguins_csv: Path, **overrides: Any) -> Config:
    return make_config(
        tmp,
        **{
            "data.source": str(penguins_csv),
            "model": {"type": "random_forest", "params": {"n_estimators": 20, "max_depth": 1}},
            **overrides,
        },
    )


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="tune")(tune_command)
    app.command(name="noop")(lambda: None)  # two commands: Typer keeps "tune" as a subcommand
    return app


def test_tune_beats_weak_defaults_and_nests_trial_runs(tmp_path: Path, penguins_csv: Path) -> None:
    import mlflow

    config = _config(
        tmp_path,
        penguins_csv,
        search={"max_depth": {"int": [1, 6]}},
        tracking={"enabled": True, "uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db"},
    )
    reports: list[Any] = []
    result = tune(config, trials=6, progress=reports.append, base_dir=tmp_path)

    assert (result.metric, result.direction) == ("f1", "maximize")
    # the defaults (max_depth=1) lie in the space: they are trial 0, enqueued
    assert result.baseline_params == {"max_depth": 1}
    assert result.baseline_source.startswith("trial 0")
    assert result.baseline_score is not None and result.improved
    assert result.best_score > result.baseline_score + 0.05
    assert result.best_params["max_depth"] > 1
    summary = result.summary()
    assert "improved" in summary and "did not" not in summary
    assert f"{result.best_score:.4f}" in summary and f"{result.baseline_score:.4f}" in summary
    assert [r.number for r in reports] == list(range(6)) and reports[-1].finished == 6
    assert result.counts["complete"] + result.counts["pruned"] == 6

    overlay = write_overlay(result, tmp_path / "penguins.yaml", config.model_type)
    assert overlay == tmp_path / "penguins.best.yaml"
    best_depth = result.best_params["max_depth"]
    assert yaml.safe_load(overlay.read_text()) == {
        "model": {"type": "random_forest", "params": {"n_estimators": 20, "max_depth": best_depth}}
    }
    assert config_with_params(config, result.best_params).model.params["max_depth"] == best_depth

    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[config.name])
    parents = runs[runs["tags.mlservice.kind"] == "tune"]
    assert parents["run_id"].tolist() == [result.parent_run_id]
    children = runs[runs["tags.mlflow.parentRunId"] == result.parent_run_id]
    assert sorted(children["tags.optuna.trial_number"].astype(int)) == list(range(6))
    assert set(children["params.max_depth"].astype(int)) <= set(range(1, 7))
    baseline = children[children["tags.baseline"] == "true"]
    assert baseline["params.max_depth"].tolist() == ["1"]
    assert baseline["metrics.cv_mean_f1"].iloc[0] == pytest.approx(result.baseline_score)
    parent = parents.iloc[0]
    assert parent["tags.best.max_depth"] == str(best_depth)
    assert parent["metrics.best_cv_mean_f1"] == pytest.approx(result.best_score)
    assert parent["metrics.baseline_cv_mean_f1"] == pytest.approx(result.baseline_score)


def test_defaults_outside_the_space_get_a_separate_baseline(
    tmp_path: Path, penguins_csv: Path
) -> None:
    # min_samples_leaf defaults to 1, outside [5, 20]: the defaults are scored by their own CV
    config = _config(tmp_path, penguins_csv, search={"min_samples_leaf": {"int": [5, 20]}})
    result = tune(config, trials=3, base_dir=tmp_path)
    assert result.baseline_params == {"min_samples_leaf": 1}
    assert result.baseline_source == "separate CV of the defaults"
    assert result.baseline_score is not None and 0.5 < result.baseline_score <= 1.0
    assert 5 <= result.best_params["min_samples_leaf"] <= 20
    assert result.trials_run == 3 and result.parent_run_id is None  # tracking off


def test_says_so_when_tuning_cannot_beat_the_defaults(tmp_path: Path, penguins_csv: Path) -> None:
    config = _config(tmp_path, penguins_csv, search={"max_depth": {"categorical": [1]}})
    result = tune(config, trials=2, base_dir=tmp_path)
    assert result.improved is False
    assert result.best_score == pytest.approx(result.baseline_score)
    assert result.summary().startswith("tuning did not improve on the defaults")


def test_regression_uses_the_estimators_default_space(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        name="diabetes-tune",
        task="regression",
        data={"source": "builtin:diabetes", "target": "target"},
        model={"type": "ridge", "params": {"alpha": 1.0}},
        targets={"r2": ">= 0.2"},
    )
    assert config.search == {}
    assert search_space(config)["alpha"].float_ == [1e-3, 100.0]  # ModelSpec.search_space
    result = tune(config, trials=4, base_dir=tmp_path)
    assert (result.metric, result.direction) == ("r2", "maximize")
    assert result.baseline_params == {"alpha": 1.0} and result.baseline_source.startswith("trial 0")
    assert 1e-3 <= result.best_params["alpha"] <= 100.0
    assert result.best_score >= result.baseline_score  # the defaults are one of the trials
    assert result.study_name == default_study_name(config)


def test_summary_without_a_baseline_score() -> None:
    result = TuneResult(
        study_name="s", storage=None, metric="r2", direction="maximize", n_trials=3,
        best_params={"alpha": 0.5}, model_params={"alpha": 0.5}, best_score=0.61, best_trial=2,
        baseline_params={"alpha": 1.0}, baseline_score=None, baseline_source="", improved=False,
    )
    assert result.summary() == "best CV r2 0.6100 (trial 2); the defaults' score is not known yet"


@pytest.mark.parametrize(
    ("search", "match"),
    [
        ({"max_deph": {"int": [1, 3]}}, r"search\.max_deph: unknown parameter.*max_depth"),
        ({"max_depth": {"categorical": [[1, 2]]}}, r"search\.max_depth: choices must be scalars"),
    ],
)
def test_bad_search_space_is_a_config_error(
    tmp_path: Path, penguins_csv: Path, search: dict[str, Any], match: str
) -> None:
    config = _config(tmp_path, penguins_csv, search=search)
    with pytest.raises(ConfigError, match=match):
        tune(config, trials=2, base_dir=tmp_path)


def test_cli_tune_writes_overlay_and_trains_best_through_the_gate(
    tmp_path: Path, penguins_csv: Path
) -> None:
    config = _config(
        tmp_path, penguins_csv, search={"max_depth": {"int": [2, 5]}}, targets={"accuracy": "> 1"}
    )
    path = write_config(tmp_path / "penguins.yaml", config)
    result = CliRunner().invoke(
        _cli(), ["tune", str(path), "--trials", "3", "--train-best", "--set", "cv.folds=3"]
    )
    assert result.exit_code == 3, result.output  # trained, but accuracy > 1 cannot be met
    assert "targets not met" in result.output
    overlay = yaml.safe_load((tmp_path / "penguins.best.yaml").read_text())
    params = overlay["model"]["params"]
    assert 2 <= params["max_depth"] <= 5 and params["n_estimators"] == 20
    bundles = [p for p in (tmp_path / "models").iterdir() if p.name.startswith("model_v")]
    assert len(bundles) == 1
    meta = load_metadata(bundles[0])
    assert meta["model"]["config_params"] == params
    # the objective is train's own CV on the training part: the bundle reproduces the best score
    header = (tmp_path / "penguins.best.yaml").read_text().splitlines()[0]
    assert f"f1 {meta['metrics']['cv']['f1']['mean']:.4f} (trial" in header


def test_cli_tune_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntask: classification\n", encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["tune", str(path), "--trials", "2"])
    assert result.exit_code == 2
    assert "data: required key is missing" in result.output
    assert "Traceback" not in result.output


def test_two_worker_processes_share_one_study(tmp_path: Path, penguins_csv: Path) -> None:
    n_trials = 10
    config = _config(
        tmp_path,
        penguins_csv,
        model={"type": "random_forest",
               "params": {"n_estimators": 40, "max_depth": 4, "min_samples_leaf": 0.01}},
        search={"max_depth": {"int": [2, 8]},
                "min_samples_leaf": {"float": [0.001, 0.05], "log": True}},
    )
    path = write_config(tmp_path / "tune.yaml", config)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [str(MLSERVICE), "tune", str(path), "--trials", str(n_trials),
               "--storage", storage, "--study", "shared"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"{out}\n{err}"

    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials
    assert len({t.number for t in finished}) == n_trials
    assert {t.user_attrs["pid"] for t in finished} == {w.pid for w in workers}
    # the defaults were enqueued once, by the worker that created the study
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    # a trial that lost the race for the last slot is dropped before it runs, never repeated
    assert all(t.user_attrs.get("surplus") for t in study.get_trials(states=(TrialState.FAIL,)))
    assert (tmp_path / "tune.best.yaml").is_file()
