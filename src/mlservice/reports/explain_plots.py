"""The global view of per-prediction explanations, for the model card.

``global_summary`` ranks the input features by their mean absolute contribution over the rows
explained (``Explainer.explain_batch``); ``beeswarm_plot`` draws every row's contribution per
feature, coloured by the feature's value. matplotlib is imported lazily (``train`` extra) and
used through ``Figure`` with the Agg canvas, so no pyplot state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlservice.inference.explain import Contributions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["beeswarm_plot", "global_summary"]

_DPI = 110
_MAX_ROWS = 2_000
_BINS = 60
_HALF_HEIGHT = 0.4  # of a feature's row: points stay within +-0.4 around it


def global_summary(contributions: Contributions, *, top: int | None = None) -> list[dict[str, Any]]:
    """Features by decreasing mean |contribution| over the rows (each row's explained output:
    the predicted class of a classifier): ``feature``, ``mean_abs``, ``mean`` and ``share`` (of
    the total mean |contribution|)."""
    selected = contributions.selected()  # (rows, features)
    mean_abs = np.abs(selected).mean(axis=0)
    mean = selected.mean(axis=0)
    total = float(mean_abs.sum())
    order = np.argsort(-mean_abs, kind="stable")[: top if top is not None else None]
    return [
        {
            "feature": contributions.features[i],
            "mean_abs": float(mean_abs[i]),
            "mean": float(mean[i]),
            "share": float(mean_abs[i] / total) if total > 0 else 0.0,
        }
        for i in order.tolist()
    ]


def beeswarm_plot(
    contributions: Contributions,
    frame: pd.DataFrame,
    path: str | Path,
    *,
    top: int = 20,
    max_rows: int = _MAX_ROWS,
    seed: int = 0,
) -> Path:
    """Write a beeswarm PNG of ``contributions`` (of the rows of ``frame``, in order) to
    ``path``: one row per feature (the ``top`` by mean |contribution|, largest on top), one
    point per explained row at its contribution, coloured from low (blue) to high (red) value
    of the feature; grey where the value is missing or categorical."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(frame) != len(contributions.explained):
        raise ValueError(f"{len(frame)} rows in frame, {len(contributions.explained)} explained")
    selected = contributions.selected()
    rows = np.arange(len(frame))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    ranked = [contributions.features.index(s["feature"]) for s in global_summary(contributions)]
    shown = ranked[:top]
    fig = Figure(figsize=(7.0, 1.2 + 0.38 * len(shown)), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = selected[rows][:, shown]
    span = float(np.ptp(values)) if values.size else 0.0
    for position, feature in enumerate(shown):
        y = len(shown) - 1 - position
        x = values[:, position]
        colour = _colour_values(frame[contributions.features[feature]].iloc[rows])
        offsets = _swarm_offsets(x, span)
        _scatter(ax, x, y + offsets, colour)
    _decorate(ax, [contributions.features[i] for i in shown], contributions.output)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI)
    return out


def _colour_values(column: pd.Series) -> np.ndarray:
    """Each value's rank in [0, 1] among the column's values; NaN where missing or neither a
    number nor a date (drawn grey)."""
    ordered = pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column)
    if not ordered or pd.api.types.is_bool_dtype(column):
        return np.full(len(column), np.nan)
    return np.asarray(column.rank(pct=True).to_numpy(), dtype=np.float64)


def _swarm_offsets(x: np.ndarray, span: float) -> np.ndarray:
    """Vertical offsets that spread points with close values: within each of ``_BINS`` bins
    of the x range, points go 0, +d, -d, +2d, ... with ``d`` so the fullest bin fits."""
    if x.size == 0 or span <= 0:
        return np.zeros(x.size)
    bins = np.floor((x - x.min()) / span * _BINS).astype(np.int64)
    order = np.lexsort((x, bins))
    rank = np.empty(x.size, dtype=np.int64)
    starts = np.searchsorted(bins[order], bins[order], side="left")
    rank[order] = np.arange(x.size) - starts
    counts = np.bincount(bins - bins.min())
    step = _HALF_HEIGHT / max(1.0, counts.max() / 2.0)
    sign = np.where(rank % 2 == 1, 1.0, -1.0)
    return np.asarray(sign * np.ceil(rank / 2.0) * step)


def _scatter(ax: Axes, x: np.ndarray, y: np.ndarray, colour: np.ndarray) -> None:
    missing = np.isnan(colour)
    if missing.any():
        ax.scatter(x[missing], y[missing], s=8, c="#9e9e9e", alpha=0.7, linewidths=0)
    if (~missing).any():
        ax.scatter(
            x[~missing], y[~missing], s=8, c=colour[~missing], cmap="coolwarm",
            vmin=0.0, vmax=1.0, alpha=0.8, linewidths=0,
        )  # fmt: skip


def _decorate(ax: Axes, names: list[str], output: str) -> None:
    ax.axvline(0.0, color="#555555", linewidth=0.8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(list(reversed(names)))
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(f"contribution to the {output.replace('_', '-')} output")
    ax.set_title("Per-row contributions (colour: feature value, low blue → high red)")
    ax.grid(axis="x", alpha=0.3)
