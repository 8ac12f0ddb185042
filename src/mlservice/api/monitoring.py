"""The served model watches its own traffic: every predicted row feeds a drift window.

``ModelState.window`` (``mlservice.monitoring.DriftWindow``) is built with each loaded model
from its bundle's reference profile. The fast path feeds it the graph's inputs it has already
built (numpy columns, no second pass over the rows); the FastAPI routes feed it the validated
rows. Requests refused with a 422 naming a feature count as that feature's rejected values, a
data-quality signal. ``GET /api/v1/monitoring`` answers the window's report, Prometheus gets one
drift score per feature at scrape time (``DriftCollector``).

Monitoring never fails a prediction: an error while recording is logged once per model and the
answer goes out as computed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlservice.inference.onnx_runtime import MISSING_CATEGORY, UNKNOWN_CATEGORY

if TYPE_CHECKING:
    from mlservice.api.deps import ModelState
    from mlservice.api.settings import ApiSettings
    from mlservice.inference import Predictor
    from mlservice.monitoring.window import DriftWindow

__all__ = [
    "FLUSH_ROWS",
    "SAMPLE_ROWS",
    "BufferedWindow",
    "DriftCollector",
    "build_window",
    "feature_of_error",
    "record_feeds",
    "record_rejected",
    "record_rows",
]

log = logging.getLogger("mlservice.api.monitoring")
#: Served rows buffered before they enter the drift window together.
FLUSH_ROWS = 64
#: Most rows of one ONNX call fed to the drift window (a uniform sample beyond).
SAMPLE_ROWS = 64
_RNG = np.random.default_rng()
_failed: set[int] = set()


class BufferedWindow:
    """A ``DriftWindow`` fed in blocks: served rows wait in a small buffer and enter the window
    ``FLUSH_ROWS`` at a time (and before every report).

    A window update has a fixed cost of ~30 µs (numpy calls per column) whatever its size; one
    per one-row request cost ~12 % of the single-row throughput. Buffered, a request pays a
    list append (its feeds and answers are kept as they are), and the conversion and the
    window update are shared by ``FLUSH_ROWS`` rows.
    """

    def __init__(self, window: DriftWindow) -> None:
        self.window = window
        self.profile = window.profile
        self._lock = threading.Lock()
        self._columns: list[Mapping[str, Any]] = []
        self._predictions: list[Any] = []
        self._confidence: list[Any] = []

    def add(self, columns: Mapping[str, Any], answers: Sequence[Mapping[str, Any]]) -> None:
        """Queue served rows: ``columns`` maps features to ``[N, 1]`` arrays (the graph's
        inputs, converted when they enter the window), ``answers`` the answers (only their
        prediction and confidence are kept: holding the answers would keep every dict of
        them alive for the garbage collector to walk)."""
        if len(answers) == 1:
            first = answers[0]
            predictions: list[Any] = [first["prediction"]]
            confidence: list[Any] = [first.get("confidence")]
        else:
            predictions = list(map(itemgetter("prediction"), answers))
            confidence = [a.get("confidence") for a in answers]
        with self._lock:
            self._columns.append(columns)
            self._predictions += predictions
            self._confidence += confidence
            if len(self._predictions) < FLUSH_ROWS:
                return
            pending = self._take()
        self._feed(pending)

    def _take(self) -> tuple[list[Mapping[str, Any]], list[Any], list[Any]]:
        pending = (self._columns, self._predictions, self._confidence)
        self._columns, self._predictions, self._confidence = [], [], []
        return pending

    def _feed(self, pending: tuple[list[Mapping[str, Any]], list[Any], list[Any]]) -> None:
        columns, predictions, confidence = pending
        if not predictions:
            return
        names = set(columns[0]).intersection(*columns[1:])  # the route skips unmonitored kinds
        joined = {  # every column is [N, 1]: one concatenate and one reshape per feature
            name: _window_values(np.concatenate([c[name] for c in columns]).reshape(-1))
            for name in names
        }
        scores = None
        if confidence[0] is not None:  # classifiers; a None confidence becomes NaN
            scores = np.array(confidence, dtype=np.float64)
        self.window.update(joined, predictions, scores)

    def flush(self) -> None:
        with self._lock:
            pending = self._take()
        self._feed(pending)

    def record_rejected(self, feature: str, count: int = 1) -> None:
        self.window.record_rejected(feature, count)

    def report(self, *, detail: bool = False) -> dict[str, Any]:
        self.flush()
        report: dict[str, Any] = self.window.report(detail=detail)
        return report

    def prometheus_values(self) -> list[tuple[str, float, bool]]:
        self.flush()
        return list(self.window.prometheus_values())


def build_window(predictor: Predictor, settings: ApiSettings) -> BufferedWindow | None:
    """The drift window of a freshly loaded model: the bundle's ``monitoring`` settings (from
    its config), overridden by the server's; ``None`` when monitoring is off."""
    from mlservice.monitoring.window import (
        DEFAULT_MIN_ROWS,
        DEFAULT_SIZE,
        PSI_THRESHOLD,
        DriftWindow,
    )

    block = predictor.metadata.get("monitoring")
    bundle: Mapping[str, Any] = block if isinstance(block, Mapping) else {}
    if not settings.monitoring or bundle.get("enabled") is False:
        return None
    size = settings.monitoring_window or int(bundle.get("window") or DEFAULT_SIZE)
    min_rows = settings.monitoring_min_rows or int(bundle.get("min_rows") or DEFAULT_MIN_ROWS)
    threshold = float(bundle.get("psi_threshold") or PSI_THRESHOLD)
    return BufferedWindow(
        DriftWindow.from_bundle(
            predictor.bundle.path,
            predictor.metadata,
            size=size,
            min_rows=min(min_rows, size),
            threshold=threshold,
        )
    )


def _complain_once(window: BufferedWindow, exc: Exception) -> None:
    if id(window) not in _failed:
        _failed.add(id(window))
        log.warning("drift monitoring could not record served rows: %s", exc)


def record_feeds(
    window: BufferedWindow | None,
    predictor: Predictor,
    feeds: Mapping[str, np.ndarray],
    answers: Sequence[Mapping[str, Any]],
) -> None:
    """Feed the rows of one ONNX call (the graph's ``[N, 1]`` inputs) to the window.

    A call of more than ``SAMPLE_ROWS`` rows feeds a uniform random sample of that many: the
    window's shares stay those of the traffic, and a 1,000-row batch costs the event loop
    ~0.1 ms of monitoring instead of ~0.6 ms (``make bench`` measures the server with
    monitoring on and off).
    """
    if window is None or window.profile is None or not answers:
        return
    try:
        if len(answers) > SAMPLE_ROWS:
            picked = _RNG.integers(0, len(answers), SAMPLE_ROWS)  # uniform, with replacement
            answers = [answers[i] for i in picked.tolist()]
            feeds = {name: feeds[name][picked] for name in predictor.feature_names}
        window.add(feeds, answers)  # converted when the buffer enters the window
    except Exception as exc:  # monitoring must never fail a prediction
        _complain_once(window, exc)


def _window_values(values: np.ndarray) -> np.ndarray:
    """Graph inputs as the window takes them: float64, or strings with ``None`` for missing."""
    if values.dtype != object:
        return values.astype(np.float64, copy=False)
    missing = values == MISSING_CATEGORY
    unknown = values == UNKNOWN_CATEGORY  # an empty string was sent
    if missing.any() or unknown.any():
        values = values.copy()
        values[missing] = None
        values[unknown] = ""
    return values


def _category(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if kind == "boolean" and isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    from mlservice.categories import canonical_category

    return canonical_category(value)


def record_rows(
    window: BufferedWindow | None,
    predictor: Predictor,
    rows: Sequence[Sequence[Any]],
    answers: Sequence[Mapping[str, Any]],
) -> None:
    """Feed validated rows (values in feature order) and their answers to the window."""
    if window is None or window.profile is None or not answers:
        return
    if not all(isinstance(row, list | tuple) for row in rows):
        return  # rows of the generic schema (unreadable metadata): nothing to compare
    if len(answers) > SAMPLE_ROWS:  # a uniform sample, as record_feeds
        picked = _RNG.integers(0, len(answers), SAMPLE_ROWS).tolist()
        rows, answers = [rows[i] for i in picked], [answers[i] for i in picked]
    try:
        columns: dict[str, Any] = {}
        for j, info in enumerate(predictor.features_in_order):
            values = [row[j] for row in rows]
            if info.kind == "numeric":
                columns[info.name] = np.array(
                    [np.nan if v is None else v for v in values], dtype=np.float64
                ).reshape(-1, 1)
            elif info.kind in ("categorical", "boolean"):
                columns[info.name] = np.array(
                    [_category(v, info.kind) for v in values], dtype=object
                ).reshape(-1, 1)
        window.add(columns, answers)
    except Exception as exc:  # monitoring must never fail a prediction
        _complain_once(window, exc)


def feature_of_error(loc: Sequence[Any], names: Sequence[str]) -> str | None:
    """The feature a validation error's location names (by name or by position), if any."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    if not parts or parts[0] not in ("features", "instances"):
        return None
    rest = parts[1:] if parts[0] == "features" else parts[2:]
    rest = [p for p in rest if p not in ("named", "positional")]
    if not rest:
        return None
    key = rest[0]
    if isinstance(key, int):
        return names[key] if 0 <= key < len(names) else None
    return str(key) if key in names else None


def record_rejected(state: ModelState, errors: Iterable[Mapping[str, Any]]) -> None:
    """Count each feature a 422 names (once per request and feature)."""
    window = state.window
    predictor = state.predictor
    if window is None or predictor is None:
        return
    names = predictor.feature_names
    seen = {feature_of_error(e.get("loc", ()), names) for e in errors}
    for feature in seen - {None}:
        assert feature is not None
        window.record_rejected(feature)


class DriftCollector(Collector):
    """Drift gauges of the model being served, read from its window at scrape time."""

    def __init__(self, state: ModelState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        score = GaugeMetricFamily(
            "mlservice_drift_score",
            "Population stability index of recent traffic against the training reference, by "
            "feature ('__prediction__': the predictions); NaN until min_rows rows were served.",
            labels=["feature"],
        )
        drift = GaugeMetricFamily(
            "mlservice_drift",
            "1 when the feature's distribution drifted from the training reference, else 0.",
            labels=["feature"],
        )
        overall = GaugeMetricFamily(
            "mlservice_drift_detected", "1 when any monitored feature or the predictions drifted."
        )
        window = self.state.window
        values = window.prometheus_values() if window is not None else []
        for feature, value, drifted in values:
            score.add_metric([feature], value)
            drift.add_metric([feature], 1.0 if drifted else 0.0)
        overall.add_metric([], 1.0 if any(d for _, _, d in values) else 0.0)
        yield score
        yield drift
        yield overall
