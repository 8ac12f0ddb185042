"""Drift of a whole file against a bundle's reference profile, read in chunks.

``monitor_file`` computes the statistics of the online window (``monitoring.window``) over every
row of a CSV or Parquet file: each chunk is checked the way the API checks a request, predicted
by the bundle (``Predictor.predict_frame``) and counted; rows the API would refuse are counted
as rejected for the feature that fails and left out, as the API leaves them out of its window.
When the file holds the target column, the live metrics are computed as at training and gated
by the bundle's own targets. ``reports.drift_report.write_drift_report`` renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlservice.categories import canonical_category, canonical_series
from mlservice.errors import DataError, SchemaError
from mlservice.inference.coercion import MAX_ABS_NUMERIC
from mlservice.inference.predictor import FeatureInfo, Predictor
from mlservice.monitoring.profile import ReferenceProfile, load_reference_profile
from mlservice.monitoring.window import DEFAULT_MIN_ROWS, PSI_THRESHOLD, DriftWindow

__all__ = ["DEFAULT_CHUNKSIZE", "MonitorResult", "monitor_file"]

DEFAULT_CHUNKSIZE = 50_000
_PARQUET = (".parquet", ".pq")


@dataclass
class MonitorResult:
    """The drift of one file: the monitoring report (with each column's bins) and, when the file
    had labels, the live metrics next to the bundle's test metrics and targets."""

    bundle: str
    data: str
    rows: int  # rows read; the report's window counts the rows served
    report: dict[str, Any]
    metrics: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return bool(self.report.get("drift"))

    @property
    def drifted_features(self) -> list[str]:
        return list(self.report.get("drifted_features") or [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "data": self.data,
            "rows": self.rows,
            "drift": self.drift,
            "drifted_features": self.drifted_features,
            "report": self.report,
            "metrics": self.metrics,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------ reading
def _chunks(
    path: Path, meta: Mapping[str, Any], wanted: set[str], chunksize: int,
    read: Mapping[str, Any] | None,
) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunksize`` at a time (only the columns in ``wanted``)."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        import pyarrow.parquet as pq

        try:
            source = pq.ParquetFile(path)
            columns = [c for c in source.schema_arrow.names if c in wanted]
            for batch in source.iter_batches(batch_size=chunksize, columns=columns):
                yield batch.to_pandas()
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
        return
    if suffix != ".csv":
        raise DataError(f"{str(path)!r}: monitor a .csv or .parquet file, not {suffix!r}")
    from mlservice.data.reading import resolve_for_new_file

    options = resolve_for_new_file(path, (meta.get("data") or {}).get("read"), read)
    try:
        with pd.read_csv(
            path, chunksize=chunksize, usecols=lambda c: c in wanted, **options.kwargs()
        ) as reader:
            yield from reader
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({options.describe()}): {exc}") from exc


# --------------------------------------------------------------------------- checking
def _numeric(series: pd.Series, info: FeatureInfo) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN missing) and the rows the API would refuse."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    sent = series.notna().to_numpy()
    finite = np.isfinite(values) & (np.abs(values) <= MAX_ABS_NUMERIC)
    bad = (sent & ~finite) | (~sent & (not info.nullable))
    return np.where(sent & finite, values, np.nan), bad


def _category(series: pd.Series, info: FeatureInfo) -> tuple[np.ndarray, np.ndarray]:
    """Canonical strings (None missing) and the rows the API would refuse."""
    values = np.array(
        [None if isinstance(v, float) and math.isnan(v) else v for v in canonical_series(series)],
        dtype=object,
    )
    missing = np.array([v is None for v in values], dtype=bool)
    bad = missing & (not info.nullable)
    if info.closed and info.categories:
        allowed = {canonical_category(c) for c in info.categories}
        bad |= np.array([v is not None and v not in allowed for v in values], dtype=bool)
    return values, bad


def _checked(
    chunk: pd.DataFrame, predictor: Predictor
) -> tuple[dict[str, np.ndarray], dict[str, int], np.ndarray]:
    """The window's columns, the refused values per feature, the rows the API would take."""
    columns: dict[str, np.ndarray] = {}
    refused: dict[str, int] = {}
    ok = np.ones(len(chunk), dtype=bool)
    for info in predictor.features:
        if info.kind == "numeric":
            columns[info.name], bad = _numeric(chunk[info.name], info)
        elif info.kind in ("categorical", "boolean"):
            columns[info.name], bad = _category(chunk[info.name], info)
        else:
            bad = chunk[info.name].isna().to_numpy() & (not info.nullable)
        if bad.any():
            refused[info.name] = int(bad.sum())
        ok &= ~bad
    return columns, refused, ok


def _predict(predictor: Predictor, frame: pd.DataFrame) -> tuple[list[dict[str, Any] | None], int]:
    """One answer per row (``None`` where the model's own checks refuse the row), and how many
    were refused: the checks name one row at a time, so a failing part is split in halves."""
    try:
        return list(predictor.predict_frame(frame)), 0
    except SchemaError:
        if len(frame) == 1:
            return [None], 1
    half = len(frame) // 2
    head, bad_head = _predict(predictor, frame.iloc[:half])
    tail, bad_tail = _predict(predictor, frame.iloc[half:])
    return head + tail, bad_head + bad_tail


# ---------------------------------------------------------------------------- metrics
@dataclass
class _Labels:
    """Targets and predictions of the labelled rows, gathered chunk by chunk."""

    task: str
    classes: list[Any] | None
    y: list[Any] = field(default_factory=list)
    pred: list[Any] = field(default_factory=list)
    proba: list[list[float]] = field(default_factory=list)
    unknown: int = 0

    def add(self, targets: pd.Series, answers: list[dict[str, Any] | None]) -> None:
        keys = None if self.classes is None else {str(c): i for i, c in enumerate(self.classes)}
        for value, answer in zip(targets.tolist(), answers, strict=True):
            label = canonical_category(value)  # None for a missing target (None or NaN)
            if answer is None or label is None:
                continue
            if keys is None:
                self.y.append(float(value))
                predicted = answer["prediction"]
                self.pred.append(math.nan if predicted is None else float(predicted))
                continue
            if str(label) not in keys:
                self.unknown += 1
                continue
            self.y.append(keys[str(label)])
            self.pred.append(keys.get(str(answer["prediction"]), -1))
            probs = answer.get("probabilities")
            if probs is not None:
                self.proba.append([float(probs.get(k) or 0.0) for k in keys])

    def metrics(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        from mlservice.config import parse_target
        from mlservice.training.evaluate import compute_metrics, evaluate_gate

        proba = np.array(self.proba) if self.proba and len(self.proba) == len(self.y) else None
        live = compute_metrics(
            self.task, np.array(self.y), np.array(self.pred), proba,
            n_classes=len(self.classes or []),
        )
        targets = [
            parse_target(row.get("alias") or row["metric"], row["text"])
            for row in meta.get("targets", [])
        ]
        gate = evaluate_gate(targets, live)
        return {
            "rows": len(self.y),
            "live": live,
            "test": dict((meta.get("metrics") or {}).get("test") or {}),
            "targets": gate.rows,
            "gate": gate.to_dict(),
            "unknown_labels": self.unknown,
        }


# ------------------------------------------------------------------------------ driver
def _feed(
    window: DriftWindow, predictor: Predictor, chunk: pd.DataFrame, labels: _Labels | None
) -> int:
    """Check, predict and count one chunk; the number of rows the model refused."""
    columns, refused, ok = _checked(chunk, predictor)
    for name, count in refused.items():
        window.record_rejected(name, count)
    if not ok.any():
        return 0
    taken = chunk.loc[ok]
    answers, failed = _predict(predictor, taken)
    served = np.array([a is not None for a in answers], dtype=bool)
    keep = np.flatnonzero(ok)[served]
    kept = [a for a in answers if a is not None]
    if kept:
        window.update(
            {name: values[keep] for name, values in columns.items()},
            [a["prediction"] for a in kept],
            [math.nan if a.get("confidence") is None else a["confidence"] for a in kept],
        )
    if labels is not None:
        labels.add(taken[str(predictor.metadata["target"]["name"])], answers)
    return failed


def monitor_file(
    bundle_path: str | Path,
    data_path: str | Path,
    *,
    chunksize: int = DEFAULT_CHUNKSIZE,
    min_rows: int = DEFAULT_MIN_ROWS,
    profile: ReferenceProfile | None = None,
    read: Mapping[str, Any] | None = None,
) -> MonitorResult:
    """The drift of the file at ``data_path`` against the bundle's reference profile
    (``profile`` overrides it), read ``chunksize`` rows at a time; live metrics when the file
    has the target column. ``read``: CSV reader options over the bundle's own."""
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, got {chunksize}")
    predictor = Predictor.from_path(bundle_path)
    meta = predictor.metadata
    if profile is None:
        profile = load_reference_profile(predictor.bundle.path, meta)
    block = meta.get("monitoring") if isinstance(meta.get("monitoring"), Mapping) else {}
    threshold = float((block or {}).get("psi_threshold") or PSI_THRESHOLD)
    window = DriftWindow(profile, size=None, min_rows=min_rows, threshold=threshold)
    target = str((meta.get("target") or {}).get("name"))
    names = list(predictor.feature_names)
    labels: _Labels | None = None
    notes: list[str] = []
    failed = total = 0
    chunks = _chunks(Path(data_path), meta, {*names, target}, chunksize, read)
    for number, chunk in enumerate(chunks):
        total += len(chunk)
        if number == 0:
            missing = [n for n in names if n not in chunk.columns]
            if missing:
                raise DataError(f"{str(data_path)!r} lacks the feature columns {missing}")
            if target in chunk.columns and predictor.task in ("classification", "regression"):
                labels = _Labels(predictor.task, list(predictor.classes or []) or None)
        failed += _feed(window, predictor, chunk, labels)
    if failed:
        notes.append(f"{failed} rows were refused by the model's input checks and left out")
    if profile is None:
        notes.append("the bundle has no reference profile: drift cannot be judged")
    if labels is not None and labels.unknown:
        notes.append(f"{labels.unknown} rows have a label not seen in training; left out")
    return MonitorResult(
        bundle=str(predictor.bundle.path),
        data=str(data_path),
        rows=total,
        report=window.report(detail=True),
        metrics=None if labels is None or not labels.y else labels.metrics(meta),
        notes=notes,
    )
