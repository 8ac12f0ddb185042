"""DVC lineage is checked, not taken on trust: real `dvc init` + `dvc add` in a temp dir.

A file that still matches its ``.dvc`` record is ``tracked`` with its md5; a file changed after
``dvc add`` is ``modified``: the stale md5 is kept apart (``dvc_recorded_md5``), never recorded
as the data's, and a warning says what to run. ``dvc status`` agrees with us in both cases.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from palmerpenguins import load_penguins

from mlservice.bundle import load_metadata
from mlservice.data import dvc_lineage, dvc_md5
from mlservice.training import train
from tests.conftest import make_config


def _dvc() -> str:
    local = Path(sys.executable).parent / "dvc"
    found = str(local) if local.is_file() else shutil.which("dvc")
    if found is None:
        pytest.skip("the dvc command (a dev dependency) is not installed")
    return found


def _run_dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [_dvc(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture()
def dvc_project(tmp_path: Path) -> Path:
    """A DVC project (no git) with ``data/penguins.csv`` added by ``dvc add``."""
    data = tmp_path / "data" / "penguins.csv"
    data.parent.mkdir()
    load_penguins().to_csv(data, index=False)
    _run_dvc(tmp_path, "init", "--no-scm", "-q")
    _run_dvc(tmp_path, "config", "core.analytics", "false")
    _run_dvc(tmp_path, "add", "-q", "data/penguins.csv")
    assert (tmp_path / "data" / "penguins.csv.dvc").is_file()
    return tmp_path


def _modify(data: Path) -> None:
    """Change the data after `dvc add` the way an edit would (drop the last row)."""
    data.chmod(0o644)  # DVC may leave the workspace copy read-only
    lines = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(b"".join(lines[:-1]))


def test_a_file_that_matches_its_dvc_record_is_tracked(dvc_project: Path) -> None:
    data = dvc_project / "data" / "penguins.csv"
    real = hashlib.md5(data.read_bytes()).hexdigest()
    lineage = dvc_lineage(data)
    assert lineage.state == "tracked"
    assert lineage.md5 == lineage.recorded_md5 == real
    assert dvc_md5(data) == real
    assert "up to date" in _run_dvc(dvc_project, "status", "data/penguins.csv.dvc")


def test_a_file_changed_after_dvc_add_is_modified(dvc_project: Path) -> None:
    data = dvc_project / "data" / "penguins.csv"
    recorded = hashlib.md5(data.read_bytes()).hexdigest()
    _modify(data)
    lineage = dvc_lineage(data)
    assert lineage.fields() == {
        "dvc_md5": None,
        "dvc_recorded_md5": recorded,
        "dvc_state": "modified",
    }
    assert lineage.actual_md5 == hashlib.md5(data.read_bytes()).hexdigest() != recorded
    assert dvc_md5(data) is None
    assert "modified" in _run_dvc(dvc_project, "status", "data/penguins.csv.dvc")


def test_training_on_tracked_data_records_its_md5(dvc_project: Path) -> None:
    data = dvc_project / "data" / "penguins.csv"
    real = hashlib.md5(data.read_bytes()).hexdigest()
    config = make_config(dvc_project, **{"data.source": "data/penguins.csv"})
    result = train(config, base_dir=dvc_project)
    meta = load_metadata(result.bundle_path)
    fingerprint = meta["data"]["fingerprint"]
    assert (fingerprint["dvc_state"], fingerprint["dvc_md5"]) == ("tracked", real)
    assert fingerprint["dvc_recorded_md5"] == real
    card = (result.bundle_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"- **Versión DVC:** ✅ coincide con su archivo `.dvc`; md5 `{real}`" in card


def test_training_on_modified_data_warns_and_never_records_the_stale_md5(
    dvc_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    data = dvc_project / "data" / "penguins.csv"
    stale = hashlib.md5(data.read_bytes()).hexdigest()
    _modify(data)
    uri = f"sqlite:///{dvc_project}/mlflow/mlflow.db"
    config = make_config(
        dvc_project,
        **{"data.source": "data/penguins.csv", "tracking": {"enabled": True, "uri": uri}},
    )
    with caplog.at_level(logging.WARNING, logger="mlservice"):
        result = train(config, base_dir=dvc_project)
    assert result.tracking_error is None, result.tracking_error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "changed since `dvc add`" in w and stale in w and "dvc add data/penguins.csv" in w
        for w in warnings
    ), warnings

    meta = load_metadata(result.bundle_path)
    fingerprint = meta["data"]["fingerprint"]
    assert fingerprint == {
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "dvc_md5": None,
        "dvc_recorded_md5": stale,
        "dvc_state": "modified",
    }

    mlflow.set_tracking_uri(uri)
    tags = mlflow.get_run(result.tracking["run_id"]).data.tags
    assert tags["mlservice.dvc_state"] == "modified"
    assert tags["mlservice.dvc_recorded_md5"] == stale
    assert tags["data_dvc_md5"] == ""  # the stale md5 is not the data's version

    card = (result.bundle_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    training_data = card.split("## Datos de Entrenamiento", 1)[1].split("## Arquitectura", 1)[0]
    assert "⚠️ modificado desde `dvc add`" in training_data
    assert f"registra el md5 `{stale}`, que NO es el de los datos" in training_data
    assert "DVC md5" not in training_data
