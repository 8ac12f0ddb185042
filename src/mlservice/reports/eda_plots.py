"""The figures of an EDA report, rendered to PNG bytes with matplotlib ``Figure`` objects.

No pyplot: nothing touches matplotlib's global state, so reports can be built from threads and
notebooks without side effects. Plots are drawn from the (sampled) frame they are given.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlservice.reports.eda_facts import LEAKAGE_THRESHOLD, EdaReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import Formatter

__all__ = ["render_eda_plots"]

_DPI = 100
_GRID_COLUMNS = 3
_MAX_PANELS = 24
_TOP_LEVELS = 10
_BINS = 30
_DISCRETE_LEVELS = 12
_MAX_STACKED_CLASSES = 6
_MAX_BARS = 30
_COLOR = "#4C72B0"
_ALERT = "#C44E52"
_MEASURE_COLORS = {"|r|": "#4C72B0", "eta": "#55A868", "cramers_v": "#8172B2"}
_MEASURE_LABELS = {
    "|r|": "max(|Pearson|, |Spearman|)",
    "eta": "correlation ratio (eta)",
    "cramers_v": "Cramér's V",
}


def render_eda_plots(sample: pd.DataFrame, report: EdaReport) -> dict[str, bytes]:
    """PNG bytes by plot name: missing_values, target, associations, distributions."""
    figures = {
        "missing_values": _missing(report),
        "target": _target(sample, report),
        "associations": _associations(report),
        "distributions": _distributions(sample, report),
    }
    return {name: _png(fig) for name, fig in figures.items() if fig is not None}


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _short(text: object, limit: int = 28) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _missing(report: EdaReport) -> Figure | None:
    missing = list(report.missing.items())[:_MAX_BARS]
    if not missing:
        return None
    names = [_short(name) for name, _ in missing][::-1]
    shares = [count / report.n_rows for _, count in missing][::-1]
    fig, ax = _figure(8.0, 1.2 + 0.35 * len(names))
    bars = ax.barh(names, shares, color=[_ALERT if s > 0.5 else _COLOR for s in shares])
    labels = [f"{count:,} ({count / report.n_rows:.1%})" for _, count in missing][::-1]
    ax.bar_label(bars, labels=labels, padding=3, fontsize=9)
    ax.set_xlim(0, min(1.0, max(shares) * 1.35))
    ax.xaxis.set_major_formatter(_percent_formatter(max(shares)))
    ax.set_xlabel(f"share of the {report.n_rows:,} rows that are missing")
    ax.set_title("Missing values per column")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _target(sample: pd.DataFrame, report: EdaReport) -> Figure | None:
    if report.class_counts is not None:
        counts = list(report.class_counts.items())[:_MAX_BARS]
        total = sum(report.class_counts.values()) or 1
        fig, ax = _figure(8.0, 1.4 + 0.45 * len(counts))
        names = [_short(k) for k, _ in counts][::-1]
        rows = [v for _, v in counts][::-1]
        bars = ax.barh(names, rows, color=_COLOR)
        ax.bar_label(bars, labels=[f"{v:,} ({v / total:.1%})" for v in rows], padding=3)
        ax.set_xlim(0, max(rows) * 1.25)
        ax.set_xlabel("rows (all rows with a target)")
        ax.set_title(f"Class balance of '{report.target}'")
        ax.grid(axis="x", alpha=0.3)
        return fig
    numbers = pd.to_numeric(sample[report.target], errors="coerce").to_numpy(dtype=float)
    values = numbers[np.isfinite(numbers)]
    if not values.size:
        return None
    fig, ax = _figure(8.0, 4.0)
    ax.hist(values, bins=_BINS, color=_COLOR, alpha=0.85)
    ax.axvline(float(np.mean(values)), color=_ALERT, lw=1.5, label=f"mean {np.mean(values):.4g}")
    ax.axvline(
        float(np.median(values)),
        color="black",
        lw=1.2,
        ls="--",
        label=f"median {np.median(values):.4g}",
    )
    ax.legend(fontsize=9)
    ax.set_xlabel(report.target)
    ax.set_ylabel("rows" + (" (sample)" if report.sampled else ""))
    ax.set_title(f"Distribution of the target '{report.target}'")
    ax.grid(alpha=0.3)
    return fig


def _associations(report: EdaReport) -> Figure | None:
    items = report.associations[:_MAX_BARS]
    if not items:
        return None
    fig, ax = _figure(8.0, 1.6 + 0.35 * len(items))
    names = [_short(a.feature) for a in items][::-1]
    values = [a.value for a in items][::-1]
    colors = [_ALERT if a.value >= LEAKAGE_THRESHOLD else _MEASURE_COLORS[a.measure] for a in items]
    bars = ax.barh(names, values, color=colors[::-1])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
    ax.axvline(LEAKAGE_THRESHOLD, color=_ALERT, ls="--", lw=1)
    ax.text(LEAKAGE_THRESHOLD, len(items) - 0.4, " leakage", color=_ALERT, fontsize=8, va="top")
    ax.set_xlim(0, 1.12)
    from matplotlib.patches import Patch

    used = dict.fromkeys(a.measure for a in items)
    handles = [Patch(color=_MEASURE_COLORS[m], label=_MEASURE_LABELS[m]) for m in used]
    if any(a.value >= LEAKAGE_THRESHOLD for a in items):
        handles.append(Patch(color=_ALERT, label=f"leakage suspect (>= {LEAKAGE_THRESHOLD})"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xlabel("strength of the link to the target (0 = none, 1 = determines it)")
    ax.set_title(f"Association of each feature with '{report.target}'")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _distributions(sample: pd.DataFrame, report: EdaReport) -> Figure | None:
    from matplotlib.figure import Figure

    columns = [c for c in report.columns if c.name != report.target][:_MAX_PANELS]
    if not columns:
        return None
    n_cols = min(_GRID_COLUMNS, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.0 * n_rows), dpi=_DPI, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    groups = None
    if report.class_counts is not None and 1 < len(report.class_counts) <= _MAX_STACKED_CLASSES:
        groups = sample[report.target].astype(str).where(sample[report.target].notna())
    for ax, col in zip(axes.ravel(), columns, strict=False):
        series = sample[col.name]
        if col.type == "numeric":
            _numeric_panel(ax, series, groups)
        elif col.type == "text":
            ax.hist(series.dropna().astype(str).str.len(), bins=_BINS, color=_COLOR, alpha=0.85)
            ax.set_xlabel("length (characters)", fontsize=8)
        elif col.type == "datetime":
            stamps = pd.to_datetime(series, errors="coerce", format="mixed").dropna()
            if not stamps.empty:
                ax.hist(stamps.to_numpy(), bins=_BINS, color=_COLOR, alpha=0.85)
                ax.tick_params(axis="x", labelrotation=30)
        else:
            _bar_counts(ax, series)
        missing = f", {col.missing_fraction:.1%} missing" if col.n_missing else ""
        ax.set_title(f"{_short(col.name, 36)} ({col.type}{missing})", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(columns) :]:
        ax.set_visible(False)
    sampled = f" — sample of {report.sample_rows:,} rows" if report.sampled else ""
    by_class = f", numeric features stacked by '{report.target}'" if groups is not None else ""
    fig.suptitle(f"Feature distributions{sampled}{by_class}", fontsize=12)
    if groups is not None:
        legends = [ax.get_legend_handles_labels() for ax in axes.ravel()]
        handles, labels = next(((h, n) for h, n in legends if h), ([], []))
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    return fig


def _numeric_panel(ax: Axes, series: pd.Series, groups: pd.Series | None) -> None:
    values = pd.to_numeric(series, errors="coerce").astype(float)
    finite = values[np.isfinite(values.to_numpy())]
    if finite.empty:
        return
    levels = np.sort(finite.unique())
    if len(levels) <= _DISCRETE_LEVELS and np.all(np.mod(levels, 1) == 0):
        counts = finite.value_counts().reindex(levels, fill_value=0)
        ax.bar([f"{v:g}" for v in levels], counts.to_numpy(), color=_COLOR, width=0.6)
        return
    if groups is None:
        ax.hist(finite.to_numpy(), bins=_BINS, color=_COLOR, alpha=0.85)
        return
    bins = np.histogram_bin_edges(finite.to_numpy(), bins=_BINS).tolist()
    names = sorted(groups.dropna().unique())
    stacks = [finite[groups.loc[finite.index] == name].to_numpy() for name in names]
    ax.hist(stacks, bins=bins, stacked=True, label=[_short(n, 20) for n in names], alpha=0.9)


def _bar_counts(ax: Axes, series: pd.Series) -> None:
    counts = series.dropna().astype(str).value_counts()
    top = counts.head(_TOP_LEVELS)
    labels = [_short(v, 18) for v in top.index]
    other = int(counts.iloc[_TOP_LEVELS:].sum())
    values = [int(v) for v in top.to_numpy()]
    if other:
        labels.append(f"other ({len(counts) - _TOP_LEVELS:,})")
        values.append(other)
    bars = ax.barh(labels[::-1], values[::-1], color=_COLOR, height=0.6)
    total = sum(values) or 1
    labels = [f"{v / total:.0%}" if v >= 0.01 * total else f"{v:,}" for v in values[::-1]]
    ax.bar_label(bars, labels=labels, padding=2, fontsize=7)
    ax.set_xlim(0, max(values, default=1) * 1.2)


def _percent_formatter(largest: float) -> Formatter:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0 if largest >= 0.1 else 1)
