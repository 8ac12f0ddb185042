"""``mlservice monitor BUNDLE DATA``: drift of a file against the bundle's training reference.

The same statistics as the served API's ``GET /api/v1/monitoring`` (``mlservice.monitoring``), on
a CSV or Parquet file read in chunks; when the file has the target column, the bundle's targets
are checked on it too (the gate, run on new data). Exit 0 when nothing drifted and the targets
hold, 3 otherwise, like ``train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mlservice.commands.predict import (
    DECIMAL_OPTION,
    ENCODING_OPTION,
    SEP_OPTION,
    THOUSANDS_OPTION,
    read_overrides,
)

__all__ = ["monitor"]

_EXIT_DRIFT = 3


def _score(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _rate(value: Any) -> str:
    return "—" if value is None else f"{value:.1%}"


def _drift_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("feature", "method", "score", "threshold", "drift", "missing", "outside"):
        table.add_column(column)
    rows = dict(report.get("features") or {})
    if report.get("prediction"):
        rows["(prediction)"] = report["prediction"]
    for name, item in rows.items():
        outside = item.get("out_of_range_rate")
        if outside is None:
            outside = item.get("unseen_rate")
        table.add_row(
            name,
            str(item.get("method", "")),
            _score(item.get("score")),
            _score(item.get("threshold")),
            "[bold red]yes[/]" if item.get("drift") else "no",
            _rate(item.get("missing_rate")),
            _rate(outside),
        )
    return table


def monitor(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or model_latest).")],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet file of new rows.")],
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write a self-contained HTML drift report here."),
    ] = None,
    min_rows: Annotated[
        int, typer.Option("--min-rows", min=1, help="Rows needed before drift is judged.")
    ] = 500,
    sep: Annotated[str | None, SEP_OPTION] = None,
    decimal: Annotated[str | None, DECIMAL_OPTION] = None,
    thousands: Annotated[str | None, THOUSANDS_OPTION] = None,
    encoding: Annotated[str | None, ENCODING_OPTION] = None,
) -> None:
    """Drift of DATA against the bundle's training data, and its targets when DATA is labelled.

    Exit 0 when nothing drifted and the targets hold, 3 otherwise.
    """
    from mlservice.monitoring import monitor_file
    from mlservice.reports.drift_report import write_drift_report

    console, err = Console(), Console(stderr=True, soft_wrap=True)
    result = monitor_file(
        bundle, data, min_rows=min_rows, read=read_overrides(sep, decimal, thousands, encoding)
    )
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    window = result.report.get("window") or {}
    if result.report.get("reference") is None:
        err.print(f"[yellow]{result.report.get('note', 'no reference profile')}[/]")
    elif not window.get("judged"):
        err.print(f"[yellow]{window.get('note', 'too few rows to judge drift')}[/]")
    console.print(_drift_table(result.report, f"Drift of {data.name} ({result.rows} rows)"))
    failed = _print_metrics(console, result.metrics)
    if report is not None:
        path = write_drift_report(result, report)
        console.print(f"report: {path}")
    if result.drift:
        err.print(f"[bold red]drift:[/] {', '.join(result.drifted_features)}")
    if result.drift or failed:
        raise typer.Exit(_EXIT_DRIFT)
    console.print("[green]✓ no drift[/]" + (", targets met" if result.metrics else ""))


def _print_metrics(console: Console, metrics: dict[str, Any] | None) -> bool:
    """The live metrics next to the test metrics; whether a target failed."""
    if not metrics:
        return False
    table = Table(title=f"Live metrics ({metrics.get('rows')} labelled rows)")
    for column in ("metric", "live", "test"):
        table.add_column(column)
    test = metrics.get("test") or {}
    for name, value in (metrics.get("live") or {}).items():
        table.add_row(name, _score(value), _score(test.get(name)))
    console.print(table)
    gate = metrics.get("gate") or {}
    failed = list(gate.get("failed") or [])
    if failed:
        text = f"[bold red]targets not met on this data:[/] {', '.join(failed)}"
        Console(stderr=True).print(text)
    return bool(failed)
