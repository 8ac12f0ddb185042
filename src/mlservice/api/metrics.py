"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (never the global one).

Several apps in one process (tests) do not collide. With ``--workers N`` every worker counts its
own requests; scrape each worker or run one worker per container.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "ApiMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """Requests and latency by route and status, predictions by class, errors by kind."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlservice_http_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlservice_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlservice_predictions_total",
            "Predictions made, by predicted class ('value' for regression).",
            ["prediction"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mlservice_errors_total",
            "Error answers by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.fast_path = Counter(
            "mlservice_fast_path_total",
            "Predict requests by path: 'answered' by the fast path, 'deferred' to the route.",
            ["outcome"],
            registry=self.registry,
        )
        self.fast_answered = self.fast_path.labels(outcome="answered")
        self.fast_deferred = self.fast_path.labels(outcome="deferred")
        self.micro_batches = Histogram(
            "mlservice_micro_batch_requests",
            "Requests joined into one onnxruntime call by the micro-batcher.",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "mlservice_model_loaded",
            "1 when a verified model is loaded and serving.",
            registry=self.registry,
        )
        # Labelled children, looked up once: ``labels()`` costs more than the increment. The
        # label sets are bounded (routes are templates, predictions are the model's classes).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._prediction_children: dict[str, Any] = {}

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            labels = {"method": method, "route": route, "status": str(status)}
            children = (self.requests.labels(**labels), self.latency.labels(**labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def _prediction(self, label: str) -> Any:
        child = self._prediction_children.get(label)
        if child is None:
            child = self._prediction_children[label] = self.predictions.labels(prediction=label)
        return child

    def count_predictions(self, labels: Iterable[object], *, classification: bool) -> None:
        """Count predictions: per class for classifiers, as 'value' otherwise."""
        if not classification:
            self._prediction("value").inc(sum(1 for _ in labels))
            return
        for label, count in _Tally(labels).items():  # count first: few distinct classes
            self._prediction("null" if label is None else str(label)).inc(count)

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
