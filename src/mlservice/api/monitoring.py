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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    "DriftCollector",
    "build_window",
    "feature_of_error",
    "record_feeds",
    "record_rejected",
    "record_rows",
]

log = logging.getLogger("mlservice.api.monitoring")
_failed: set[int] = set()


def build_window(predictor: Predictor, settings: ApiSettings) -> DriftWindow | None:
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
    return DriftWindow.from_bundle(
        predictor.bundle.path,
        predictor.metadata,
        size=size,
        min_rows=min(min_rows, size),
        threshold=threshold,
    )


def _complain_once(window: DriftWindow, exc: Exception) -> None:
    if id(window) not in _failed:
        _failed.add(id(window))
        log.warning("drift monitoring could not record served rows: %s", exc)


def _answers(answers: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    predictions = [a.get("prediction") for a in answers]
    confidence = [a.get("confidence") for a in answers]
    return predictions, [np.nan if c is None else c for c in confidence]


def record_feeds(
    window: DriftWindow | None,
    predictor: Predictor,
    feeds: Mapping[str, np.ndarray],
    answers: Sequence[Mapping[str, Any]],
) -> None:
    """Feed the rows of one ONNX call (the graph's ``[N, 1]`` inputs) to the window."""
    if window is None or window.profile is None or not answers:
        return
    try:
        columns: dict[str, Any] = {}
        for name in predictor.feature_names:
            values: Any = feeds[name].reshape(-1)
            if values.dtype == object:  # the graph's missing / unknown markers
                missing = values == MISSING_CATEGORY
                unknown = values == UNKNOWN_CATEGORY  # an empty string was sent
                if missing.any() or unknown.any():
                    values = values.copy()
                    values[missing] = None
                    values[unknown] = ""
            else:
                values = values.astype(np.float64)
            columns[name] = values
        predictions, confidence = _answers(answers)
        window.update(columns, predictions, confidence)
    except Exception as exc:  # monitoring must never fail a prediction
        _complain_once(window, exc)


def _category(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if kind == "boolean" and isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    from mlservice.categories import canonical_category

    return canonical_category(value)


def record_rows(
    window: DriftWindow | None,
    predictor: Predictor,
    rows: Sequence[Sequence[Any]],
    answers: Sequence[Mapping[str, Any]],
) -> None:
    """Feed validated rows (values in feature order) and their answers to the window."""
    if window is None or window.profile is None or not answers:
        return
    if not all(isinstance(row, list | tuple) for row in rows):
        return  # rows of the generic schema (unreadable metadata): nothing to compare
    try:
        columns: dict[str, Any] = {}
        for j, info in enumerate(predictor.features_in_order):
            values = [row[j] for row in rows]
            if info.kind == "numeric":
                columns[info.name] = np.array(
                    [np.nan if v is None else v for v in values], dtype=np.float64
                )
            elif info.kind in ("categorical", "boolean"):
                columns[info.name] = np.array(
                    [_category(v, info.kind) for v in values], dtype=object
                )
        predictions, confidence = _answers(answers)
        window.update(columns, predictions, confidence)
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
