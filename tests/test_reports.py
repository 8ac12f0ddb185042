"""Tests of mlservice.reports: real matplotlib PNGs and the Markdown model card."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlservice.reports import render_model_card, render_plots, write_model_card

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SPANISH_HEADINGS = [
    "# Model Card: penguin-species",
    "## Información General",
    "## Descripción",
    "## Datos de Entrenamiento",
    "## Arquitectura",
    "## Hiperparámetros",
    "## Métricas",
    "## Limitaciones",
    "## Uso",
    "## Changelog",
]
ENGLISH_HEADINGS = [
    "# Model Card: penguin-species",
    "## General Information",
    "## Description",
    "## Training Data",
    "## Architecture",
    "## Hyperparameters",
    "## Metrics",
    "## Limitations",
    "## Usage",
    "## Changelog",
]


# --------------------------------------------------------------------------- fixtures


def _metadata() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "penguin-species",
        "version": "1.0.0",
        "task": "classification",
        "created_at": "2026-11-26T23:59:00+00:00",
        "bundle_id": "model_v1.0.0_2026-11-26",
        "description": "Predicts the penguin species.",
        "target": {"name": "species", "classes": ["Adelie", "Chinstrap", "Gentoo"]},
        "features": [
            {
                "name": "bill_length_mm",
                "type": "numeric",
                "dtype": "float64",
                "nullable": False,
                "categories": None,
                "min": 32.1,
                "max": 59.6,
                "example": 44.5,
                "missing_fraction": 0.0,
            },
            {
                "name": "island",
                "type": "categorical",
                "dtype": "object",
                "nullable": False,
                "categories": ["Biscoe", "Dream", "Torgersen"],
                "min": None,
                "max": None,
                "example": "Biscoe",
                "missing_fraction": 0.0,
            },
        ],
        "model": {
            "type": "lightgbm",
            "estimator": "lightgbm.sklearn.LGBMClassifier",
            "params": {"n_estimators": 300, "learning_rate": 0.05},
        },
        "preprocessing": {
            "numeric": {"impute": "median", "scale": "standard"},
            "categorical": {"impute": "most_frequent", "encode": "onehot"},
        },
        "split": {
            "strategy": "stratified",
            "test_size": 0.2,
            "seed": 42,
            "n_train": 1000,
            "n_test": 250,
        },
        "data": {
            "source": "data/raw/penguins.csv",
            "fingerprint": {"sha256": "ab12cd34", "dvc_md5": None},
            "n_rows": 1250,
            "n_columns": 3,
            "class_balance": {"Adelie": 0.44, "Chinstrap": 0.2, "Gentoo": 0.36},
        },
        "metrics": {
            "train": {"accuracy": 0.99, "f1": 0.985},
            "test": {"accuracy": 0.98, "f1": 0.97},
            "cv": {"accuracy": {"mean": 0.97, "std": 0.01}, "f1": {"mean": 0.96, "std": 0.02}},
        },
        "targets": [
            {
                "metric": "accuracy",
                "op": ">=",
                "value": 0.85,
                "text": ">= 0.85",
                "observed": 0.98,
                "met": True,
            }
        ],
        "gate": {"passed": True, "failed": []},
        "plots": ["plots/confusion_matrix.png", "plots/roc_curve.png"],
        "git_commit": "abc123",
        "versions": {"python": "3.11.7", "mlservice": "0.1.0"},
        "mlflow": {"run_id": "run-42", "experiment": "penguin-species"},
    }


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1000, path


def _classification(n_classes: int, n: int = 300) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y_true] += 2.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "y_true": y_true,
        "y_pred": proba.argmax(axis=1),
        "proba": proba,
        "classes": [f"class_{i}" for i in range(n_classes)],
    }


def _importance(n: int = 25) -> list[dict[str, Any]]:
    return [{"feature": f"feature_{i}", "importance": 1.0 / (i + 1), "std": 0.05} for i in range(n)]


# --------------------------------------------------------------------------- plots


def test_importing_reports_does_not_import_matplotlib_or_jinja2() -> None:
    code = (
        "import sys, mlservice.reports; "
        "bad = [m for m in ('matplotlib', 'jinja2') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_binary_classification_plots(tmp_path: Path) -> None:
    paths = render_plots(
        task="classification", importance=_importance(), out_dir=tmp_path, **_classification(2)
    )
    assert set(paths) == {
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
    }
    for rel in paths:
        _assert_png(tmp_path / Path(rel).name)


def test_multiclass_plots_skip_calibration(tmp_path: Path) -> None:
    paths = render_plots(
        task="classification", importance=None, out_dir=tmp_path, **_classification(4)
    )
    assert paths == ["plots/confusion_matrix.png", "plots/roc_curve.png", "plots/pr_curve.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confusion_matrix.png",
        "pr_curve.png",
        "roc_curve.png",
    ]
    for rel in paths:
        _assert_png(tmp_path / Path(rel).name)


def test_classification_without_proba_only_confusion_matrix(tmp_path: Path) -> None:
    data = _classification(3)
    data["proba"] = None
    paths = render_plots(task="classification", importance=None, out_dir=tmp_path, **data)
    assert paths == ["plots/confusion_matrix.png"]
    _assert_png(tmp_path / "confusion_matrix.png")


@pytest.mark.parametrize("task", ["regression", "time_series"])
def test_regression_plots(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(3)
    y_true = rng.normal(100.0, 20.0, size=12_000)  # more than the 5,000 sampled points
    y_pred = y_true + rng.normal(0.0, 5.0, size=y_true.size)
    paths = render_plots(
        task=task,
        y_true=y_true,
        y_pred=y_pred,
        proba=None,
        classes=None,
        importance=_importance(5),
        out_dir=tmp_path / "plots",
    )
    assert paths == [
        "plots/residuals.png",
        "plots/predicted_vs_actual.png",
        "plots/feature_importance.png",
    ]
    for rel in paths:
        _assert_png(tmp_path / rel)


def test_single_class_roc_is_skipped_without_error(tmp_path: Path) -> None:
    n = 50
    y_true = np.zeros(n, dtype=int)
    proba = np.column_stack([np.linspace(0.2, 0.9, n), np.linspace(0.8, 0.1, n)])
    paths = render_plots(
        task="classification",
        y_true=y_true,
        y_pred=proba.argmax(axis=1),
        proba=proba,
        classes=["no", "yes"],
        importance=None,
        out_dir=tmp_path,
    )
    assert "plots/roc_curve.png" not in paths
    assert "plots/calibration.png" not in paths
    assert paths == ["plots/confusion_matrix.png"]
    assert not (tmp_path / "roc_curve.png").exists()
    _assert_png(tmp_path / "confusion_matrix.png")


def test_multiclass_roc_with_absent_class_still_drawn(tmp_path: Path) -> None:
    data = _classification(3)
    data["y_true"] = np.where(data["y_true"] == 2, 0, data["y_true"])  # class 2 never occurs
    paths = render_plots(task="classification", importance=None, out_dir=tmp_path, **data)
    assert "plots/roc_curve.png" in paths
    _assert_png(tmp_path / "roc_curve.png")


def test_proba_with_wrong_shape_is_rejected(tmp_path: Path) -> None:
    data = _classification(3)
    data["proba"] = data["proba"][:, :2]
    with pytest.raises(ValueError, match="proba has shape"):
        render_plots(task="classification", importance=None, out_dir=tmp_path, **data)


# --------------------------------------------------------------------------- model card


def _positions(text: str, needles: list[str]) -> list[int]:
    positions = []
    for needle in needles:
        match = re.search(rf"^{re.escape(needle)}$", text, flags=re.MULTILINE)
        assert match is not None, f"missing heading {needle!r}"
        positions.append(match.start())
    return positions


def test_card_has_spanish_headings_in_order() -> None:
    card = render_model_card(_metadata())
    positions = _positions(card, SPANISH_HEADINGS)
    assert positions == sorted(positions)
    assert "| Métrica | Train | Test | CV (media ± std) | Objetivo | Cumple |" in card


def test_card_has_english_headings_with_lang_en() -> None:
    card = render_model_card(_metadata(), lang="en")
    positions = _positions(card, ENGLISH_HEADINGS)
    assert positions == sorted(positions)
    assert "| Metric | Train | Test | CV (mean ± std) | Target | Met |" in card
    assert "## Información General" not in card


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        render_model_card(_metadata(), lang="fr")


def test_metrics_table_rows_and_marks() -> None:
    meta = _metadata()
    meta["targets"].append(
        {
            "metric": "f1",
            "op": ">=",
            "value": 0.99,
            "text": ">= 0.99",
            "observed": 0.97,
            "met": False,
        }
    )
    meta["gate"] = {"passed": False, "failed": ["f1"]}
    card = render_model_card(meta)
    assert "| accuracy | 0.9900 | 0.9800 | 0.9700 ± 0.0100 | >= 0.85 | ✅ |" in card
    assert "| f1 | 0.9850 | 0.9700 | 0.9600 ± 0.0200 | >= 0.99 | ❌ |" in card
    gate_line = next(line for line in card.splitlines() if line.startswith("**Quality gate:**"))
    assert "❌" in gate_line
    assert "f1" in gate_line
    assert "accuracy" not in gate_line
    assert "Objetivos no cumplidos: f1" in card


def test_metric_without_target_and_percent_metrics() -> None:
    meta = _metadata()
    meta["task"] = "time_series"
    meta["metrics"] = {"train": {"mape": 0.05}, "test": {"mape": 0.0523, "rmse": 3.0}, "cv": {}}
    meta["targets"] = []
    meta["gate"] = None
    card = render_model_card(meta)
    assert "| mape | 0.0500 (5.00%) | 0.0523 (5.23%) | — | — | — |" in card
    assert "| rmse | — | 3.0000 | — | — | — |" in card
    assert "Balance de clases" not in card  # only for classification


def test_gate_passed_line() -> None:
    card = render_model_card(_metadata(), lang="en")
    assert "**Quality gate:** ✅ passed" in card


def test_plots_are_embedded() -> None:
    card = render_model_card(_metadata())
    assert "![Matriz de confusión](plots/confusion_matrix.png)" in card
    assert "![Curva ROC](plots/roc_curve.png)" in card


def test_overfitting_warning_when_gap_is_large() -> None:
    meta = _metadata()
    meta["metrics"]["train"]["accuracy"] = 1.0
    meta["metrics"]["test"]["accuracy"] = 0.80
    card = render_model_card(meta)
    assert "Posible sobreajuste en accuracy: train = 1.0000 frente a test = 0.8000." in card
    assert "sobreajuste en f1" not in card  # gap 0.015 is small
    english = render_model_card(meta, lang="en")
    assert "Possible overfitting on accuracy: train = 1.0000 versus test = 0.8000." in english


def test_no_overfitting_warning_when_gap_is_small() -> None:
    card = render_model_card(_metadata())
    assert "sobreajuste" not in card
    assert "No se detectó ninguna limitación" in card
    assert "solo se ha validado con datos similares" in card


def test_error_metric_gap_uses_ratio() -> None:
    meta = _metadata()
    meta["task"] = "regression"
    meta["targets"] = []
    meta["metrics"] = {
        "train": {"rmse": 1.0, "mae": 1.0, "r2": 0.9},
        "test": {"rmse": 1.5, "mae": 1.2, "r2": 0.88},
    }
    card = render_model_card(meta, lang="en")
    assert "Possible overfitting on rmse" in card
    assert "overfitting on mae" not in card
    assert "overfitting on r2" not in card


def test_limitations_from_facts() -> None:
    meta = _metadata()
    meta["data"]["class_balance"] = {"a": 0.9, "b": 0.08, "c": 0.02}
    meta["split"]["n_test"] = 40
    meta["features"][0]["missing_fraction"] = 0.125
    card = render_model_card(meta, lang="en")
    limitations = card.split("## Limitations")[1].split("## Usage")[0]
    assert "Class imbalance: the smallest class 'c' is 2.0%" in limitations
    assert "Small test set (40 rows)" in limitations
    assert "`bill_length_mm` (12.5%)" in limitations
    assert "No limitation was detected" not in limitations
    assert "only validated on data like its training data" in limitations


def test_usage_has_serve_curl_and_python() -> None:
    card = render_model_card(_metadata())
    assert "mlservice serve <bundle>" in card
    assert "http://localhost:8000/api/v1/predict" in card
    body = re.search(r"-d '(.*)'", card)
    assert body is not None
    assert json.loads(body.group(1)) == {"features": {"bill_length_mm": 44.5, "island": "Biscoe"}}
    assert "from mlservice.inference import Predictor" in card
    assert "predictor.predict_records(" in card


def test_changelog_lists_history_newest_first() -> None:
    current = _metadata()
    current.update(version="1.2.0", bundle_id="model_v1.2.0_2026-11-26")
    older = []
    for version, day, acc, passed in [
        ("1.1.0", "2026-10-02", 0.91, True),
        ("1.0.0", "2026-09-01", 0.80, False),
    ]:
        old = copy.deepcopy(_metadata())
        old.update(
            version=version,
            bundle_id=f"model_v{version}_{day}",
            created_at=f"{day}T10:00:00+00:00",
            gate={"passed": passed, "failed": []},
        )
        old["metrics"]["test"]["accuracy"] = acc
        older.append(old)
    card = render_model_card(current, history=[current, *older])  # current deduplicated
    changelog = card.split("## Changelog")[1]
    rows = [line for line in changelog.splitlines() if line.startswith("| 20")]
    assert rows == [
        "| 2026-11-26 | 1.2.0 | `model_v1.2.0_2026-11-26` | 0.9800 | ✅ superado |",
        "| 2026-10-02 | 1.1.0 | `model_v1.1.0_2026-10-02` | 0.9100 | ✅ superado |",
        "| 2026-09-01 | 1.0.0 | `model_v1.0.0_2026-09-01` | 0.8000 | ❌ no superado |",
    ]
    assert "accuracy (test)" in changelog


def test_minimal_metadata_renders() -> None:
    card = render_model_card({"name": "bare"})
    assert card.startswith("# Model Card: bare\n")
    assert "## Changelog" in card
    assert "No se detectó ninguna limitación" in card


def test_write_model_card_is_atomic_and_matches_render(tmp_path: Path) -> None:
    meta = _metadata()
    (tmp_path / "MODEL_CARD.md").write_text("stale", encoding="utf-8")
    path = write_model_card(tmp_path, meta, lang="en")
    assert path == tmp_path / "MODEL_CARD.md"
    assert path.read_text(encoding="utf-8") == render_model_card(meta, lang="en")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MODEL_CARD.md"]  # no temp file left


def test_card_names_the_onnx_runtime_and_folded_trees() -> None:
    meta = _metadata()
    meta["onnx"] = {
        "converted": True,
        "verified": True,
        "verified_rows": 69,
        "max_abs_diff": 3.5e-7,
        "tolerance": {"probabilities_atol": 1e-4, "labels": "equal"},
        "optimizations": {"constant_trees_folded": 349},
    }
    card = render_model_card(meta, lang="en")
    assert "ONNX (onnxruntime), verified against scikit-learn on 69 test rows" in card
    assert "349 constant trees folded into the graph's base values" in card
    meta["onnx"]["optimizations"] = {"constant_trees_folded": 0}
    assert "constant trees folded" not in render_model_card(meta, lang="en")
    meta["onnx"] = {"converted": False, "verified": False, "reason": "conversion failed: X"}
    assert "scikit-learn (no ONNX: conversion failed: X)" in render_model_card(meta, lang="en")


def test_metric_written_as_an_alias_is_named_in_the_targets_table() -> None:
    meta = _metadata()
    meta["targets"].append(
        {
            "metric": "f1",
            "alias": "f1_score",
            "op": ">=",
            "value": 0.9,
            "text": ">= 0.9",
            "observed": 0.97,
            "met": True,
        }
    )
    spanish = render_model_card(meta)
    assert (
        "| f1 (escrito `f1_score` en la configuración) | 0.9850 | 0.9700 | 0.9600 ± 0.0200 "
        "| >= 0.9 | ✅ |" in spanish
    )
    english = render_model_card(meta, lang="en")
    assert "| f1 (written as `f1_score` in the config) | 0.9850 | 0.9700 |" in english
    assert "| accuracy | 0.9900 |" in english  # a canonical name is shown as it is


def _training_data(card: str) -> str:
    return card.split("## Datos de Entrenamiento", 1)[1].split("## Arquitectura", 1)[0]


def test_card_training_data_shows_the_dvc_state() -> None:
    meta = _metadata()
    fingerprint = meta["data"]["fingerprint"]
    md5 = "c7bec6a2edc60b03ab6ef7c9df4093ba"
    fingerprint.update(dvc_md5=md5, dvc_recorded_md5=md5, dvc_state="tracked")
    section = _training_data(render_model_card(meta))
    assert f"- **Versión DVC:** ✅ coincide con su archivo `.dvc`; md5 `{md5}`" in section

    fingerprint.update(dvc_md5=None, dvc_state="modified")
    section = _training_data(render_model_card(meta))
    assert "- **Versión DVC:** ⚠️ modificado desde `dvc add`" in section
    assert f"registra el md5 `{md5}`, que NO es el de los datos de entrenamiento" in section
    assert "DVC md5" not in section  # the stale md5 is not presented as the data's
    english = render_model_card(meta, lang="en")
    assert f"⚠️ modified since `dvc add`: the `.dvc` file records md5 `{md5}`" in english

    fingerprint.update(dvc_recorded_md5=None, dvc_state="untracked")
    section = _training_data(render_model_card(meta))
    assert "- **Versión DVC:** sin seguimiento DVC (no hay archivo `.dvc`)" in section
    meta["data"]["source"] = "builtin:penguins"
    assert "Versión DVC" not in render_model_card(meta)  # no file, nothing to version


def test_card_of_an_older_bundle_keeps_its_dvc_md5_row() -> None:
    meta = _metadata()
    meta["data"]["fingerprint"] = {"sha256": "ab12cd34", "dvc_md5": "abc123"}
    section = _training_data(render_model_card(meta))
    assert "- **DVC md5:** `abc123`" in section
    assert "Versión DVC" not in section


def test_card_training_data_shows_how_the_csv_was_read() -> None:
    meta = _metadata()
    meta["data"]["read"] = {
        "sep": ";",
        "decimal": ",",
        "thousands": ".",
        "encoding": "cp1252",
        "quotechar": '"',
        "na_values": None,
        "detected": ["encoding", "sep"],
    }
    section = _training_data(render_model_card(meta))
    assert (
        "- **Lectura del CSV:** sep `;` (detectado), decimal `,`, thousands `.`, "
        "encoding `cp1252` (detectado)" in section
    )
    meta["data"]["read"]["sep"] = "\t"
    assert "sep `\\t` (detected)" in render_model_card(meta, lang="en")
