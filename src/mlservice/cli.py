"""The ``mlservice`` command line (Typer + Rich); the composition root.

Heavy layers (training, MLflow, plots) are imported inside the commands that need them, so
``mlservice serve`` on the base install stays light. Exit codes: 0 ok, 1 unexpected error,
2 bad usage or invalid config/data, 3 quality targets not met.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlservice.commands.predict import (
    DECIMAL_OPTION,
    ENCODING_OPTION,
    SEP_OPTION,
    THOUSANDS_OPTION,
    read_overrides,
)
from mlservice.errors import MlserviceError, TrackingError

__all__ = ["app", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TARGETS = 0, 1, 2, 3

app = typer.Typer(
    name="mlservice",
    help="Dataset + one YAML file → a tracked, quality-gated, documented and served model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def _handle_errors(func: F) -> F:
    """Turn user mistakes (MlserviceError) into a message on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlserviceError as exc:
            err_console.print(
                f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


class _RichProgress:
    """Adapter from the training ``Progress`` protocol to a Rich progress display."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Any = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total or 1)
        self._task = self._progress.add_task(name, total=total or 1)
        if total is None:
            self._progress.update(self._task, completed=1)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)


@contextlib.contextmanager
def training_progress(console: Console | None = None) -> Iterator[_RichProgress]:
    """The Rich display of a training run (on stderr by default) as a training ``Progress``."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console if console is None else console,
    ) as progress:
        yield _RichProgress(progress)


def _load_config(path: Path, overrides: list[str] | None = None) -> Any:
    from mlservice.config import load_config
    from mlservice.models import config_checks

    return load_config(path, overrides or [], extra_checks=[config_checks])


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_table(metadata: dict[str, Any], title: str = "Metrics") -> Table:
    """Metric | Train | Test | CV | Target | Met, for every test metric."""
    metrics = metadata.get("metrics", {})
    targets = {row["metric"]: row for row in metadata.get("targets", [])}
    table = Table(title=title)
    for column in ("metric", "train", "test", "cv mean ± std", "target", "met"):
        table.add_column(column, justify="left" if column in ("metric", "target") else "right")
    for metric, test_value in metrics.get("test", {}).items():
        cv = metrics.get("cv", {}).get(metric) or {}
        cv_text = f"{cv['mean']:.4f} ± {cv['std']:.4f}" if cv.get("mean") is not None else "—"
        target = targets.get(metric)
        met = "—" if target is None else ("[green]met[/]" if target["met"] else "[red]NOT met[/]")
        alias = (target or {}).get("alias")
        table.add_row(
            f"{metric} ({alias})" if alias else metric,
            _fmt(metrics.get("train", {}).get(metric)),
            _fmt(test_value),
            cv_text,
            target["text"] if target else "",
            met,
        )
    return table


@app.command()
@_handle_errors
def validate(
    config: Annotated[Path, typer.Argument(help="Path to the YAML config.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set model.type=ridge")
    ] = None,
) -> None:
    """Check a config; print every problem with its key path and a fix."""
    cfg = _load_config(config, set_)
    targets = ", ".join(
        f"{t.metric}{f' (written {t.alias})' if t.alias else ''} {t.op} {t.value:g}"
        for t in cfg.parsed_targets()
    )
    console.print(
        f"[green]✓[/] {config} is valid: {cfg.task} of {cfg.data.target!r} with "
        f"{cfg.model_type}; targets: {targets}"
    )


@app.command()
@_handle_errors
def train(
    config: Annotated[Path, typer.Argument(help="Path to the YAML config.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set model.params.max_depth=4"),
    ] = None,
) -> None:
    """Train, evaluate, gate, bundle, track and document a model (exit 3 if targets are not met)."""
    cfg = _load_config(config, set_)
    from mlservice.training import train as run_training

    with training_progress() as progress:
        result = run_training(cfg, progress=progress)
    _report_training(result)


def _report_training(result: Any) -> None:
    console.print(metrics_table(result.metadata, title=f"{result.metadata['name']} — metrics"))
    for note in result.warnings:
        err_console.print(f"[yellow]note:[/] {note}")
    console.print(f"bundle: {result.bundle_path}")
    if result.tracking:
        console.print(
            f"MLflow run {result.tracking['run_id']} in experiment "
            f"{result.tracking['experiment']!r} ({result.tracking['tracking_uri']})"
        )
    if result.tracking_error:
        err_console.print(f"[bold red]error:[/] {result.tracking_error}")
        raise typer.Exit(EXIT_ERROR)
    if not result.gate.passed:
        short = ", ".join(
            f"{r['metric']} = {_fmt(r['observed'])} (target {r['text']})"
            for r in result.gate.rows
            if not r["met"]
        )
        err_console.print(
            f"[bold red]targets not met:[/] {short}. The bundle is kept as a candidate; "
            "model_latest is unchanged."
        )
        raise typer.Exit(EXIT_TARGETS)
    console.print(f"[green]✓ targets met[/]; model_latest → {result.bundle_path.name}")


@app.command()
@_handle_errors
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or model_latest).")],
    data: Annotated[Path, typer.Argument(help="Labelled CSV or Parquet file.")],
    sep: Annotated[str | None, SEP_OPTION] = None,
    decimal: Annotated[str | None, DECIMAL_OPTION] = None,
    thousands: Annotated[str | None, THOUSANDS_OPTION] = None,
    encoding: Annotated[str | None, ENCODING_OPTION] = None,
) -> None:
    """Metrics of a bundle on new labelled data, checked against its targets.

    A CSV file is read like the training file (options recorded in the bundle) unless --sep,
    --decimal, --thousands or --encoding say otherwise.
    """
    from mlservice.training.evaluate import evaluate_bundle

    read = read_overrides(sep, decimal, thousands, encoding)
    report = evaluate_bundle(bundle, data, read=read)
    for note in report.get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(metrics_table(report, title=f"{report['name']} on {data.name}"))
    if not report["gate"]["passed"]:
        err_console.print(f"[bold red]targets not met:[/] {', '.join(report['gate']['failed'])}")
        raise typer.Exit(EXIT_TARGETS)
    console.print("[green]✓ targets met[/]")


@app.command()
@_handle_errors
def card(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or model_latest).")],
    lang: Annotated[str, typer.Option(help="Headings language: es (default) or en.")] = "es",
) -> None:
    """(Re)write the bundle's MODEL_CARD.md."""
    from mlservice.bundle import (
        find_bundles,
        load_metadata,
        resolve_bundle_path,
        update_bundle_files,
    )
    from mlservice.reports import render_model_card

    if lang not in ("es", "en"):
        raise typer.BadParameter("lang must be 'es' or 'en'", param_hint="--lang")
    path = resolve_bundle_path(bundle)
    metadata = load_metadata(path)
    history = [
        m
        for m in find_bundles(path.parent, name=metadata.get("name"))
        if m.get("bundle_id") != metadata.get("bundle_id")
        and str(m.get("created_at", "")) < str(metadata.get("created_at", ""))
    ]
    text = render_model_card(metadata, history=history, lang=lang)
    update_bundle_files(path, {"MODEL_CARD.md": text})
    console.print(f"wrote {path / 'MODEL_CARD.md'}")


@app.command()
@_handle_errors
def serve(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle directory; default data/models/model_latest.")
    ] = Path("data/models/model_latest"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    limit_concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Answer 503 past this many connections or running requests."),
    ] = None,
    timeout_graceful_shutdown: Annotated[
        int, typer.Option(min=0, help="Seconds in-flight requests get to finish when stopping.")
    ] = 30,
    shutdown_delay: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds to keep serving after SIGTERM with readiness at 503."),
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds between checks of the bundle path for a new model."),
    ] = None,
) -> None:
    """Serve a bundle over HTTP: /docs, /api/v1/predict, /metrics, /admin/reload."""
    from mlservice.api.server import run_server

    console.print(f"serving {bundle} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    run_server(
        bundle,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        limit_concurrency=limit_concurrency,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        shutdown_delay_s=shutdown_delay,
        watch_interval_s=watch,
    )


@app.command()
@_handle_errors
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Project directory for data, models and MLflow.")
    ] = Path("."),
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the model after training.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key of the demo config.")
    ] = None,
) -> None:
    """Train the bundled penguins example and serve it (what `make demo` runs)."""
    import os

    from mlservice.training.demo import prepare_demo

    config_path = prepare_demo(directory)
    os.chdir(config_path.parent.parent)  # paths in the config are relative to the project
    console.print(f"demo config: {config_path}")
    cfg = _load_config(config_path, set_)
    from mlservice.training import train as run_training

    with training_progress() as progress:
        result = run_training(cfg, progress=progress)
    _report_training(result)
    if serve_after:
        serve(result.bundle_path, host="127.0.0.1", port=port, workers=1, log_level="info")


def _register_commands() -> None:
    """Commands that live in ``mlservice.commands`` (each imports its heavy libraries lazily)."""
    from mlservice.commands.analyze import analyze
    from mlservice.commands.eda import eda
    from mlservice.commands.init import init
    from mlservice.commands.monitor import monitor
    from mlservice.commands.predict import predict
    from mlservice.commands.tune import tune

    app.command(name="init")(_handle_errors(init))
    app.command(name="eda")(_handle_errors(eda))
    app.command(name="tune")(tune)  # handles its own errors (exit 2 / 3)
    app.command(name="predict")(predict)
    app.command(name="monitor")(_handle_errors(monitor))
    app.command(name="analyze")(_handle_errors(analyze))


_register_commands()


def main() -> None:
    """Entry point of the ``mlservice`` script."""
    try:
        app()
    except TrackingError as exc:  # pragma: no cover - defensive, commands handle it
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
