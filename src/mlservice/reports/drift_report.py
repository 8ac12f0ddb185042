"""The drift report of a file: one self-contained HTML page.

``write_drift_report(result, path)`` renders a ``monitoring.MonitorResult`` (or a monitoring
report made with ``DriftWindow.report(detail=True)``): the verdict, the prediction drift and the
estimated accuracy, the live metrics against the bundle's targets when the file had labels, a
table with one row per feature, and for each drifted feature (and a drifted prediction) a plot of
its reference and current distributions. Plots are PNGs embedded as base64 ``data:`` URLs and
the style is inline, so the file opens offline and loads nothing else. matplotlib (the
``train`` extra) is imported when a plot is drawn, through the Agg canvas only (no pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlservice.monitoring.offline import MonitorResult

__all__ = ["render_drift_report", "write_drift_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
tr.drift td { background: #fde8e8; }
.verdict { font-size: 1.2rem; font-weight: bold; }
.bad { color: #b00020; } .good { color: #1b6e20; }
figure { display: inline-block; margin: 0.5rem; }
"""
_FIGSIZE = (7.0, 3.6)
_DPI = 100


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _plot(title: str, distribution: Mapping[str, Any]) -> str | None:
    """A PNG (base64) of the reference and current shares per bin; None without current rows."""
    current = distribution.get("current")
    if current is None:
        return None
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = [str(b) for b in distribution["bins"]]
    x = np.arange(len(bins))
    fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(x - 0.2, distribution["reference"], 0.4, label="reference (training)", color="#7a9cc6")
    ax.bar(x + 0.2, current, 0.4, label="current", color="#d9534f")
    ax.set_xticks(x, bins, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("share of rows")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    # no Software tag: the page should carry no address of any kind
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(css: str, name: str, item: Mapping[str, Any]) -> str:
    title = f"{name}: PSI {_fmt(item.get('score'))} (threshold {_fmt(item.get('threshold'))})"
    png = _plot(title, item.get("distribution") or {})
    if png is None:
        return ""
    return (
        f'<figure><img class="{css}" data-feature="{_esc(name)}" alt="{_esc(title)}" '
        f'src="data:image/png;base64,{png}"><figcaption>{_esc(title)}</figcaption></figure>'
    )


def _feature_rows(features: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        "<tr><th>feature</th><th>kind</th><th>drift</th><th>PSI</th><th>threshold</th>"
        "<th>missing (training → now)</th><th>out of range</th><th>unseen</th>"
        "<th>rejected</th></tr>"
    )
    rows = []
    for name, item in features.items():
        css = "feature drift" if item.get("drift") else "feature"
        missing = f"{_fmt(item.get('reference_missing_rate'))} → {_fmt(item.get('missing_rate'))}"
        rows.append(
            f'<tr class="{css}" data-feature="{_esc(name)}"><td>{_esc(name)}</td>'
            f"<td>{_esc(item.get('kind'))}</td><td>{_fmt(bool(item.get('drift')))}</td>"
            f"<td>{_fmt(item.get('score'))}</td><td>{_fmt(item.get('threshold'))}</td>"
            f"<td>{missing}</td><td>{_fmt(item.get('out_of_range_rate'))}</td>"
            f"<td>{_fmt(item.get('unseen_rate'))}</td><td>{_fmt(item.get('rejected'))}</td></tr>"
        )
    return f'<table class="features">{head}{"".join(rows)}</table>'


def _accuracy(estimate: Mapping[str, Any] | None) -> str:
    if not estimate:
        return ""
    rows = [
        ("estimated accuracy now", estimate.get("value")),
        ("accuracy on the test part", estimate.get("test_accuracy")),
        ("estimate on the test part", estimate.get("test_estimate")),
        ("expected calibration error (test part)", estimate.get("ece")),
        ("trustworthy", estimate.get("trustworthy")),
    ]
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return (
        f"<h2>Estimated accuracy (no labels)</h2><table>{cells}</table>"
        f"<p>{_esc(estimate.get('note'))}. {_esc(estimate.get('assumption'))}</p>"
    )


def _metrics(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return ""
    live, test = metrics.get("live") or {}, metrics.get("test") or {}
    targets = {row.get("metric"): row for row in metrics.get("targets") or []}
    head = "<tr><th>metric</th><th>this file</th><th>test part</th><th>target</th><th>met</th></tr>"
    rows = []
    for name, value in live.items():
        target = targets.get(name) or {}
        rows.append(
            f"<tr><td>{_esc(name)}</td><td>{_fmt(value)}</td><td>{_fmt(test.get(name))}</td>"
            f"<td>{_fmt(target.get('text'))}</td>"
            f"<td>{_fmt(target.get('met')) if target else '—'}</td></tr>"
        )
    gate = metrics.get("gate") or {}
    verdict = "met" if gate.get("passed") else f"NOT met: {', '.join(gate.get('failed') or [])}"
    return (
        f"<h2>Metrics on the labelled rows ({_fmt(metrics.get('rows'))})</h2>"
        f"<table>{head}{''.join(rows)}</table><p>Targets {_esc(verdict)}.</p>"
    )


def _summary(report: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    window = report.get("window") or {}
    drifted = report.get("drifted_features") or []
    if report.get("reference") is None:
        verdict = f'<p class="verdict">{_esc(report.get("note"))}</p>'
    elif not window.get("judged"):
        verdict = f'<p class="verdict">Not judged: {_esc(window.get("note"))}</p>'
    elif report.get("drift"):
        named = ", ".join(drifted) or "the prediction only"
        verdict = f'<p class="verdict bad">Drift: {_esc(named)}</p>'
    else:
        verdict = '<p class="verdict good">No drift</p>'
    facts = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in source.items() if v is not None
    )
    return f"{verdict}<table>{facts}</table><p>{_esc(window.get('note', ''))}</p>"


def render_drift_report(
    result: MonitorResult | Mapping[str, Any], *, title: str | None = None
) -> str:
    """The HTML page (a ``MonitorResult``, or a report dict made with ``detail=True``)."""
    if isinstance(result, Mapping):
        report, metrics, notes = result, None, []
        source: dict[str, Any] = {}
    else:
        report, metrics, notes = result.report, result.metrics, result.notes
        source = {"bundle": result.bundle, "data": result.data, "rows read": result.rows}
    source["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
    features = report.get("features") or {}
    prediction = report.get("prediction") or {}
    plots = [_img("drift-plot", n, item) for n, item in features.items() if item.get("drift")]
    if prediction.get("drift"):
        plots.append(_img("prediction-plot", "prediction", prediction))
    heading = title or "Drift report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(heading)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
        _summary(report, source),
        "".join(f"<p class='note'>{_esc(n)}</p>" for n in notes),
    ]
    if report.get("reference") is not None:
        parts.append(
            f"<h2>Prediction</h2><p>PSI {_fmt(prediction.get('score'))} (threshold "
            f"{_fmt(prediction.get('threshold'))}): "
            f"{'drifted' if prediction.get('drift') else 'stable'}</p>"
        )
        parts.append(_accuracy(report.get("estimated_accuracy")))
    parts.append(_metrics(metrics))
    if features:
        parts.append(f"<h2>Features</h2>{_feature_rows(features)}")
    if plots:
        parts.append(f"<h2>Drifted distributions</h2>{''.join(plots)}")
    unmonitored = report.get("not_monitored") or []
    if unmonitored:
        parts.append(f"<p>Not monitored (datetime/text): {_esc(', '.join(unmonitored))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_drift_report(
    result: MonitorResult | Mapping[str, Any], path: str | Path, *, title: str | None = None
) -> Path:
    """Write the page to ``path`` (parents created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_drift_report(result, title=title), encoding="utf-8")
    return target
