"""``mlservice tune CONFIG --trials N``: Optuna search, best params as an overlay, then train.

Optuna, MLflow and the training stack are imported inside the command. Several processes started
with the same config and ``--storage`` URL cooperate on one study (README.md, "Scaling out").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from mlservice.training.hyperparameter_search import TuneResult

__all__ = ["tune"]

EXIT_USAGE = 2


def tune(
    config: Annotated[Path, typer.Argument(help="Path to the YAML config.")],
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            "-n",
            min=1,
            help="Trials of the study in total; workers sharing --storage split them.",
        ),
    ] = 20,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna RDB URL shared by tune workers: sqlite:///tune.db (one machine) or "
            "postgresql://user:pass@host/db (many). Default: in memory.",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(
            "--study", help="Study name; default derived from the config, so workers match."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.0, help="Stop starting trials after this many seconds."),
    ] = None,
    train_best: Annotated[
        bool,
        typer.Option(
            "--train-best",
            help="Train the best params through the normal gate (exit 3 if targets are not met).",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set cv.folds=3"),
    ] = None,
) -> None:
    """Hyperparameter search; each trial a nested MLflow run; best params written as an overlay."""
    from rich.console import Console

    from mlservice.errors import MlserviceError

    console = Console()
    err_console = Console(stderr=True, soft_wrap=True)
    try:
        _run(
            config, trials=trials, storage=storage, study=study, timeout=timeout,
            train_best=train_best, overrides=set_, console=console, err_console=err_console,
        )
    except MlserviceError as exc:
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_USAGE) from None


def _run(
    config_path: Path,
    *,
    trials: int,
    storage: str | None,
    study: str | None,
    timeout: float | None,
    train_best: bool,
    overrides: list[str] | None,
    console: Any,
    err_console: Any,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mlservice.config import load_config
    from mlservice.models import config_checks
    from mlservice.training.hyperparameter_search import (
        PRIMARY_METRIC,
        TrialReport,
        config_with_params,
        write_overlay,
    )
    from mlservice.training.hyperparameter_search import tune as run_tune

    cfg = load_config(config_path, overrides or [], extra_checks=[config_checks])
    metric = PRIMARY_METRIC[cfg.task]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(f"tuning {cfg.model_type} (CV {metric})", total=trials)

        def on_trial(report: TrialReport) -> None:
            best = "—" if report.best_value is None else f"{report.best_value:.4f}"
            bar.update(
                task,
                completed=min(report.finished, trials),
                description=f"tuning {cfg.model_type} (CV {metric}, best {best})",
            )

        result = run_tune(
            cfg,
            trials=trials,
            storage=storage,
            study_name=study,
            timeout=timeout,
            progress=on_trial,
        )
        finished = result.counts.get("complete", 0) + result.counts.get("pruned", 0)
        bar.update(task, completed=min(finished, trials))
    _print_result(result, console)
    overlay = write_overlay(result, config_path, cfg.model_type)
    console.print(f"best params written to {overlay}")
    if train_best:
        from mlservice.cli import _report_training, training_progress
        from mlservice.training import train

        best_config = config_with_params(cfg, result.best_params)
        with training_progress(err_console) as progress:
            trained = train(best_config, progress=progress)
        _report_training(trained)  # exit 3 when the targets are not met


def _print_result(result: TuneResult, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"study {result.study_name}")
    for column in ("param", "default", "best"):
        table.add_column(column, justify="left" if column == "param" else "right")
    for name, value in result.best_params.items():
        table.add_row(name, _fmt(result.baseline_params.get(name)), _fmt(value))
    table.add_row(
        f"CV {result.metric}",
        _fmt(result.baseline_score),
        _fmt(result.best_score),
        style="bold",
    )
    console.print(table)
    console.print(result.summary(), highlight=False)
    counts = result.counts
    console.print(
        f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('fail', 0)} failed trials in the study",
        highlight=False,
    )
    console.print(
        f"this worker ran {result.trials_run} trial(s); baseline: {result.baseline_source}",
        highlight=False,
    )
    if result.parent_run_id:
        console.print(f"MLflow parent run {result.parent_run_id}")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)
