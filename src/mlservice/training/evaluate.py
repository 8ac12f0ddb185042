"""Metrics per task, cross-validation, and the quality gate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

from mlservice.config import Target
from mlservice.training.ranking import ranking_metrics

__all__ = [
    "HIGHER_IS_BETTER",
    "GateResult",
    "compute_metrics",
    "cross_validate",
    "evaluate_bundle",
    "evaluate_gate",
    "make_cv",
    "naive_metrics",
    "predict_outputs",
    "read_labelled_file",
]

HIGHER_IS_BETTER = frozenset(
    {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "r2",
        "directional_accuracy",
        "ndcg_at_k",
        "map_at_k",
    }
)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def predict_outputs(pipeline: Any, X: Any, task: str) -> tuple[np.ndarray, np.ndarray | None]:  # noqa: N803
    """Predictions and, for classifiers that have it, class probabilities."""
    y_pred = np.asarray(pipeline.predict(X))
    proba = None
    if task == "classification" and hasattr(pipeline, "predict_proba"):
        proba = np.asarray(pipeline.predict_proba(X))
    return y_pred, proba


def _classification(
    y: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, n_classes: int
) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "accuracy": skm.accuracy_score(y, y_pred),
        "precision": skm.precision_score(y, y_pred, average="weighted", zero_division=0),
        "recall": skm.recall_score(y, y_pred, average="weighted", zero_division=0),
        "f1": skm.f1_score(y, y_pred, average="weighted", zero_division=0),
        "roc_auc": None,
        "log_loss": None,
    }
    if proba is not None:
        labels = list(range(n_classes))
        present = np.unique(y)
        if len(present) > 1:
            if n_classes == 2:
                out["roc_auc"] = skm.roc_auc_score(y, proba[:, 1])
            elif len(present) == n_classes:
                out["roc_auc"] = skm.roc_auc_score(
                    y, proba, multi_class="ovr", average="weighted", labels=labels
                )
        out["log_loss"] = skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels)
    return out


def _regression(y: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    mse = skm.mean_squared_error(y, y_pred)
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": skm.mean_absolute_error(y, y_pred),
        "r2": skm.r2_score(y, y_pred) if len(y) > 1 else None,
        "mape": skm.mean_absolute_percentage_error(y, y_pred),
    }


def _time_series(y: np.ndarray, y_pred: np.ndarray, reference: np.ndarray | None) -> dict[str, Any]:
    if reference is None:
        # no origin given: one series with horizon 1, the previous actual value is the origin
        reference = np.r_[np.nan, y[:-1]]
    reference = np.asarray(reference, dtype=float)
    known = np.isfinite(reference)
    direction = None
    if known.any():
        actual = np.sign(y[known] - reference[known])
        predicted = np.sign(y_pred[known] - reference[known])
        direction = float(np.mean(actual == predicted))
    mse = skm.mean_squared_error(y, y_pred)
    return {
        "mape": skm.mean_absolute_percentage_error(y, y_pred),
        "directional_accuracy": direction,
        "rmse": math.sqrt(mse),
        "mae": skm.mean_absolute_error(y, y_pred),
    }


def compute_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    proba: np.ndarray | None = None,
    *,
    n_classes: int = 0,
    reference: Any = None,
    groups: Any = None,
    k: int = 10,
) -> dict[str, float | None]:
    """The metrics of one task; values that cannot be computed are None.

    ``reference`` (time_series): the value at each row's forecast origin, ``y[t - horizon]``; the
    direction of a change is measured from it. ``groups``/``k`` (ranking): query id per row
    (None: one query) and the cut-off of ndcg/map.
    """
    y = np.asarray(y_true)
    pred = np.asarray(y_pred)
    raw: dict[str, Any]
    if task == "classification":
        raw = _classification(
            y, pred, proba, n_classes or (proba.shape[1] if proba is not None else 0)
        )
    elif task == "time_series":
        raw = _time_series(y.astype(float), pred.astype(float), reference)
    elif task == "ranking":
        raw = ranking_metrics(y.astype(float), pred.astype(float), groups, k=k)
    else:
        raw = _regression(y.astype(float), pred.astype(float))
    return {k: (None if v is None else _finite(float(v))) for k, v in raw.items()}


def naive_metrics(y_true: Any, reference: Any) -> dict[str, float | None]:
    """Time-series metrics of the naive last-value forecast, keys prefixed ``naive_``."""
    ref = np.asarray(reference, dtype=float)
    got = compute_metrics("time_series", y_true, ref, reference=ref)
    return {f"naive_{key}": value for key, value in got.items()}


def make_cv(task: str, folds: int, *, seed: int, strategy: str, gap: int = 0) -> Any:
    if strategy == "time" or task == "time_series":
        return TimeSeriesSplit(n_splits=folds, gap=gap)
    if strategy == "group" or task == "ranking":
        return GroupKFold(n_splits=folds)
    if task == "classification":
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


@dataclass
class CVResult:
    summary: dict[str, dict[str, float | None]]
    folds: list[dict[str, float | None]]
    oof_residuals: np.ndarray | None = field(default=None)


def cross_validate(
    pipeline: Any,
    X: Any,  # noqa: N803
    y: np.ndarray,
    *,
    task: str,
    folds: int,
    seed: int,
    strategy: str,
    n_classes: int = 0,
    groups: Any = None,
    on_fold: Callable[[int], None] | None = None,
    reference: Any = None,
    times: Any = None,
    gap: int = 0,
    k: int = 10,
    fit_params: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> CVResult:
    """K-fold CV on the training part only: mean and std of every metric.

    time_series: ``times`` makes the folds ``TimeSeriesSplit`` over distinct time steps (every
    series of a timestamp on one side), ``gap`` steps between fit and validation rows, and
    ``reference`` the origin values of the rows. ranking: ``groups`` are the query ids (folds are
    ``GroupKFold``, metrics per query) and ``fit_params(rows)`` gives the ranker's group sizes.
    """
    if task == "time_series" and times is not None:
        from mlservice.training.timeseries import time_folds

        splits: Any = time_folds(times, folds, gap)
    else:
        splitter = make_cv(task, folds, seed=seed, strategy=strategy, gap=gap)
        splits = splitter.split(X, y, groups)
    ref = None if reference is None else np.asarray(reference, dtype=float)
    query = None if groups is None else np.asarray(groups, dtype=object)
    per_fold: list[dict[str, float | None]] = []
    residuals = np.full(len(y), np.nan) if task in ("regression", "time_series") else None
    for i, (tr, va) in enumerate(splits):
        extra = fit_params(tr) if fit_params is not None else {}
        model = clone(pipeline).fit(X.iloc[tr], y[tr], **extra)
        y_pred, proba = predict_outputs(model, X.iloc[va], task)
        per_fold.append(
            compute_metrics(
                task,
                y[va],
                y_pred,
                proba,
                n_classes=n_classes,
                reference=None if ref is None else ref[va],
                groups=None if query is None or task != "ranking" else query[va],
                k=k,
            )
        )
        if residuals is not None:
            residuals[va] = y[va] - y_pred
        if on_fold is not None:
            on_fold(i + 1)
    summary: dict[str, dict[str, float | None]] = {}
    for key in per_fold[0] if per_fold else []:
        values = [float(v) for m in per_fold if (v := m[key]) is not None]
        summary[key] = {
            "mean": float(np.mean(values)) if values else None,
            "std": float(np.std(values)) if values else None,
        }
    return CVResult(summary=summary, folds=per_fold, oof_residuals=residuals)


@dataclass
class GateResult:
    passed: bool
    rows: list[dict[str, Any]]

    @property
    def failed(self) -> list[str]:
        return [r["metric"] for r in self.rows if not r["met"]]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed}


def evaluate_gate(targets: list[Target], test_metrics: dict[str, float | None]) -> GateResult:
    """Compare test metrics with the targets fixed before training."""
    rows = []
    for target in targets:
        observed = test_metrics.get(target.metric)
        row = target.model_dump(exclude_none=True)  # "alias" only when the config used one
        rows.append({**row, "observed": observed, "met": target.is_met(observed)})
    return GateResult(passed=all(r["met"] for r in rows), rows=rows)


def read_labelled_file(
    path: Path, meta: dict[str, Any], read: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV/Parquet file the way the bundle's training file was read; also read notes.

    CSV options come from the bundle (``data.read``): the ones the config set are reused, the
    detected ones detected again; ``read`` (command line ``--sep`` ...) overrides both.
    """
    from mlservice.data.reading import read_csv, resolve_for_new_file
    from mlservice.errors import DataError

    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    if path.suffix.lower() == ".csv":
        trained = (meta.get("data") or {}).get("read")
        options = resolve_for_new_file(path, trained, read)
        return read_csv(path, options, audience="cli"), options.notes
    if read:
        raise DataError(f"--sep/--decimal/--encoding apply to CSV files, not {str(path)!r}")
    try:
        return pd.read_parquet(path), []
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc


def evaluate_bundle(
    bundle_path: Any, data_path: Any, *, read: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Metrics of a saved bundle on new labelled data, gated by the bundle's own targets.

    ``read``: CSV reader options (sep, decimal, thousands, encoding) over the bundle's own.
    """
    from mlservice.bundle import load_bundle
    from mlservice.config import parse_target
    from mlservice.errors import DataError

    bundle = load_bundle(bundle_path)
    meta = bundle.metadata
    path = Path(data_path)
    frame, notes = read_labelled_file(path, meta, read)
    target = meta["target"]["name"]
    features = meta["feature_names"]
    task = meta["task"]
    extra: dict[str, Any] = {}
    if task == "time_series":
        from mlservice.training.timeseries import series_rows

        X, y, reference = series_rows(frame, meta["time_series"])  # noqa: N806
        extra["reference"] = reference
    else:
        needed = [*features, target]
        if task == "ranking":
            needed.append(meta["ranking"]["group_column"])
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise DataError(f"{str(path)!r} lacks columns {missing} that the bundle needs")
        frame = frame.loc[frame[target].notna()].reset_index(drop=True)
        if task == "ranking":
            group = meta["ranking"]["group_column"]
            order = np.argsort(pd.factorize(frame[group], sort=True)[0], kind="stable")
            frame = frame.iloc[order].reset_index(drop=True)
            extra = {"groups": frame[group].to_numpy(dtype=object), "k": meta["ranking"]["k"]}
        X = frame[features]  # noqa: N806
        y = None
    classes = meta["target"].get("classes")
    if y is not None:
        pass
    elif task == "classification":
        lookup = {str(c): i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in frame[target]} - set(lookup))
        if unknown:
            raise DataError(f"labels {unknown} were not seen in training (classes {classes})")
        y = frame[target].astype(str).map(lookup).to_numpy()
    else:
        y = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=float)
    y_pred, proba = predict_outputs(bundle.pipeline, X, task)
    test = compute_metrics(task, y, y_pred, proba, n_classes=len(classes or []), **extra)
    targets = [
        parse_target(row.get("alias") or row["metric"], row["text"])
        for row in meta.get("targets", [])
    ]
    gate = evaluate_gate(targets, test)
    if task == "time_series":
        test.update(naive_metrics(y, extra["reference"]))
    return {
        "name": meta["name"],
        "metrics": {"test": test},
        "targets": gate.rows,
        "gate": gate.to_dict(),
        "n_rows": len(X),
        "notes": notes,
    }
