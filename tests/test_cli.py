"""The CLI as a user drives it: exit codes, messages, no tracebacks for user mistakes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlservice.bundle import LATEST_LINK, load_metadata
from mlservice.cli import app
from tests.conftest import make_config, write_config

runner = CliRunner()


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "train", "evaluate", "card", "demo", "serve"):
        assert command in result.output


def test_validate_ok(tmp_path: Path, penguins_csv: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml", make_config(tmp_path, **{"data.source": str(penguins_csv)})
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output and "random_forest" in result.output


def test_validate_reports_three_mistakes_with_key_paths(tmp_path: Path) -> None:
    raw = {
        "name": "x",
        "task": "classification",
        "data": {"source": "builtin:iris", "target": "target", "featurs": ["a"]},
        "split": {"strategy": "stratifed"},
        "model": {"type": "lightgbm", "params": {"learning_rate": -1}},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert "3 problems" in out
    assert "data.featurs: unknown key (did you mean 'features'?)" in out
    assert "split.strategy: must be one of" in out and "did you mean 'stratified'?" in out
    assert "model.params.learning_rate: must be > 0, got -1" in out
    assert "Traceback" not in out


def test_validate_lists_a_bad_task_a_bad_split_and_bad_target_text_together(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: x\n"
        "task: clasification\n"
        "data: {source: builtin:iris, target: target}\n"
        "split: {test_size: 1.5}\n"
        'targets: {accuracy: "greater than 0.8"}\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    out = result.output
    assert "3 problems" in out
    assert "task: must be one of" in out and "did you mean 'classification'?" in out
    assert "split.test_size: Input should be less than 1, got 1.5" in out
    assert "targets.accuracy: target 'greater than 0.8' is not a comparison" in out
    assert "did you mean '> 0.8'?" in out
    assert "Traceback" not in out


def test_validate_accepts_metric_aliases(tmp_path: Path) -> None:
    raw = {
        "name": "x",
        "task": "classification",
        "data": {"source": "builtin:iris", "target": "target"},
        "targets": {"f1_score": ">= 0.8", "auc_roc": ">= 0.9"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "f1 (written f1_score) >= 0.8" in out
    assert "roc_auc (written auc_roc) >= 0.9" in out


def test_validate_missing_file_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_train_exit_codes_and_evaluate_and_card(tmp_path: Path, penguins_csv: Path) -> None:
    config = make_config(tmp_path, **{"data.source": str(penguins_csv)})
    path = write_config(tmp_path / "c.yaml", config)
    ok = runner.invoke(app, ["train", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "targets met" in ok.output and "accuracy" in ok.output
    link = tmp_path / "models" / LATEST_LINK
    first = os.readlink(link)

    bad = runner.invoke(app, ["train", str(path), "--set", "targets.accuracy=> 1"])
    assert bad.exit_code == 3, bad.output
    assert "targets not met" in bad.output and "accuracy" in bad.output
    assert os.readlink(link) == first

    typo = runner.invoke(app, ["train", str(path), "--set", "model.params.n_estimatorz=3"])
    assert typo.exit_code == 2
    assert "model.params.n_estimatorz" in typo.output and "n_estimators" in typo.output

    evaluated = runner.invoke(app, ["evaluate", str(link), str(penguins_csv)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "targets met" in evaluated.output

    english = runner.invoke(app, ["card", str(link), "--lang", "en"])
    assert english.exit_code == 0, english.output
    card = (link / "MODEL_CARD.md").read_text()
    assert "## Metrics" in card and "## Métricas" not in card
    assert load_metadata(link)["files"]["MODEL_CARD.md"]  # hash re-recorded
    spanish = runner.invoke(app, ["card", str(link)])
    assert spanish.exit_code == 0
    assert "## Métricas" in (link / "MODEL_CARD.md").read_text()


def test_evaluate_with_unknown_labels_exit_2(tmp_path: Path, trained_bundle: Path) -> None:
    data = tmp_path / "new.csv"
    import pandas as pd
    from palmerpenguins import load_penguins

    frame = load_penguins().head(20)
    frame["species"] = "Emperor"
    frame.to_csv(data, index=False)
    result = runner.invoke(app, ["evaluate", str(trained_bundle), str(data)])
    assert result.exit_code == 2
    assert "Emperor" in result.output and pd is not None


def test_evaluate_tampered_bundle_exit_2(
    tmp_path: Path, trained_bundle: Path, penguins_csv: Path
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(trained_bundle, copy, symlinks=True)
    model = copy / "model.skops"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = runner.invoke(app, ["evaluate", str(copy), str(penguins_csv)])
    assert result.exit_code == 2
    assert "model.skops" in result.output and "sha256" in result.output


@pytest.mark.parametrize("lang", ["fr"])
def test_card_rejects_unknown_language(trained_bundle: Path, lang: str) -> None:
    result = runner.invoke(app, ["card", str(trained_bundle), "--lang", lang])
    assert result.exit_code == 2


def test_demo_prepares_and_trains(tmp_path: Path) -> None:
    cwd = Path.cwd()
    try:
        result = runner.invoke(
            app,
            [
                "demo",
                "--dir",
                str(tmp_path),
                "--no-serve",
                "--set",
                "tracking.enabled=false",
                "--set",
                "cv.folds=2",
            ],
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "raw" / "penguins.csv").is_file()
    assert (tmp_path / "configs" / "model_config.yaml").is_file()
    assert os.readlink(tmp_path / "data" / "models" / LATEST_LINK).startswith("model_v1.0.0_")
