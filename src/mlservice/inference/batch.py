"""Batch scoring of CSV/Parquet files with bounded memory, in process or on a Dask cluster.

In process, the input is read in chunks of ``chunk_size`` rows (CSV through
``pd.read_csv(chunksize=...)``, Parquet through ``ParquetFile.iter_batches``) and every output
chunk is appended to the output file (CSV, or Parquet through one ``ParquetWriter``) before the
next is read, so a file larger than the chunk size is never in memory whole. (A Parquet row
group is decoded whole by pyarrow: write inputs with row groups of at most ~1M rows.)

With Dask, the same ``BatchScorer`` runs in ``map_partitions`` over the input's partitions on a
``distributed`` cluster and the output is partitioned Parquet (``part.N.parquet`` in a
directory); its rows equal the in-process output.

A CSV input is read like the bundle's training file (``data.read`` in its metadata: the options
the config set are reused, the detected ones, separator and encoding, detected again for this
file); ``read`` (``--sep``/``--decimal``/``--encoding``) overrides them.

Each chunk goes through the ``Predictor``'s schema checks and coercion, then ONE vectorized call
of the bundle's scikit-learn pipeline, also for bundles the API serves through ONNX
(``predict_proba`` for classifiers that have it, else ``predict``). Output columns: the
requested id columns, ``prediction``; classifiers with probabilities add ``confidence`` and
``proba_<class>``; regressors with a conformal interval add ``interval_lower``/``interval_upper``.

Serving layer: imports no training code, MLflow or Optuna; Dask only inside ``score_file_dask``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlservice.bundle import Bundle
from mlservice.data.reading import (
    CsvOptions,
    numeric_text_hint,
    read_csv,
    resolve_for_new_file,
)
from mlservice.errors import DataError, MissingExtraError, SchemaError
from mlservice.inference.predictor import Predictor

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BatchScorer",
    "BatchStats",
    "score_file",
    "score_file_dask",
]

#: Rows per chunk: ~100 MB peak for a dozen features, and large enough to amortise each call.
DEFAULT_CHUNK_SIZE = 100_000

Progress = Callable[[int, int | None], None]  # (rows done, total rows if known)

_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")


@dataclass
class BatchStats:
    """What a scoring run did; ``max_chunk_rows`` shows the memory bound held."""

    rows: int = 0
    chunks: int = 0
    max_chunk_rows: int = 0
    pipeline_calls: int | None = 0  # None: counted on the Dask workers, not here
    seconds: float = 0.0
    output: Path | None = None
    read: dict[str, Any] | None = None  # CSV reader options used (None for Parquet)
    notes: list[str] = field(default_factory=list)  # what reading detected or assumed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.nan


class BatchScorer:
    """Feature frames → output frames: the Predictor's checks, then one pipeline call."""

    def __init__(
        self, predictor: Predictor, id_columns: Sequence[str] = (), *, explain: bool = False
    ) -> None:
        # Always the bundle's scikit-learn pipeline, whatever runtime serves ``predictor``'s
        # requests: one call scores a whole chunk exactly, and a plain Bundle pickles for Dask
        # workers (an onnxruntime session or a lazily loading bundle would not).
        source = predictor.bundle
        plain = Bundle(path=source.path, metadata=source.metadata, pipeline=source.pipeline)
        self.predictor = Predictor(plain)
        self.id_columns = tuple(id_columns)
        self.explainer: Any = self._explainer() if explain else None
        clash = [c for c in self.id_columns if c in self._output_names()]
        if clash:
            raise SchemaError(f"id columns {clash} clash with output columns; rename them")
        self.pipeline_calls = 0
        meta = predictor.metadata
        interval = meta.get("interval") if isinstance(meta.get("interval"), dict) else None
        halfwidth = None if interval is None else interval.get("halfwidth")
        self._halfwidth = None if halfwidth is None else float(halfwidth)
        self._labels: np.ndarray | None = None
        if predictor.is_classifier:
            assert predictor.classes is not None
            codes = getattr(predictor.bundle.pipeline, "classes_", None)
            codes = range(len(predictor.classes)) if codes is None else np.asarray(codes).tolist()
            self._labels = np.asarray([self._label(c) for c in codes], dtype=object)

    def _explainer(self) -> Any:
        """``--explain``: the explainer of the pipeline (the one the API builds)."""
        from mlservice.inference.explain import build_explainer

        meta = self.predictor.metadata
        stored = meta.get("explain") if isinstance(meta.get("explain"), dict) else None
        return build_explainer(
            self.predictor.bundle.pipeline,
            state=(stored or {}).get("state"),
            class_labels=self.predictor.classes,
        )

    def _explain_columns(self) -> list[str]:
        if self.explainer is None:
            return []
        names = [f"contrib_{name}" for name in self.explainer.features]
        return [*names, "contrib_base_value"]

    @property
    def input_columns(self) -> list[str]:
        """Columns read from the input: the features, then the id columns."""
        names = list(self.predictor.feature_names)
        return names + [c for c in self.id_columns if c not in names]

    @property
    def _with_proba(self) -> bool:
        return self.predictor.is_classifier and hasattr(
            self.predictor.bundle.pipeline, "predict_proba"
        )

    def _output_names(self) -> list[str]:
        names = ["prediction"]
        if self._with_proba:
            assert self.predictor.classes is not None
            names += ["confidence", *(f"proba_{c}" for c in self.predictor.classes)]
        elif not self.predictor.is_classifier and self.predictor.metadata.get("interval"):
            names += ["interval_lower", "interval_upper"]
        return names + self._explain_columns()

    def _label(self, code: Any) -> Any:
        classes = self.predictor.classes
        assert classes is not None
        if isinstance(code, float) and code.is_integer():
            code = int(code)
        if isinstance(code, int | np.integer) and 0 <= int(code) < len(classes):
            return classes[int(code)]
        return code.item() if isinstance(code, np.generic) else code

    def _prediction_type(self) -> pa.DataType:
        if self.predictor.is_classifier:
            assert self.predictor.classes is not None
            try:
                kind = pa.array(list(self.predictor.classes)).type
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return pa.string()
            return pa.string() if pa.types.is_large_string(kind) else kind
        return pa.float64()

    def schema(self, id_types: dict[str, pa.DataType]) -> pa.Schema:
        """The Arrow schema of the output; every chunk is written with it."""
        fields = [pa.field(c, id_types[c]) for c in self.id_columns]
        fields.append(pa.field("prediction", self._prediction_type()))
        fields += [pa.field(c, pa.float64()) for c in self._output_names()[1:]]
        return pa.schema(fields)

    def check_columns(self, columns: Sequence[str], source: str) -> None:
        missing = [c for c in self.input_columns if c not in set(columns)]
        if missing:
            raise SchemaError(
                f"{source} lacks columns {missing}; the bundle needs "
                f"{list(self.predictor.feature_names)}"
                + (f" and the id columns {list(self.id_columns)}" if self.id_columns else "")
            )

    def score(self, frame: pd.DataFrame, *, where: str = "", first_row: int = 0) -> pd.DataFrame:
        """Score one chunk: one vectorized pipeline call; row numbers in errors are global."""
        self.check_columns([str(c) for c in frame.columns], where or "input")
        out: dict[str, Any] = {c: frame[c].to_numpy() for c in self.id_columns}
        n = len(frame)
        if n == 0:
            X = None  # noqa: N806
        else:
            sub = frame[list(self.predictor.feature_names)]
            try:
                X = self.predictor._coerce(sub.astype(object).where(sub.notna(), None), True)  # noqa: N806
            except SchemaError as exc:
                text = re.sub(r"^row (\d+)", lambda m: f"row {int(m[1]) + first_row}", str(exc))
                raise SchemaError(f"{where + ': ' if where else ''}{text}") from None
        if self._with_proba:
            out.update(self._classify(X, n))
        elif self.predictor.is_classifier:
            out["prediction"] = self._decode(self._predict(X, n))
        else:
            pred = self._predict(X, n).astype(float)
            pred[~np.isfinite(pred)] = np.nan
            out["prediction"] = pred
            if self._halfwidth is not None:
                out["interval_lower"] = pred - self._halfwidth
                out["interval_upper"] = pred + self._halfwidth
        if self.explainer is not None:
            out.update(self._contributions(X, n))
        return pd.DataFrame(
            {
                k: pd.Series(v, dtype=object if v.dtype == object else v.dtype, index=frame.index)
                for k, v in out.items()
            },
            index=frame.index,
        )

    def _contributions(self, X: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:  # noqa: N803
        """One column per input feature (the explained output's contributions) and the base:
        ``contrib_base_value + sum(contrib_*)`` is the explained output of each row."""
        names = self._explain_columns()
        if X is None:
            return {name: np.empty(0) for name in names}
        explained = self.explainer.explain_batch(X)
        selected = explained.selected()  # (rows, features) of each row's explained output
        rows = np.arange(n)
        base = np.asarray(explained.base)[rows, np.asarray(explained.explained)]
        out = {name: selected[:, j] for j, name in enumerate(names[:-1])}
        out["contrib_base_value"] = base
        return out

    def _predict(self, X: pd.DataFrame | None, n: int) -> np.ndarray:  # noqa: N803
        if X is None:
            return np.empty(0)
        self.pipeline_calls += 1
        raw = np.asarray(self.predictor.bundle.pipeline.predict(X))
        return raw.reshape(n, -1)[:, 0] if raw.ndim > 1 else raw

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(codes, return_inverse=True)
        lookup = np.empty(len(uniq), dtype=object)
        for i, code in enumerate(uniq.tolist()):
            lookup[i] = (
                None if isinstance(code, float) and not math.isfinite(code) else (self._label(code))
            )
        return lookup[inverse.reshape(-1)]

    def _classify(self, X: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:  # noqa: N803
        # The vectorized twin of Predictor._from_proba: same clipping, argmax and None rules.
        assert self._labels is not None and self.predictor.classes is not None
        k = len(self._labels)
        if X is None:
            proba = np.empty((0, k))
        else:
            self.pipeline_calls += 1
            proba = np.asarray(self.predictor.bundle.pipeline.predict_proba(X), dtype=float)
        finite = np.isfinite(proba)
        clipped = np.where(finite, np.clip(proba, 0.0, 1.0), np.nan)
        best = np.argmax(np.where(finite, clipped, -1.0), axis=1)
        confidence = clipped[np.arange(len(proba)), best]
        prediction = np.empty(len(proba), dtype=object)
        prediction[:] = self._labels[best] if len(best) else []
        prediction[np.isnan(confidence)] = None
        out: dict[str, np.ndarray] = {"prediction": prediction, "confidence": confidence}
        by_label = {str(label): i for i, label in enumerate(self._labels.tolist())}
        for cls in self.predictor.classes:
            out[f"proba_{cls}"] = clipped[:, by_label[str(cls)]]
        return out

    def to_arrow(self, frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
        try:
            return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"output does not fit the schema of the first chunk: {exc}") from exc


# -------------------------------------------------------------------------- in process
def _kind(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return "csv"
    if suffix in _PARQUET:
        return "parquet"
    raise DataError(f"{role} {str(path)!r} must be a .csv or .parquet file, got {suffix!r}")


def csv_options(
    scorer: BatchScorer, path: Path, read: Mapping[str, Any] | None = None
) -> CsvOptions:
    """The reader options for a CSV input of ``scorer``'s bundle (see the module docstring)."""
    data = scorer.predictor.metadata.get("data")
    trained = data.get("read") if isinstance(data, dict) else None
    return resolve_for_new_file(path, trained if isinstance(trained, dict) else None, read)


def _csv_chunks(reader: Any, path: Path, options: CsvOptions) -> Iterator[pd.DataFrame]:
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot decode {str(path)!r} as {options.encoding!r} ({exc.reason}); "
            "pass --encoding with the file's encoding, e.g. --encoding cp1252"
        ) from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({options.describe()}): {exc}") from exc


@contextlib.contextmanager
def _read_chunks(
    path: Path, scorer: BatchScorer, chunk_size: int, options: CsvOptions | None
) -> Iterator[tuple[Iterator[pd.DataFrame], int | None, dict[str, pa.DataType]]]:
    if not path.is_file():
        raise DataError(f"input file {str(path)!r} not found")
    if options is not None:
        header = read_csv(path, options, audience="cli", nrows=0)
        scorer.check_columns([str(c) for c in header.columns], str(path))
        kwargs = options.kwargs()
        with pd.read_csv(
            path, chunksize=chunk_size, usecols=scorer.input_columns, **kwargs
        ) as reader:
            yield _csv_chunks(reader, path, options), None, {}
        return
    parquet = pq.ParquetFile(path)
    try:
        schema = parquet.schema_arrow
        scorer.check_columns(schema.names, str(path))
        types = {c: schema.field(c).type for c in scorer.id_columns}
        batches = parquet.iter_batches(batch_size=chunk_size, columns=scorer.input_columns)
        yield (b.to_pandas() for b in batches), parquet.metadata.num_rows, types
    finally:
        parquet.close()


class _Writer:
    """Appends chunks to a temporary file beside ``path``; ``commit`` renames it into place."""

    def __init__(self, path: Path, scorer: BatchScorer) -> None:
        self.path = path
        self.kind = _kind(path, "output")
        self.scorer = scorer
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._started = False

    def write(self, frame: pd.DataFrame, id_types: dict[str, pa.DataType]) -> None:
        if self._schema is None:
            inferred = pa.Schema.from_pandas(
                frame[list(self.scorer.id_columns)], preserve_index=False
            )
            types = {c: id_types.get(c) or inferred.field(c).type for c in self.scorer.id_columns}
            self._schema = self.scorer.schema(types)
        if self.kind == "csv":
            frame.to_csv(
                self.tmp, mode="a" if self._started else "w", header=not self._started, index=False
            )
        else:
            table = self.scorer.to_arrow(frame, self._schema)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, self._schema)
            self._parquet.write_table(table)
        self._started = True

    def commit(self) -> None:
        self.close()
        if not self._started:
            raise DataError("the input has no rows to score")
        os.replace(self.tmp, self.path)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def abort(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)


def score_file(
    predictor: Predictor,
    input_path: Path,
    output_path: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    id_columns: Sequence[str] = (),
    progress: Progress | None = None,
    read: Mapping[str, Any] | None = None,
    explain: bool = False,
) -> BatchStats:
    """Score ``input_path`` chunk by chunk into ``output_path`` (.csv or .parquet).

    ``explain``: add one ``contrib_<feature>`` column per input feature and
    ``contrib_base_value`` (``mlservice.inference.explain``).

    ``read``: CSV reader options (sep, decimal, thousands, encoding) over the bundle's own.
    """
    if chunk_size < 1:
        raise DataError(f"chunk size must be >= 1, got {chunk_size!r}")
    start = time.perf_counter()
    scorer = BatchScorer(predictor, id_columns, explain=explain)
    stats = BatchStats(output=output_path)
    options = _input_options(scorer, input_path, read)
    if options is not None:
        stats.read, stats.notes = options.to_dict(), list(options.notes)
    writer = _Writer(output_path, scorer)
    try:
        with _read_chunks(input_path, scorer, chunk_size, options) as (chunks, total, id_types):
            for chunk in chunks:
                try:
                    out = scorer.score(chunk, where=input_path.name, first_row=stats.rows)
                except SchemaError as exc:
                    raise _with_read_hint(exc, scorer, chunk, options) from None
                writer.write(out, id_types)
                stats.rows += len(chunk)
                stats.chunks += 1
                stats.max_chunk_rows = max(stats.max_chunk_rows, len(chunk))
                if progress is not None:
                    progress(stats.rows, total)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    stats.pipeline_calls = scorer.pipeline_calls
    stats.seconds = time.perf_counter() - start
    return stats


def _with_read_hint(
    exc: SchemaError, scorer: BatchScorer, chunk: pd.DataFrame, options: CsvOptions | None
) -> SchemaError:
    """Name the reader option when a numeric feature came in as text like ``'39,1'``."""
    if options is None:
        return exc
    for feature in scorer.predictor.features:
        if feature.kind == "numeric" and feature.name in chunk.columns:
            hint = numeric_text_hint(chunk[feature.name], options.to_dict(), audience="cli")
            if hint:
                return SchemaError(f"{exc}; {hint}")
    return exc


def _input_options(
    scorer: BatchScorer, path: Path, read: Mapping[str, Any] | None
) -> CsvOptions | None:
    """CSV options of an input file; None for Parquet (where reader options are refused)."""
    if not path.exists():
        return None  # reported by the reader
    if path.is_file() and _kind(path, "input") == "csv":
        return csv_options(scorer, path, read)
    if read and any(v is not None for v in read.values()):
        raise DataError(f"--sep/--decimal/--encoding apply to CSV input, not {str(path)!r}")
    return None


# --------------------------------------------------------------------------------- Dask
def _score_partition(part: pd.DataFrame, scorer: BatchScorer, partition_info: Any = None) -> Any:
    number = None if partition_info is None else partition_info.get("number")
    return scorer.score(part, where="" if number is None else f"partition {number}")


@contextlib.contextmanager
def _dask_client(address: str, n_workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if address == "local":
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    if not address.startswith(("tcp://", "tls://")):
        raise DataError(f"--dask must be 'local' or tcp://HOST:PORT, got {address!r}")
    try:
        client = Client(address, timeout="15s")
    except OSError as exc:
        raise DataError(f"Dask scheduler {address!r} is unreachable: {exc}") from exc
    with client:
        yield client


def score_file_dask(
    predictor: Predictor,
    input_path: Path,
    output_path: Path,
    *,
    address: str = "local",
    id_columns: Sequence[str] = (),
    n_workers: int = 2,
    blocksize: str = "64MB",
    read: Mapping[str, Any] | None = None,
) -> BatchStats:
    """Score on a Dask cluster (``"local"`` or ``tcp://host:port``) into a Parquet directory.

    Input and output paths must be visible to the workers (a shared filesystem or the same
    machine); the fitted pipeline is shipped to every worker once.
    """
    try:
        import dask.dataframe as dd
    except ImportError as exc:
        raise MissingExtraError(
            "--dask needs dask.distributed: pip install 'mlservice[dask]'"
        ) from exc
    start = time.perf_counter()
    scorer = BatchScorer(predictor, id_columns)
    if not input_path.exists():
        raise DataError(f"input {str(input_path)!r} not found")
    if output_path.suffix.lower() in _CSV:
        raise DataError("--dask writes partitioned Parquet; give an output directory, "
                        f"e.g. {output_path.with_suffix('.parquet')}")
    if output_path.exists() and (not output_path.is_dir() or any(output_path.iterdir())):
        raise DataError(f"output {str(output_path)!r} exists; remove it or choose a new path")
    id_types: dict[str, pa.DataType] = {}
    options = _input_options(scorer, input_path, read)
    if options is not None:
        header = read_csv(input_path, options, audience="cli", nrows=0)
        scorer.check_columns([str(c) for c in header.columns], str(input_path))
        ddf = dd.read_csv(
            str(input_path),
            usecols=scorer.input_columns,
            blocksize=blocksize,
            **options.kwargs(),
        )
    else:  # one file or a directory of Parquet parts
        arrow_schema = pq.ParquetDataset(input_path).schema
        scorer.check_columns(arrow_schema.names, str(input_path))
        id_types = {c: arrow_schema.field(c).type for c in scorer.id_columns}
        # one partition per row group: the same memory bound as the in-process chunks
        ddf = dd.read_parquet(
            str(input_path), columns=scorer.input_columns, split_row_groups=True
        )
    meta = scorer.score(ddf._meta)
    for column in scorer.id_columns:
        id_types.setdefault(column, pa.Schema.from_pandas(meta[[column]]).field(column).type)
    schema = scorer.schema(id_types)
    with _dask_client(address, n_workers) as client:
        remote = client.scatter(scorer, broadcast=True)
        scored = ddf.map_partitions(_score_partition, remote, meta=meta)
        scored.to_parquet(str(output_path), write_index=False, schema=schema)
    files = sorted(output_path.glob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return BatchStats(
        rows=rows,
        chunks=ddf.npartitions,
        max_chunk_rows=max((pq.ParquetFile(f).metadata.num_rows for f in files), default=0),
        pipeline_calls=None,
        seconds=time.perf_counter() - start,
        output=output_path,
        read=None if options is None else options.to_dict(),
        notes=[] if options is None else list(options.notes),
    )
