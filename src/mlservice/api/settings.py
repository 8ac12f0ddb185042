"""API settings: a plain Pydantic model, filled by ``settings_from_env`` (never at import).

Precedence, lowest first: ``ServingConfig`` defaults, the bundle's ``serving`` metadata (what the
config said at training time), then environment variables:

=============================  ==========================================================
``MLSERVICE_BUNDLE``           bundle directory (default ``data/models/model_latest``)
``MLSERVICE_CORS_ORIGINS``     comma-separated origins allowed by CORS (never ``*``)
``MLSERVICE_API_KEYS_ENV``     name of the variable holding the comma-separated API keys
``MLSERVICE_MAX_BATCH_SIZE``   most instances in one batch request
``MLSERVICE_MAX_BODY_BYTES``   largest request body
``MLSERVICE_REQUEST_TIMEOUT``  seconds a prediction may take before the API answers 504
``MLSERVICE_LOG_LEVEL``        level of the JSON request logs
``MLSERVICE_WATCH_INTERVAL``   seconds between checks of the bundle path for a new model
                               (hot reload); ``0`` (default) turns the watcher off
``MLSERVICE_SHUTDOWN_DELAY``   seconds between SIGTERM and the end of accepting requests,
                               during which ``/health/ready`` answers 503 (default ``0``)
``MLSERVICE_SWITCH_INTERVAL``  the interpreter's thread switch interval while serving, in
                               seconds (default ``0.0002``; Python's own is ``0.005``)
``MLSERVICE_FAST_PATH``        ``false``: every predict request takes the FastAPI route (the
                               fast path answers valid requests to ONNX-served models)
``MLSERVICE_MICRO_BATCHING``   ``false``: never join concurrent small requests into one call
``MLSERVICE_GC_THRESHOLD``     allocations between young-generation collections while serving
                               (default ``20000``; ``0``: Python's collector as it is)
``MLSERVICE_OTEL``             ``true``: keep FastAPI's native OpenTelemetry instrumentation
                               (used when an OpenTelemetry provider is configured)
``MLSERVICE_MONITORING``       ``false``: no drift window (``GET /api/v1/monitoring`` says off)
``MLSERVICE_MONITORING_WINDOW``  rows of recent traffic compared with the training reference
                               (default: the bundle's ``monitoring.window``, 10,000)
``MLSERVICE_MONITORING_MIN_ROWS``  rows needed before drift is judged (default: the bundle's,
                               500)
``MLSERVICE_BODY_TIMEOUT``     seconds a request body may take to arrive before the API
                               answers 408 (default ``15``)
``MLSERVICE_PUBLIC_DOCS``      ``true``: ``/docs`` and the OpenAPI documents answer without a
                               key when keys are configured (default: the key is required)
``MLSERVICE_PUBLIC_METRICS``   ``true``: ``/metrics`` answers without a key when keys are
                               configured (default: the key is required)
=============================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlservice.bundle import load_metadata
from mlservice.config import ServingConfig, reject_wildcard_origins
from mlservice.errors import BundleError, ConfigError

__all__ = ["DEFAULT_BUNDLE", "ENV_PREFIX", "ApiSettings", "settings_from_env"]

DEFAULT_BUNDLE = Path("data/models/model_latest")
ENV_PREFIX = "MLSERVICE_"

_ENV_FIELDS = {
    "MLSERVICE_CORS_ORIGINS": "cors_origins",
    "MLSERVICE_API_KEYS_ENV": "api_keys_env",
    "MLSERVICE_MAX_BATCH_SIZE": "max_batch_size",
    "MLSERVICE_MAX_BODY_BYTES": "max_body_bytes",
    "MLSERVICE_REQUEST_TIMEOUT": "request_timeout_s",
    "MLSERVICE_LOG_LEVEL": "log_level",
    "MLSERVICE_WATCH_INTERVAL": "watch_interval_s",
    "MLSERVICE_SHUTDOWN_DELAY": "shutdown_delay_s",
    "MLSERVICE_SWITCH_INTERVAL": "switch_interval_s",
    "MLSERVICE_FAST_PATH": "fast_path",
    "MLSERVICE_MICRO_BATCHING": "micro_batching",
    "MLSERVICE_OTEL": "otel",
    "MLSERVICE_GC_THRESHOLD": "gc_threshold",
    "MLSERVICE_BODY_TIMEOUT": "body_timeout_s",
    "MLSERVICE_MONITORING": "monitoring",
    "MLSERVICE_MONITORING_WINDOW": "monitoring_window",
    "MLSERVICE_MONITORING_MIN_ROWS": "monitoring_min_rows",
    "MLSERVICE_PUBLIC_DOCS": "public_docs",
    "MLSERVICE_PUBLIC_METRICS": "public_metrics",
}


class ApiSettings(BaseModel):
    """Everything ``create_app`` needs besides the bundle itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle_path: Path = DEFAULT_BUNDLE
    cors_origins: list[str] = Field(default_factory=list)
    api_keys_env: str = Field("MLSERVICE_API_KEYS", min_length=1)
    max_batch_size: int = Field(10_000, gt=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    log_level: str = "info"
    #: Seconds between two looks at the bundle path (``model_latest``) for a new model; 0: off.
    watch_interval_s: float = Field(0.0, ge=0, le=3600)
    #: Seconds readiness answers 503 after SIGTERM while requests are still served.
    shutdown_delay_s: float = Field(0.0, ge=0, le=300)
    #: ``sys.setswitchinterval`` while the app runs (restored at shutdown). A large batch's
    #: onnxruntime call runs in a worker thread without the GIL; when it returns it must get
    #: the GIL back from the event loop, which holds it for up to this long when busy. At
    #: Python's 5 ms default that wait doubled the cost of a 1,000-row batch under load
    #: (measured with ``python -m bench.serving``). Process-wide: the interval in force when
    #: the first app starts is restored when the last one stops.
    switch_interval_s: float = Field(0.0002, gt=0, le=0.1)
    #: Keep FastAPI's native OpenTelemetry instrumentation (it checks for a configured provider
    #: on every request, which costs more than the ONNX prediction; off unless asked for).
    otel: bool = False
    #: While serving, objects alive after the model loads are frozen out of the cyclic
    #: garbage collector's scans and its first threshold is this many allocations (Python's:
    #: 700); 0 leaves the collector as it is. See ``mlservice.api.lifecycle._ProcessTuning``.
    gc_threshold: int = Field(20_000, ge=0)
    #: Answer valid predict requests to ONNX-served models without FastAPI's request machinery
    #: (``mlservice.api.fast_path``); anything else always takes the FastAPI route.
    fast_path: bool = True
    #: Join the small fast-path requests that are ready together into one ONNX call
    #: (``mlservice.api.fast_path.MicroBatcher``); never waits for more requests to arrive.
    micro_batching: bool = True
    #: Seconds a request body may take to arrive in full; past them the API answers 408 and
    #: closes the connection (a client that stops sending would otherwise hold it forever).
    body_timeout_s: float = Field(15.0, gt=0, le=300)
    #: With API keys configured, ``/docs`` and the OpenAPI documents (features, categories,
    #: training ranges) need a key too, unless this is true. Without keys everything is open.
    public_docs: bool = False
    #: With API keys configured, ``/metrics`` (per-class counts) needs a key too, unless this
    #: is true (Prometheus sends one with ``authorization: {credentials: ...}``).
    public_metrics: bool = False
    #: Keep a drift window of served rows (``GET /api/v1/monitoring``); the bundle's
    #: ``monitoring.enabled: false`` turns it off too.
    monitoring: bool = True
    #: Rows in the drift window and rows before drift is judged; ``None``: the bundle's.
    monitoring_window: int | None = Field(None, ge=10, le=1_000_000)
    monitoring_min_rows: int | None = Field(None, ge=1)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        return reject_wildcard_origins(value)

    def api_keys(self, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The configured API keys (empty: authentication is off)."""
        raw = (os.environ if environ is None else environ).get(self.api_keys_env, "")
        return tuple(key.strip() for key in raw.split(",") if key.strip())


def _serving_defaults(bundle_path: Path) -> dict[str, Any]:
    try:
        serving = load_metadata(bundle_path).get("serving")
    except (BundleError, OSError):
        return {}
    if not isinstance(serving, Mapping):
        return {}
    known = set(ServingConfig.model_fields)
    try:
        config = ServingConfig.model_validate({k: v for k, v in serving.items() if k in known})
    except ValidationError:
        return {}
    return {
        "cors_origins": config.cors_origins,
        "api_keys_env": config.api_keys_env,
        "max_batch_size": config.max_batch_size,
        "max_body_bytes": config.max_body_bytes,
        "request_timeout_s": config.timeout_s,
    }


def settings_from_env(
    bundle_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> ApiSettings:
    """Settings from the bundle's ``serving`` metadata, overridden by ``MLSERVICE_*`` variables.

    Raises ``ConfigError`` naming the variable when one holds an invalid value.
    """
    env = os.environ if environ is None else environ
    path = (
        Path(bundle_path)
        if bundle_path is not None
        else Path(env.get("MLSERVICE_BUNDLE") or DEFAULT_BUNDLE)
    )
    values: dict[str, Any] = {**_serving_defaults(path), "bundle_path": path}
    for var, field in _ENV_FIELDS.items():
        raw = env.get(var)
        if raw is None or (raw.strip() == "" and field != "cors_origins"):
            continue
        if field == "cors_origins":
            values[field] = [o.strip() for o in raw.split(",") if o.strip()]
        else:
            values[field] = raw.strip()
    try:
        return ApiSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        env_for = {field: var for var, field in _ENV_FIELDS.items()}
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            source = env_for.get(field, field)
            problems.append((source, f"{err['msg']}, got {err.get('input')!r}"))
        raise ConfigError("invalid API settings", problems) from exc
