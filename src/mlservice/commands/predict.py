"""``mlservice predict BUNDLE INPUT OUTPUT``: batch scoring, chunked in process or on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "DECIMAL_OPTION",
    "ENCODING_OPTION",
    "SEP_OPTION",
    "THOUSANDS_OPTION",
    "predict",
    "read_overrides",
]

EXIT_USAGE = 2

#: CSV reader options shared by ``predict`` and ``evaluate``; unset: read like the training file.
SEP_OPTION = typer.Option(
    "--sep", help="CSV column separator, e.g. ';' or '\\t' (default: as in training, or sniffed)."
)
DECIMAL_OPTION = typer.Option("--decimal", help="CSV decimal mark: '.' or ','.")
THOUSANDS_OPTION = typer.Option("--thousands", help="CSV thousands separator, e.g. '.'.")
ENCODING_OPTION = typer.Option(
    "--encoding", help="CSV encoding, e.g. utf-8 or cp1252 (default: utf-8, else cp1252)."
)


def read_overrides(
    sep: str | None, decimal: str | None, thousands: str | None, encoding: str | None
) -> dict[str, Any]:
    """Command line reader options, checked like ``data.read`` in a config."""
    from pydantic import ValidationError

    from mlservice.config import ReadOptions
    from mlservice.errors import DataError

    given = {
        key: value
        for key, value in (
            ("sep", sep), ("decimal", decimal), ("thousands", thousands), ("encoding", encoding)
        )
        if value is not None
    }
    try:
        options = ReadOptions.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            (f"--{e['loc'][0]}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise DataError(f"invalid CSV reader options: {problems}") from None
    return options.given()


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
    sep: Annotated[str | None, SEP_OPTION] = None,
    decimal: Annotated[str | None, DECIMAL_OPTION] = None,
    thousands: Annotated[str | None, THOUSANDS_OPTION] = None,
    encoding: Annotated[str | None, ENCODING_OPTION] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add contrib_<feature> columns (additive contributions) and contrib_base_value.",
        ),
    ] = False,
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
        read = read_overrides(sep, decimal, thousands, encoding)
        predictor = Predictor.from_path(bundle, runtime="sklearn")  # batch runs the pipeline
        if dask and explain:
            raise typer.BadParameter(
                "--explain scores in process only; drop --dask or --explain", param_hint="--explain"
            )
        if dask:
            err_console.print(f"scoring {input} on Dask ({dask}) …")
            stats = score_file_dask(
                predictor, input, output, address=dask, id_columns=ids, read=read
            )
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
                    read=read,
                    explain=explain,
                )
    except MlserviceError as exc:
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_USAGE) from None
    for note in stats.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(
        f"scored {stats.rows:,} rows in {stats.chunks} "
        f"{'partitions' if dask else 'chunks'} ({stats.rows_per_second:,.0f} rows/s) "
        f"→ {output}",
        highlight=False,
    )
