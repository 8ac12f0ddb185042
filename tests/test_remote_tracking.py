"""Remote tracking: train and tune against a real ``mlflow server`` process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlservice.training import train
from mlservice.training.hyperparameter_search import tune
from tests.conftest import make_config, write_config

pytestmark = pytest.mark.e2e

_STARTUP_S = 90.0
MLSERVICE = Path(sys.executable).parent / "mlservice"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        # the poll interval: returns at once if the server process dies meanwhile
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.25)
    pytest.fail(f"mlflow server not healthy after {_STARTUP_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = root / "server.log"
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(mlflow_cli), "server",
                "--host", "127.0.0.1",
                "--port", str(port),
                "--workers", "1",
                "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination", str(root / "artifacts"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,  # its own process group: the server's workers end with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:  # graceful shutdown waits for idle keep-alive clients; a few seconds is plenty
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_training_logs_to_a_remote_server(
    mlflow_server: tuple[str, Path], tmp_path: Path, penguins_csv: Path
) -> None:
    import mlflow

    url, root = mlflow_server
    config = make_config(
        tmp_path,
        **{"data.source": str(penguins_csv), "tracking": {"enabled": True, "uri": url}},
    )
    result = train(config, base_dir=tmp_path)
    assert result.tracking_error is None
    assert result.tracking is not None and result.tracking["tracking_uri"] == url
    mlflow.set_tracking_uri(url)
    runs = mlflow.search_runs(experiment_names=[config.name])
    run_id = result.tracking["run_id"]
    assert run_id in set(runs["run_id"])
    row = runs.set_index("run_id").loc[run_id]
    assert row["metrics.test_accuracy"] == pytest.approx(
        result.metadata["metrics"]["test"]["accuracy"]
    )
    # artifacts went through the server into its --artifacts-destination, not into tmp_path
    stored = list((root / "artifacts").rglob("metadata.json"))
    assert stored, "bundle artifacts were not proxied to the server's artifact store"
    assert not (tmp_path / "mlruns").exists()


def test_tuning_nests_trials_under_one_parent_on_the_server(
    mlflow_server: tuple[str, Path], tmp_path: Path, penguins_csv: Path
) -> None:
    import mlflow

    url, _root = mlflow_server
    config = make_config(
        tmp_path,
        name="penguins-remote-tune",
        **{
            "data.source": str(penguins_csv),
            "tracking": {"enabled": True, "uri": url},
            "search": {"min_samples_leaf": {"int": [1, 10]}},
        },
    )
    result = tune(config, trials=3, base_dir=tmp_path)
    assert result.parent_run_id is not None
    mlflow.set_tracking_uri(url)
    runs = mlflow.search_runs(experiment_names=[config.name])
    children = runs[runs["tags.mlflow.parentRunId"] == result.parent_run_id]
    assert len(children) == 3
    assert set(children["params.min_samples_leaf"].astype(int)) <= set(range(1, 11))
    parent = runs.set_index("run_id").loc[result.parent_run_id]
    assert parent["metrics.best_cv_mean_f1"] == pytest.approx(result.best_score)


def test_two_tune_workers_nest_under_one_parent_run(
    mlflow_server: tuple[str, Path], tmp_path: Path, penguins_csv: Path
) -> None:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    url, _root = mlflow_server
    n_trials = 4
    config = make_config(
        tmp_path,
        name="penguins-shared-tune",
        **{
            "data.source": str(penguins_csv),
            "tracking": {"enabled": True, "uri": url},
            "search": {"min_samples_leaf": {"float": [0.001, 0.05], "log": True}},
        },
    )
    path = write_config(tmp_path / "tune.yaml", config)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = [str(MLSERVICE), "tune", str(path), "--trials", str(n_trials),
               "--storage", storage, "--study", "shared"]
    workers = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"{out}\n{err}"

    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials
    parent_id = study.user_attrs["mlservice.mlflow_parent_run_id"]
    mlflow.set_tracking_uri(url)
    runs = mlflow.search_runs(experiment_names=[config.name])
    assert runs[runs["tags.mlservice.kind"] == "tune"]["run_id"].tolist() == [parent_id]
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    trials = children[children["tags.mlservice.kind"] == "tune-trial"]
    assert sorted(trials["tags.optuna.trial_number"].astype(int)) == [t.number for t in finished]
    # the defaults (min_samples_leaf=1) lie outside the space: scored by a separate nested CV
    assert (children["tags.mlservice.kind"] == "tune-baseline").any()
