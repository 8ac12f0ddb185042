"""``mlservice predict BUNDLE INPUT OUTPUT``: batch scoring, chunked in process or on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["predict"]

EXIT_USAGE = 2


def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or model_latest).")],
    input: Annotated[Path, typer.Argument(help="CSV or Parquet file with the feature columns.")],
    output: Annotated[
        Path,
        typer.Argument(
            help="Output .csv or .parquet file; with --dask a directory of Parquet parts."
        ),
    ],
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            help="Score on a Dask cluster: 'local' (a local cluster) or tcp://HOST:PORT.",
        ),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", min=1, help="Rows per chunk (memory bound) in process."),
    ] = 100_000,
    id_column: Annotated[
        list[str] | None,
        typer.Option("--id-column", help="Input column copied to the output (repeatable)."),
    ] = None,
) -> None:
    """Score a CSV/Parquet file in chunks (bounded memory), or on a Dask cluster with --dask."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from mlservice.errors import MlserviceError
    from mlservice.inference import Predictor
    from mlservice.inference.batch import score_file, score_file_dask

    console = Console()
    err_console = Console(stderr=True, soft_wrap=True)
    ids = id_column or []
    try:
        predictor = Predictor.from_path(bundle, runtime="sklearn")  # batch runs the pipeline
        if dask:
            err_console.print(f"scoring {input} on Dask ({dask}) …")
            stats = score_file_dask(predictor, input, output, address=dask, id_columns=ids)
        else:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
            ) as bar:
                task = bar.add_task(f"scoring {input.name}", total=None)

                def on_chunk(done: int, total: int | None) -> None:
                    bar.update(task, completed=done, total=total)

                stats = score_file(
                    predictor,
                    input,
                    output,
                    chunk_size=chunk_size,
                    id_columns=ids,
                    progress=on_chunk,
                )
    except MlserviceError as exc:
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_USAGE) from None
    console.print(
        f"scored {stats.rows:,} rows in {stats.chunks} "
        f"{'partitions' if dask else 'chunks'} ({stats.rows_per_second:,.0f} rows/s) "
        f"→ {output}",
        highlight=False,
    )
