"""Evaluation plots of a trained model, written as PNG files into a bundle's ``plots/`` directory.

matplotlib is imported lazily (it belongs to the ``train`` extra) and only through
``matplotlib.figure.Figure``, so no global pyplot/backend state is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["render_plots"]

logger = logging.getLogger(__name__)

_FIGSIZE = (6.0, 4.5)
_DPI = 110
_MAX_POINTS = 5_000
_TOP_FEATURES = 20
_SEED = 0
_REGRESSION_TASKS = ("regression", "time_series")


def render_plots(
    *,
    task: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[str] | None,
    importance: list[dict[str, Any]] | None,
    out_dir: Path,
) -> list[str]:
    """Write the plots that fit ``task`` into ``out_dir``; return their ``plots/<file>`` paths.

    Plots that cannot be drawn from the data (e.g. ROC with a single class in ``y_true``) are
    skipped. ``ranking`` (and any task other than classification/regression/time_series) only
    gets the feature-importance plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} rows but y_pred has {y_pred.shape[0]}")

    written: list[str] = []

    def save(fig: Figure | None, filename: str) -> None:
        if fig is None:
            logger.info("plot %s skipped: not drawable from this data", filename)
            return
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=_DPI)
        written.append(f"plots/{filename}")

    if task == "classification":
        codes_true = y_true.astype(int)
        codes_pred = y_pred.astype(int)
        names = _class_names(classes, codes_true, codes_pred, proba)
        probs = _check_proba(proba, len(names), codes_true.shape[0])
        save(_confusion_matrix(codes_true, codes_pred, names), "confusion_matrix.png")
        if probs is not None:
            save(_roc(codes_true, probs, names), "roc_curve.png")
            save(_pr(codes_true, probs, names), "pr_curve.png")
            if len(names) == 2:
                save(_calibration(codes_true, probs[:, 1], names[1]), "calibration.png")
    elif task in _REGRESSION_TASKS:
        actual, predicted = _finite_pairs(y_true, y_pred)
        if actual.size:
            total = int(actual.size)
            actual, predicted = _sample(actual, predicted)
            save(_residuals(actual, predicted, total), "residuals.png")
            save(_predicted_vs_actual(actual, predicted, total), "predicted_vs_actual.png")
    if importance:
        save(_feature_importance(importance), "feature_importance.png")
    return written


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float] = _FIGSIZE) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=_DPI)
    return fig, fig.add_subplot(1, 1, 1)


def _class_names(
    classes: list[str] | None,
    codes_true: np.ndarray,
    codes_pred: np.ndarray,
    proba: np.ndarray | None,
) -> list[str]:
    if classes:
        return [str(c) for c in classes]
    n = int(max(codes_true.max(initial=0), codes_pred.max(initial=0))) + 1
    if proba is not None and np.ndim(proba) == 2:
        n = max(n, int(np.shape(proba)[1]))
    return [str(i) for i in range(max(n, 2))]


def _check_proba(proba: np.ndarray | None, n_classes: int, n_rows: int) -> np.ndarray | None:
    """Return probabilities as a (n, n_classes) float array, or None when there are none."""
    if proba is None:
        return None
    probs = np.asarray(proba, dtype=float)
    if probs.ndim == 1 and n_classes == 2:
        probs = np.column_stack([1.0 - probs, probs])
    if probs.ndim != 2 or probs.shape != (n_rows, n_classes):
        raise ValueError(f"proba has shape {probs.shape}, expected ({n_rows}, {n_classes})")
    return probs


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _sample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= _MAX_POINTS:
        return x, y
    idx = np.random.default_rng(_SEED).choice(x.size, size=_MAX_POINTS, replace=False)
    return x[idx], y[idx]


def _confusion_matrix(codes_true: np.ndarray, codes_pred: np.ndarray, names: list[str]) -> Figure:
    n = len(names)
    matrix = np.zeros((n, n), dtype=int)
    valid = (codes_true >= 0) & (codes_true < n) & (codes_pred >= 0) & (codes_pred < n)
    np.add.at(matrix, (codes_true[valid], codes_pred[valid]), 1)

    side = min(max(4.5, 0.45 * n + 2.5), 12.0)
    fig, ax = _new_figure((side + 1.5, side))
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    tilt = n > 3 or max((len(name) for name in names), default=0) > 10
    ax.set_xticks(
        range(n), labels=names, rotation=45 if tilt else 0, ha="right" if tilt else "center"
    )
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(f"Confusion matrix (n = {int(matrix.sum())})")
    if n <= 30:
        threshold = matrix.max() / 2.0 if matrix.size else 0.0
        fontsize = 10 if n <= 10 else 7
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if matrix[i, j] > threshold else "black",
                )
    return fig


def _curves(
    codes_true: np.ndarray, probs: np.ndarray, names: list[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, binary truth, score) pairs: the positive class if binary, else one-vs-rest."""
    keep = np.all(np.isfinite(probs), axis=1)
    truth, scores = codes_true[keep], probs[keep]
    classes = [1] if len(names) == 2 else list(range(len(names)))
    out = []
    for k in classes:
        positive = truth == k
        if positive.all() or not positive.any():  # a single class: curve undefined
            continue
        out.append((names[k], positive.astype(int), scores[:, k]))
    return out


def _legend(ax: Axes, n: int) -> None:
    ax.legend(
        loc="lower right" if n <= 6 else "best",
        fontsize=8 if n <= 6 else 6,
        ncol=1 if n <= 8 else 2,
    )


def _roc(codes_true: np.ndarray, probs: np.ndarray, names: list[str]) -> Figure | None:
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = _curves(codes_true, probs, names)
    if not curves:
        return None
    fig, ax = _new_figure()
    for label, truth, score in curves:
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, lw=1.8, label=f"{label} (AUC = {roc_auc_score(truth, score):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="Chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curve" + (" (one-vs-rest)" if len(names) > 2 else ""))
    ax.grid(alpha=0.3)
    _legend(ax, len(curves) + 1)
    return fig


def _pr(codes_true: np.ndarray, probs: np.ndarray, names: list[str]) -> Figure | None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    curves = _curves(codes_true, probs, names)
    if not curves:
        return None
    fig, ax = _new_figure()
    for label, truth, score in curves:
        precision, recall, _ = precision_recall_curve(truth, score)
        ap = average_precision_score(truth, score)
        ax.step(recall, precision, where="post", lw=1.8, label=f"{label} (AP = {ap:.3f})")
    if len(curves) == 1:
        prevalence = float(curves[0][1].mean())
        ax.axhline(prevalence, ls="--", color="grey", lw=1, label=f"Baseline ({prevalence:.2f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.05)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title("Precision-recall curve" + (" (one-vs-rest)" if len(names) > 2 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8 if len(curves) <= 6 else 6)
    return fig


def _calibration(codes_true: np.ndarray, score: np.ndarray, positive: str) -> Figure | None:
    from sklearn.calibration import calibration_curve

    keep = np.isfinite(score)
    truth, score = (codes_true[keep] == 1).astype(int), np.clip(score[keep], 0.0, 1.0)
    if truth.size == 0 or truth.all() or not truth.any():
        return None
    frac_pos, mean_pred = calibration_curve(truth, score, n_bins=10, strategy="uniform")
    fig, ax = _new_figure()
    hist = ax.twinx()
    hist.hist(score, bins=10, range=(0.0, 1.0), color="grey", alpha=0.2)
    hist.set_ylabel("Count", color="grey")
    hist.tick_params(axis="y", colors="grey")
    ax.set_zorder(hist.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="Perfectly calibrated")
    ax.plot(mean_pred, frac_pos, marker="o", lw=1.8, label="Model")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(f"Mean predicted probability of '{positive}'")
    ax.set_ylabel("Observed fraction of positives")
    ax.set_title("Calibration (reliability diagram)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _count(shown: int, total: int) -> str:
    return f"n = {total}" if shown == total else f"{shown} of {total} points shown"


def _residuals(actual: np.ndarray, predicted: np.ndarray, total: int) -> Figure:
    residual = actual - predicted
    fig, ax = _new_figure()
    ax.scatter(predicted, residual, s=10, alpha=0.5, edgecolors="none")
    ax.axhline(0.0, color="red", ls="--", lw=1.2)
    ax.set_xlabel("Predicted value")
    ax.set_ylabel("Residual (actual - predicted)")
    ax.set_title(f"Residuals vs predicted ({_count(actual.size, total)})")
    ax.grid(alpha=0.3)
    return fig


def _predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray, total: int) -> Figure:
    low = float(min(actual.min(), predicted.min()))
    high = float(max(actual.max(), predicted.max()))
    if low == high:
        low, high = low - 1.0, high + 1.0
    fig, ax = _new_figure()
    ax.scatter(actual, predicted, s=10, alpha=0.5, edgecolors="none")
    ax.plot([low, high], [low, high], color="red", ls="--", lw=1.2, label="Identity (y = x)")
    ax.set_xlabel("Actual value")
    ax.set_ylabel("Predicted value")
    ax.set_title(f"Predicted vs actual ({_count(actual.size, total)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _feature_importance(importance: list[dict[str, Any]]) -> Figure | None:
    rows = []
    for item in importance:
        value = _as_float(item.get("importance"))
        if value is None:
            continue
        rows.append((str(item.get("feature", "?")), value, _as_float(item.get("std")) or 0.0))
    rows.sort(key=lambda row: row[1], reverse=True)
    rows = rows[:_TOP_FEATURES]
    if not rows:
        return None
    rows.reverse()  # barh draws bottom-up: most important on top
    labels = [name if len(name) <= 30 else name[:29] + "…" for name, _, _ in rows]
    fig, ax = _new_figure((6.0, max(4.5, 0.28 * len(rows) + 1.4)))
    ax.barh(
        range(len(rows)),
        [r[1] for r in rows],
        xerr=[r[2] for r in rows],
        color="tab:blue",
        alpha=0.8,
        ecolor="black",
        capsize=2,
    )
    ax.set_yticks(range(len(rows)), labels=labels, fontsize=8)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("Importance (mean ± std)")
    ax.set_title(f"Feature importance (top {len(rows)})")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
