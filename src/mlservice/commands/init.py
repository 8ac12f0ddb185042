"""``mlservice init DIR [--dvc]``: scaffold an ML service project with the standard layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["init"]


def init(
    directory: Annotated[
        Path, typer.Argument(help="Directory of the new project (created; must be empty).")
    ],
    dvc: Annotated[
        bool,
        typer.Option(
            "--dvc", help="Version the raw data with DVC (dvc init + dvc add data/raw/...)."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into a non-empty directory, overwriting templates."),
    ] = False,
) -> None:
    """Scaffold a project: config, data, notebooks, tests, Dockerfile, docker-compose, README."""
    from rich.console import Console

    from mlservice.scaffold import scaffold_project

    console = Console()
    written = scaffold_project(directory, dvc=dvc, force=force)
    root = Path(directory).expanduser().resolve()
    console.print(f"[green]✓[/] created {len(written)} files in {root}")
    if dvc:
        console.print(f"  data versioned by DVC: {root / 'data/raw/penguins.csv.dvc'}")
    console.print(
        "next:\n"
        f"  cd {directory}\n"
        "  mlservice eda configs/model_config.yaml     # reports/eda.html\n"
        "  mlservice train configs/model_config.yaml   # bundle in data/models/\n"
        "  mlservice serve                             # http://127.0.0.1:8000/docs",
        highlight=False,
    )
