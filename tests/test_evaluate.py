"""Tests of mlservice.training.evaluate: metrics per task, the quality gate, cross-validation."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlservice.config import TASK_METRICS, parse_target
from mlservice.errors import DataError
from mlservice.training.evaluate import (
    HIGHER_IS_BETTER,
    compute_metrics,
    cross_validate,
    evaluate_bundle,
    evaluate_gate,
    predict_outputs,
)

CLASSIFICATION_KEYS = ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]
REGRESSION_KEYS = ["mse", "rmse", "mae", "r2", "mape"]

# --------------------------------------------------------------------------- classification

Y_BIN = np.array([0, 0, 1, 1])
PRED_BIN = np.array([0, 1, 1, 1])
PROBA_BIN = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])


def test_binary_classification_metrics_by_hand() -> None:
    got = compute_metrics("classification", Y_BIN, PRED_BIN, PROBA_BIN, n_classes=2)
    assert list(got) == CLASSIFICATION_KEYS
    # class 0: precision 1/1, recall 1/2; class 1: precision 2/3, recall 2/2; support 2 and 2
    p0, r0, p1, r1 = 1.0, 0.5, 2 / 3, 1.0
    f0, f1 = 2 * p0 * r0 / (p0 + r0), 2 * p1 * r1 / (p1 + r1)
    assert got["accuracy"] == pytest.approx(3 / 4)
    assert got["precision"] == pytest.approx((p0 + p1) / 2)
    assert got["recall"] == pytest.approx((r0 + r1) / 2)
    assert got["f1"] == pytest.approx((f0 + f1) / 2)
    assert got["roc_auc"] == pytest.approx(1.0)  # both positives score above both negatives
    expected_log_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    assert got["log_loss"] == pytest.approx(expected_log_loss)
    assert all(isinstance(v, float) for v in got.values())


def test_roc_auc_with_a_misordered_pair() -> None:
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    got = compute_metrics("classification", Y_BIN, proba.argmax(1), proba, n_classes=2)
    # pairs (neg, pos): (0.8, 0.7) wrong, (0.8, 0.9) right, (0.4, 0.7) right, (0.4, 0.9) right
    assert got["roc_auc"] == pytest.approx(3 / 4)


def test_classification_without_probabilities() -> None:
    got = compute_metrics("classification", Y_BIN, PRED_BIN)
    assert got["accuracy"] == pytest.approx(0.75)
    assert got["roc_auc"] is None
    assert got["log_loss"] is None


def test_multiclass_metrics() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.1, 0.6, 0.3],  # wrong: predicts 1
            [0.3, 0.4, 0.3],
            [0.5, 0.25, 0.25],
        ]
    )
    got = compute_metrics("classification", y, proba.argmax(1), proba, n_classes=3)
    assert got["accuracy"] == pytest.approx(5 / 6)
    expected_ll = -np.mean(np.log(proba[np.arange(6), y]))
    assert got["log_loss"] == pytest.approx(expected_ll)
    assert got["roc_auc"] is not None
    assert 0.5 < got["roc_auc"] <= 1.0


def test_roc_auc_is_none_when_a_class_is_absent_from_the_labels() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    got = compute_metrics("classification", y, proba.argmax(1), proba, n_classes=3)
    assert got["accuracy"] == 1.0
    assert got["roc_auc"] is None
    expected_ll = -np.mean(np.log([0.8, 0.6, 0.7, 0.8]))
    assert got["log_loss"] == pytest.approx(expected_ll)


def test_roc_auc_is_none_with_a_single_class() -> None:
    proba = np.array([[0.9, 0.1], [0.8, 0.2]])
    got = compute_metrics("classification", np.array([0, 0]), np.array([0, 0]), proba, n_classes=2)
    assert got["accuracy"] == 1.0
    assert got["roc_auc"] is None
    assert got["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)


def test_log_loss_clips_zero_probabilities() -> None:
    proba = np.array([[1.0, 0.0], [0.0, 1.0]])
    got = compute_metrics("classification", np.array([1, 1]), np.array([0, 1]), proba, n_classes=2)
    assert got["log_loss"] is not None
    assert math.isfinite(got["log_loss"])
    assert got["log_loss"] == pytest.approx(-math.log(1e-15) / 2, rel=1e-6)


def test_n_classes_defaults_to_the_probability_columns() -> None:
    got = compute_metrics("classification", Y_BIN, PRED_BIN, PROBA_BIN)
    assert got["roc_auc"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- regression


def test_regression_metrics_by_hand() -> None:
    got = compute_metrics("regression", [1, 2, 3, 4], [1, 2, 3, 5])
    assert list(got) == REGRESSION_KEYS
    # residuals 0, 0, 0, -1; mean(y) = 2.5, SS_tot = 5, SS_res = 1
    assert got == pytest.approx(
        {"mse": 0.25, "rmse": 0.5, "mae": 0.25, "r2": 1 - 1 / 5, "mape": (1 / 4) / 4}
    )


def test_regression_metrics_of_a_perfect_fit() -> None:
    got = compute_metrics("regression", np.array([2.0, 4.0, 8.0]), np.array([2.0, 4.0, 8.0]))
    assert got == {"mse": 0.0, "rmse": 0.0, "mae": 0.0, "r2": 1.0, "mape": 0.0}


def test_r2_is_none_for_a_single_row() -> None:
    got = compute_metrics("regression", [1.0], [3.0])
    assert got["r2"] is None
    assert got["mae"] == 2.0
    assert got["mape"] == 2.0


def test_non_finite_metrics_become_none() -> None:
    with np.errstate(all="ignore"):
        got = compute_metrics("regression", [1e308, -1e308], [-1e308, 1e308])
    assert got["mse"] is None
    assert got["rmse"] is None


def test_time_series_metrics_include_directional_accuracy() -> None:
    got = compute_metrics("time_series", [1.0, 2.0, 1.5, 3.0], [1.1, 2.2, 1.0, 2.5])
    assert set(TASK_METRICS["time_series"]) <= set(got)


def test_ranking_metrics_include_ndcg() -> None:
    got = compute_metrics("ranking", [3, 2, 1, 0], [0.9, 0.5, 0.4, 0.1])
    assert set(TASK_METRICS["ranking"]) <= set(got)


def test_higher_is_better_covers_the_scores_not_the_errors() -> None:
    assert {"accuracy", "f1", "roc_auc", "r2", "ndcg_at_k"} <= HIGHER_IS_BETTER
    assert not {"mse", "rmse", "mae", "mape", "log_loss"} & HIGHER_IS_BETTER


# --------------------------------------------------------------------------- gate


def _targets(**texts: str) -> list[Any]:
    return [parse_target(metric, text) for metric, text in texts.items()]


def test_gate_passes_when_every_target_is_met() -> None:
    gate = evaluate_gate(_targets(r2=">= 0.75", mape="< 10%"), {"r2": 0.8, "mape": 0.05})
    assert gate.passed is True
    assert gate.failed == []
    assert gate.to_dict() == {"passed": True, "failed": []}
    assert gate.rows == [
        {
            "metric": "r2",
            "op": ">=",
            "value": 0.75,
            "text": ">= 0.75",
            "observed": 0.8,
            "met": True,
        },
        {"metric": "mape", "op": "<", "value": 0.1, "text": "< 10%", "observed": 0.05, "met": True},
    ]


def test_gate_fails_on_a_missed_missing_or_nan_metric() -> None:
    targets = _targets(accuracy=">= 0.85", f1=">= 0.8", roc_auc=">= 0.85", log_loss="< 0.5")
    metrics = {"accuracy": 0.9, "f1": 0.79, "roc_auc": None, "log_loss": math.nan}
    gate = evaluate_gate(targets, metrics)
    assert gate.passed is False
    assert gate.failed == ["f1", "roc_auc", "log_loss"]
    assert [r["observed"] for r in gate.rows][:3] == [0.9, 0.79, None]
    assert gate.to_dict() == {"passed": False, "failed": ["f1", "roc_auc", "log_loss"]}


def test_gate_with_a_metric_that_was_not_computed() -> None:
    gate = evaluate_gate(_targets(directional_accuracy=">= 60%"), {"mape": 0.01})
    assert gate.passed is False
    assert gate.rows[0]["observed"] is None
    assert gate.failed == ["directional_accuracy"]


def test_gate_without_targets_passes() -> None:
    gate = evaluate_gate([], {"r2": -1.0})
    assert (gate.passed, gate.rows, gate.failed) == (True, [], [])


@pytest.mark.parametrize(
    ("text", "observed", "met"),
    [
        (">= 0.5", 0.5, True),
        ("> 0.5", 0.5, False),
        ("< 0.5", 0.5, False),
        ("<= 0.5", 0.5, True),
        (">= 0.5", None, False),
        ("<= 0.5", float("nan"), False),
        ("> -1", 0.0, True),
    ],
)
def test_target_is_met_boundaries(text: str, observed: float | None, met: bool) -> None:
    assert parse_target("x", text).is_met(observed) is met


# --------------------------------------------------------------------------- cross-validation


def test_cross_validate_classification_summary_shape() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)  # noqa: N806
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    seen: list[int] = []
    cv = cross_validate(
        pipe,
        X,
        y.to_numpy(),
        task="classification",
        folds=3,
        seed=0,
        strategy="stratified",
        n_classes=3,
        on_fold=seen.append,
    )
    assert seen == [1, 2, 3]
    assert len(cv.folds) == 3
    assert list(cv.summary) == CLASSIFICATION_KEYS
    for key, stats in cv.summary.items():
        assert set(stats) == {"mean", "std"}
        values = [fold[key] for fold in cv.folds]
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values))
    assert cv.summary["accuracy"]["mean"] > 0.9
    assert cv.oof_residuals is None
    assert not hasattr(pipe[-1], "coef_")  # folds fit clones, never the pipeline itself


def test_cross_validate_is_deterministic_for_a_seed() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)  # noqa: N806
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    kwargs: dict[str, Any] = {
        "task": "classification",
        "folds": 3,
        "strategy": "stratified",
        "n_classes": 3,
    }
    a = cross_validate(pipe, X, y.to_numpy(), seed=1, **kwargs)
    b = cross_validate(pipe, X, y.to_numpy(), seed=1, **kwargs)
    assert a.folds == b.folds


def _linear_frame(n: int = 40) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})  # noqa: N806
    y = 3 * X["a"].to_numpy() - 2 * X["b"].to_numpy() + 10 + rng.normal(scale=0.1, size=n)
    return X, y


def test_cross_validate_regression_residuals_cover_every_row() -> None:
    X, y = _linear_frame()  # noqa: N806
    cv = cross_validate(
        Ridge(alpha=0.01), X, y, task="regression", folds=4, seed=0, strategy="random"
    )
    assert list(cv.summary) == REGRESSION_KEYS
    assert len(cv.folds) == 4
    assert cv.summary["r2"]["mean"] > 0.99
    assert cv.summary["rmse"]["std"] >= 0.0
    assert cv.oof_residuals is not None
    assert cv.oof_residuals.shape == (40,)
    assert not np.isnan(cv.oof_residuals).any()
    assert np.abs(cv.oof_residuals).max() < 1.0


def test_cross_validate_time_series_leaves_the_first_block_without_residuals() -> None:
    X, y = _linear_frame(40)  # noqa: N806
    cv = cross_validate(Ridge(), X, y, task="time_series", folds=4, seed=0, strategy="time")
    assert len(cv.folds) == 4
    assert cv.oof_residuals is not None
    # TimeSeriesSplit(4) on 40 rows validates on the last 4 blocks of 8 rows
    assert np.isnan(cv.oof_residuals[:8]).all()
    assert not np.isnan(cv.oof_residuals[8:]).any()


def test_cross_validate_group_folds_keep_groups_together() -> None:
    X, y = _linear_frame(30)  # noqa: N806
    groups = np.repeat(np.arange(6), 5)
    cv = cross_validate(
        Ridge(), X, y, task="regression", folds=3, seed=0, strategy="group", groups=groups
    )
    assert len(cv.folds) == 3
    assert cv.summary["r2"]["mean"] is not None


def test_cross_validate_summary_skips_none_values() -> None:
    # a single-row validation fold has no r2: it is left out of the mean
    X, y = _linear_frame(4)  # noqa: N806
    cv = cross_validate(Ridge(), X, y, task="regression", folds=4, seed=0, strategy="random")
    assert [fold["r2"] for fold in cv.folds] == [None] * 4
    assert cv.summary["r2"] == {"mean": None, "std": None}
    assert cv.summary["mae"]["mean"] == pytest.approx(np.mean([f["mae"] for f in cv.folds]))


# --------------------------------------------------------------------------- predictions


def test_predict_outputs_per_task() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)  # noqa: N806
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    pred, proba = predict_outputs(pipe, X.head(5), "classification")
    assert pred.shape == (5,)
    assert proba is not None
    assert proba.shape == (5, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    Xr, yr = _linear_frame()  # noqa: N806
    pred, proba = predict_outputs(Ridge().fit(Xr, yr), Xr, "regression")
    assert pred.shape == (40,)
    assert proba is None


# --------------------------------------------------------------------------- evaluate_bundle


def test_evaluate_bundle_on_labelled_data(
    tmp_path: Path, trained_bundle: Path, penguins_csv: Path
) -> None:
    bundle = tmp_path / trained_bundle.name
    shutil.copytree(trained_bundle, bundle, symlinks=True)
    report = evaluate_bundle(bundle, penguins_csv)
    assert report["name"] == "penguins-test"
    assert report["n_rows"] == 344
    assert list(report["metrics"]["test"]) == CLASSIFICATION_KEYS
    assert report["metrics"]["test"]["accuracy"] > 0.9
    assert [row["metric"] for row in report["targets"]] == ["accuracy"]
    assert report["gate"] == {"passed": True, "failed": []}


def test_evaluate_bundle_data_errors(
    tmp_path: Path, trained_bundle: Path, penguins_frame: pd.DataFrame
) -> None:
    bundle = tmp_path / trained_bundle.name
    shutil.copytree(trained_bundle, bundle, symlinks=True)
    with pytest.raises(DataError, match=r"data file '.*nope\.csv' not found"):
        evaluate_bundle(bundle, tmp_path / "nope.csv")
    lacking = tmp_path / "lacking.csv"
    penguins_frame.drop(columns=["island"]).to_csv(lacking, index=False)
    with pytest.raises(DataError, match=r"lacks columns \['island'\] that the bundle needs"):
        evaluate_bundle(bundle, lacking)
    unseen = tmp_path / "unseen.csv"
    penguins_frame.assign(species="Emperor").to_csv(unseen, index=False)
    with pytest.raises(DataError, match=r"labels \['Emperor'\] were not seen in training"):
        evaluate_bundle(bundle, unseen)


def test_evaluate_bundle_reads_a_spreadsheet_csv_with_read_overrides(
    tmp_path: Path, trained_bundle: Path, penguins_csv: Path, penguins_frame: pd.DataFrame
) -> None:
    bundle = tmp_path / trained_bundle.name
    shutil.copytree(trained_bundle, bundle, symlinks=True)
    european = tmp_path / "pingüinos.csv"
    frame = penguins_frame.assign(comentario="pingüino de la isla")
    frame.to_csv(european, sep=";", decimal=",", index=False, encoding="cp1252")
    plain = evaluate_bundle(bundle, penguins_csv)
    # separator and encoding are detected again (they were at training); the decimal mark is
    # not detectable, so it is given like `mlservice evaluate --decimal ,`
    report = evaluate_bundle(bundle, european, read={"decimal": ","})
    assert report["n_rows"] == plain["n_rows"] == 344
    assert report["metrics"]["test"] == pytest.approx(plain["metrics"]["test"])
    assert any("read as cp1252" in note for note in report["notes"])
    parquet = tmp_path / "p.parquet"
    penguins_frame.to_parquet(parquet)
    with pytest.raises(DataError, match=r"apply to CSV files"):
        evaluate_bundle(bundle, parquet, read={"sep": ";"})
