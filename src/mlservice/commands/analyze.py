"""``mlservice analyze BUNDLE``: LLM analysis of a run, written into its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["analyze"]


def analyze(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or model_latest).")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the prompt that would be sent; call no LLM, change nothing."
        ),
    ] = False,
    include_sample: Annotated[
        bool,
        typer.Option(
            "--include-sample",
            help="Also send the first 5 rows of the training data (off: only aggregates leave).",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML config whose llm section to use (default: the one saved in the bundle).",
        ),
    ] = None,
) -> None:
    """LLM analysis of a run (metrics vs targets, CV spread, gap, importance, data profile).

    The result goes into MODEL_CARD.md (section "Análisis LLM"), metadata.json and the MLflow
    run. The API key is read from the environment variable named by llm.api_key_env.
    """
    from mlservice.bundle import load_metadata, resolve_bundle_path
    from mlservice.llm.analyze import analyze_bundle, resolve_llm_config

    path = resolve_bundle_path(bundle)
    llm_config = resolve_llm_config(load_metadata(path), config)
    outcome = analyze_bundle(path, llm_config, dry_run=dry_run, include_sample=include_sample)
    if isinstance(outcome, str):  # --dry-run: the prompt
        typer.echo(outcome)
        return
    typer.echo(f"{outcome.summary}\n")
    for point in outcome.key_points:
        typer.echo(f"- {point}")
    if outcome.recommendations:
        typer.echo("\nRecommendations:")
        for item in outcome.recommendations:
            typer.echo(f"- {item}")
    typer.echo(
        f"\nconfidence {outcome.confidence:.2f}; written to {path / 'MODEL_CARD.md'} "
        "and metadata.json (llm_analysis)"
    )
