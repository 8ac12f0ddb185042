"""``mlservice eda CONFIG``: an EDA report of the config's dataset, logged to MLflow when tracked.

Heavy libraries (pandas stats, matplotlib, jinja2, mlflow) are imported inside the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from mlservice.config import Config
    from mlservice.reports.eda import EdaReport

__all__ = ["eda", "eda_report_for_config", "log_eda_to_mlflow"]

log = logging.getLogger(__name__)


def eda(
    config: Annotated[Path, typer.Argument(help="Path to the YAML config.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Directory for eda.html, eda.md and the PNG plots."),
    ] = Path("reports"),
    sample: Annotated[
        int,
        typer.Option(
            "--sample-rows",
            min=1,
            help="Rows sampled for the plots; statistics and warnings use all rows.",
        ),
    ] = 10_000,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set tracking.enabled=false"),
    ] = None,
) -> None:
    """EDA report: types, missing values, distributions, target balance, leakage suspects."""
    from rich.console import Console

    from mlservice.config import load_config
    from mlservice.models import config_checks
    from mlservice.reports.eda import write_eda_report

    console = Console(soft_wrap=True)
    err_console = Console(stderr=True, soft_wrap=True)
    cfg = load_config(config, set_ or [], extra_checks=[config_checks])
    notes: list[str] = []
    report = eda_report_for_config(cfg, base_dir=Path.cwd(), sample_rows=sample, notes=notes)
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    html_path, md_path = write_eda_report(report, output)
    console.print(
        f"EDA of {cfg.data.source!r}: {report.n_rows:,} rows × {report.n_columns} columns, "
        f"{len(report.warnings)} warnings"
    )
    for warning in report.warnings:
        style = "red" if warning.kind in ("leakage", "post_outcome", "identifier") else "yellow"
        console.print(f"  [{style}]{warning.kind}[/]: {warning.message}", highlight=False)
    console.print(f"wrote {html_path} and {md_path}")
    if cfg.tracking.enabled:
        pngs = sorted(Path(output).glob("eda_*.png"))
        run_id, problem = log_eda_to_mlflow(cfg, report, [html_path, md_path, *pngs])
        if run_id:
            console.print(f"logged to MLflow run {run_id} ({cfg.tracking.uri})")
        else:
            err_console.print(f"[yellow]warning:[/] report not logged to MLflow: {problem}")


def eda_report_for_config(
    config: Config,
    *,
    base_dir: Path,
    sample_rows: int = 10_000,
    seed: int | None = None,
    notes: list[str] | None = None,
) -> EdaReport:
    """Load the config's dataset and analyse its features and target as training would see them.

    The file is read with the config's ``data.read`` options, like training reads it. Columns
    in ``data.drop`` (and the group/time columns) are left out; rows with a missing target are
    kept so the report can show them. ``notes`` receives what loading detected or assumed.
    """
    from mlservice.data import load_dataset
    from mlservice.reports.eda import build_eda_report
    from mlservice.training.train import prepare_frame

    dataset = load_dataset(config.data, base_dir=base_dir)
    if notes is not None:
        notes.extend(dataset.notes)
    features, _, types, _ = prepare_frame(dataset.frame, config)
    columns = [*features.columns, config.data.target]
    report = build_eda_report(
        dataset.frame[columns],
        target=config.data.target,
        task=config.task,
        types=types,
        sample_rows=sample_rows,
        seed=config.split.seed if seed is None else seed,
        preprocessing=config.preprocessing,
    )
    report.source = config.data.source
    report.data_fingerprint = dict(dataset.fingerprint)
    return report


def log_eda_to_mlflow(
    config: Config, report: EdaReport, files: list[Path]
) -> tuple[str | None, str | None]:
    """Log the report files to a run named "eda" in the config's experiment.

    Returns ``(run_id, None)``, or ``(None, reason)`` when the tracking store cannot be used:
    an EDA report is still useful without tracking, so this never raises.
    """
    from mlservice.errors import TrackingError
    from mlservice.training.tracking import _experiment_id, prepare_tracking

    try:
        prepare_tracking(config)
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        with mlflow.start_run(experiment_id=_experiment_id(config), run_name="eda") as run:
            tags: dict[str, Any] = {
                "mlservice.kind": "eda",
                "task": report.task,
                "target": report.target,
                "data_sha256": report.data_fingerprint.get("sha256") or "",
                "mlservice.dvc_state": report.data_fingerprint.get("dvc_state") or "untracked",
            }
            mlflow.set_tags(tags)
            mlflow.log_metrics(
                {
                    "eda_rows": float(report.n_rows),
                    "eda_columns": float(report.n_columns),
                    "eda_duplicates": float(report.n_duplicates),
                    "eda_columns_with_missing": float(len(report.missing)),
                    "eda_warnings": float(len(report.warnings)),
                }
            )
            for path in files:
                mlflow.log_artifact(str(path), artifact_path="eda")
            return str(run.info.run_id), None
    except TrackingError as exc:
        return None, str(exc)
    except Exception as exc:  # MLflow raises many unrelated types for one failure
        log.debug("MLflow logging of the EDA report failed", exc_info=True)
        return None, f"logging to MLflow at {config.tracking.uri!r} failed: {exc}"
