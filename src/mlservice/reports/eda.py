"""Exploratory data analysis of a dataset, written as HTML + Markdown with plots.

``build_eda_report`` computes every statistic on the full frame (vectorized) and draws the plots
from a random sample of at most ``sample_rows`` rows; ``write_eda_report`` writes ``eda.html``
(self-contained: PNGs inlined as base64 data URIs) and ``eda.md`` with the PNG files beside it.
matplotlib and jinja2 (``train`` extra) are imported when a report is built or written.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlservice.config import PreprocessingConfig
from mlservice.reports.eda_facts import (
    LEAKAGE_THRESHOLD,
    ColumnSummary,
    EdaReport,
    EdaWarning,
    TargetAssociation,
    associate,
    find_warnings,
    numeric_stats,
    summarize_column,
)

__all__ = [
    "LEAKAGE_THRESHOLD",
    "ColumnSummary",
    "EdaReport",
    "EdaWarning",
    "TargetAssociation",
    "build_eda_report",
    "write_eda_report",
]


def build_eda_report(
    frame: pd.DataFrame,
    *,
    target: str,
    task: str,
    types: dict[str, str] | None = None,
    sample_rows: int = 10_000,
    seed: int = 0,
    preprocessing: PreprocessingConfig | None = None,
) -> EdaReport:
    """Analyse ``frame`` (features + ``target``); ``types`` maps columns to mlservice types
    (numeric | categorical | boolean | datetime | text), inferred for columns it does not name.
    """
    if target not in frame.columns:
        raise ValueError(f"target {target!r} is not a column; columns: {list(frame.columns)}")
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be at least 1, got {sample_rows!r}")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    types = _complete_types(frame, types or {}, target=target, task=task)
    classification = task == "classification"
    y = frame[target]
    y_num = None if classification else pd.to_numeric(y, errors="coerce")
    columns = [summarize_column(frame[c], types[c]) for c in frame.columns]
    n_rows = len(frame)
    associations = [
        a
        for c in frame.columns
        if c != target
        and (a := associate(frame[c], types[c], y if classification else y_num, classification))
        is not None
    ]
    associations.sort(key=lambda a: -a.value)
    class_counts = None
    target_stats = None
    if classification:
        counts = y.dropna().astype(str).value_counts()
        class_counts = {str(k): int(v) for k, v in counts.items()}
    elif y_num is not None:
        target_stats = numeric_stats(y_num)
    report = EdaReport(
        target=target,
        task=task,
        n_rows=n_rows,
        n_columns=frame.shape[1],
        columns=columns,
        n_duplicates=int(frame.duplicated().sum()) if n_rows else 0,
        target_missing=int(y.isna().sum()),
        class_counts=class_counts,
        target_stats=target_stats,
        associations=associations,
        warnings=[],
        sample_rows=min(sample_rows, n_rows),
        seed=seed,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
    )
    report.warnings = find_warnings(frame, report, preprocessing)
    sample = frame.sample(n=report.sample_rows, random_state=seed) if report.sampled else frame
    from mlservice.reports.eda_plots import render_eda_plots

    report.plots = render_eda_plots(sample, report)
    return report


def _complete_types(
    frame: pd.DataFrame, types: dict[str, str], *, target: str, task: str
) -> dict[str, str]:
    missing = [c for c in frame.columns if c not in types and c != target]
    inferred: dict[str, str] = {}
    if missing:
        from mlservice.data.types import infer_column_types

        inferred = infer_column_types(frame[missing])
    full = {c: types.get(c) or inferred.get(c, "") for c in frame.columns}
    full[target] = types.get(target) or ("categorical" if task == "classification" else "numeric")
    return full


# --------------------------------------------------------------------------- writing


def write_eda_report(report: EdaReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``eda.html`` (self-contained) and ``eda.md`` + ``eda_*.png`` into ``out_dir``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, png in report.plots.items():
        path = out_dir / f"eda_{name}.png"
        path.write_bytes(png)
        files[name] = path.name
    inline = {
        k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in report.plots.items()
    }
    env = Environment(
        loader=PackageLoader("mlservice.reports", "templates"),
        autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["code"] = _code_spans
    env.filters["pct"] = lambda v: "—" if v is None else f"{float(v):.1%}"
    context: dict[str, Any] = {
        "r": report,
        "title": f"EDA: {report.target} ({report.task})",
        "threshold": LEAKAGE_THRESHOLD,
    }
    html_path, md_path = out_dir / "eda.html", out_dir / "eda.md"
    html_path.write_text(
        env.get_template("eda.html.j2").render(**context, images=inline), encoding="utf-8"
    )
    md_path.write_text(
        env.get_template("eda.md.j2").render(**context, images=files), encoding="utf-8"
    )
    return html_path, md_path


def _code_spans(text: str) -> Any:
    """Escape ``text`` for HTML and turn Markdown `code` spans into <code> elements."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if number != 0 and (abs(number) >= 1e5 or abs(number) < 1e-3):
        return f"{number:.3g}"
    return f"{number:,.4g}" if abs(number) >= 1000 else f"{number:.4g}"
