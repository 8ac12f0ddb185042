"""``create_app``: the FastAPI app serving one bundle.

The bundle's ``metadata.json`` is read cheaply when the app is built, to generate the typed
request schema; the model itself is loaded and verified in the lifespan handler. A missing,
corrupt or tampered bundle never stops the process: ``/health`` stays 200, ``/health/ready`` and
the predict routes answer 503 with the reason until a reload (``POST /admin/reload`` or the bundle
watcher) brings a good bundle. Loading, hot reload and the SIGTERM drain live in
``mlservice.api.lifecycle``.

``mlservice.api.main:app`` (for ``uvicorn``) is built lazily on first access from
``MLSERVICE_BUNDLE``; importing this module builds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from mlservice.api.deps import ModelState, require_api_key
from mlservice.api.errors import install_error_handlers
from mlservice.api.fast_path import FastPredictMiddleware
from mlservice.api.lifecycle import ModelReloader, serving_lifecycle
from mlservice.api.metrics import ApiMetrics
from mlservice.api.middleware import (
    BodyGuardMiddleware,
    RequestContextMiddleware,
    configure_json_logging,
)
from mlservice.api.monitoring import DriftCollector
from mlservice.api.routes import (
    build_predict_router,
    health_router,
    model_router,
    monitoring_router,
)
from mlservice.api.routes.admin import build_admin_router
from mlservice.api.routes.explain import build_explain_router
from mlservice.api.routes.mlflow_protocol import build_mlflow_router
from mlservice.api.routes.open_inference import build_open_inference_router
from mlservice.api.schemas import build_request_models
from mlservice.api.settings import ApiSettings, settings_from_env
from mlservice.bundle import load_metadata
from mlservice.inference import FeatureInfo

__all__ = ["DOCS_OPENAPI_URL", "STATIC_URL", "create_app", "openapi_30"]

log = logging.getLogger("mlservice.api")

STATIC_URL = "/static/swagger-ui"
DOCS_OPENAPI_URL = "/openapi-3.0.json"
_NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
_JSON_PATHS = (
    "/api/v1/predict",
    "/api/v1/predict/batch",
    "/api/v1/explain",
    "/api/v1/explain/batch",
    "/api/v1/forecast",
    "/api/v1/rank",
)


def _read_schema(path: Path) -> tuple[dict[str, Any] | None, tuple[FeatureInfo, ...] | None]:
    """Metadata and feature schema without loading the model (``None`` when unreadable)."""
    try:
        meta = load_metadata(path)
        names = meta.get("feature_names") or []
        by_name = {str(s["name"]): FeatureInfo.from_metadata(s) for s in meta["features"]}
        features = tuple(by_name[str(n)] for n in names) if names else tuple(by_name.values())
    except Exception as exc:  # any unreadable metadata: generic schema, 503 on predict
        log.warning("cannot read the feature schema of the bundle: %s", exc)
        return None, None
    return meta, features or None


def _public_paths(settings: ApiSettings) -> tuple[str, ...]:
    """Paths that answer without an API key when keys are configured."""
    paths = ["/health", "/health/ready", "/ping", "/v2/health/live", "/v2/health/ready"]
    if settings.public_docs:
        paths += ["/docs", "/docs/oauth2-redirect", "/openapi.json", DOCS_OPENAPI_URL]
    if settings.public_metrics:
        paths.append("/metrics")
    return tuple(paths)


def _include_task_routes(
    app: FastAPI,
    meta: dict[str, Any] | None,
    example: dict[str, Any],
    auth: list[Any],
    max_rows: int,
) -> None:
    """``/forecast`` for time-series models, ``/rank`` for ranking models."""
    task = (meta or {}).get("task")
    if task == "time_series":
        from mlservice.api.routes.forecast import build_forecast_router

        app.include_router(build_forecast_router(meta, max_rows=max_rows), dependencies=auth)
    elif task == "ranking":
        from mlservice.api.routes.rank import build_rank_router

        app.include_router(
            build_rank_router(example or None, max_rows=max_rows), dependencies=auth
        )


def _install_docs(app: FastAPI, title: str) -> None:
    """Swagger UI from the locally installed ``swagger-ui-bundle``: no CDN."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(STATIC_URL, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    oauth_url = "/docs/oauth2-redirect"

    @app.get(DOCS_OPENAPI_URL, include_in_schema=False)
    def docs_openapi() -> JSONResponse:
        # Swagger UI 4 reads OpenAPI 3.0 only; /openapi.json stays 3.1.
        return JSONResponse(openapi_30(app.openapi()))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=DOCS_OPENAPI_URL,
            title=f"{title} - docs",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon-32x32.png",
            oauth2_redirect_url=oauth_url,
            swagger_ui_parameters={
                "docExpansion": "list",
                "displayRequestDuration": True,
                "validatorUrl": None,  # the default badge would call validator.swagger.io
            },
        )

    @app.get(oauth_url, include_in_schema=False)
    def oauth_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def create_app(bundle_path: Path | None = None, settings: ApiSettings | None = None) -> FastAPI:
    """Build the API for the bundle at ``bundle_path`` (default: ``settings.bundle_path``).

    ``settings`` default to ``settings_from_env(bundle_path)``: the bundle's ``serving`` metadata
    overridden by ``MLSERVICE_*`` variables. API keys are read from the variable named by
    ``settings.api_keys_env`` now, once.
    """
    settings = settings or settings_from_env(bundle_path)
    path = Path(bundle_path) if bundle_path is not None else settings.bundle_path
    meta, features = _read_schema(path)
    name = str((meta or {}).get("name", "model"))
    version = str((meta or {}).get("version", "0.0.0"))
    models = build_request_models(
        features, model_name=name, max_batch_size=settings.max_batch_size
    )
    metrics = ApiMetrics()
    state = ModelState(path=path, api_keys=settings.api_keys())
    configure_json_logging(settings.log_level)
    reloader = ModelReloader(
        state, metrics, features=features, task=(meta or {}).get("task"), settings=settings
    )
    metrics.registry.register(DriftCollector(state))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with serving_lifecycle(
            reloader,
            watch_interval_s=settings.watch_interval_s,
            shutdown_delay_s=settings.shutdown_delay_s,
            switch_interval_s=settings.switch_interval_s,
            gc_threshold=settings.gc_threshold,
        ):
            yield

    title = f"mlservice: {name}"
    app = FastAPI(
        title=title,
        version=version,
        description=(
            f"Predictions of the `{name}` model ({(meta or {}).get('task', 'unknown')} task). "
            "See `GET /api/v1/model` for its features, metrics and targets."
        ),
        docs_url=None,
        redoc_url=None,
        # No redirects: Starlette builds them from the Host header (`/predict/` → 307 to
        # http://<any host>/predict); a wrong path is a 404.
        redirect_slashes=False,
        lifespan=lifespan,
        telemetry=None if settings.otel else _NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model = state
    app.state.reloader = reloader

    install_error_handlers(app, metrics)
    auth = [Depends(require_api_key)] if state.api_keys else []
    app.include_router(health_router)
    app.include_router(build_admin_router(keys_configured=bool(state.api_keys)))
    app.include_router(model_router, dependencies=auth)
    app.include_router(monitoring_router, dependencies=auth)
    app.include_router(build_predict_router(models), dependencies=auth)
    app.include_router(build_explain_router(models), dependencies=auth)
    # Clients of `mlflow models serve` (POST /invocations) and of KServe / MLServer / Triton
    # (the Open Inference Protocol under /v2) talk to the same model, checks and limits.
    app.include_router(
        build_mlflow_router(
            dependencies=auth, features=features, max_batch_size=settings.max_batch_size
        )
    )
    app.include_router(build_open_inference_router(dependencies=auth))
    _include_task_routes(app, meta, models.named_example, auth, settings.max_batch_size)
    _install_docs(app, title)

    if settings.fast_path:
        # Innermost: it sees only bodies the guard let through (size, content type).
        app.add_middleware(FastPredictMiddleware, state=state, settings=settings, metrics=metrics)
    app.add_middleware(
        BodyGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        json_paths=_JSON_PATHS,
        metrics=metrics,
        api_keys=state.api_keys,
        public_paths=_public_paths(settings),
        public_prefixes=(STATIC_URL + "/",),
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        static_prefix=STATIC_URL,
        draining=lambda: state.draining,
    )
    return app


# ------------------------------------------------------------- OpenAPI 3.0 view for /docs
def openapi_30(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAPI 3.1 document rewritten as 3.0 for Swagger UI 4 (which reads 3.0.n).

    ``/openapi.json`` stays 3.1; this view only feeds the bundled offline Swagger UI.
    """
    converted = _to_30(schema)
    converted["openapi"] = "3.0.3"
    return dict(converted)


def _to_30(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _to_30(value) for key, value in node.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            out.pop(key)
            out["nullable"] = True
            if len(rest) == 1 and "$ref" not in rest[0]:
                out = {**rest[0], **out}
            elif len(rest) == 1:
                out["allOf"] = rest
            else:
                out[key] = rest
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        out["nullable"] = len(types) < len(out["type"]) or out.get("nullable", False)
        out["type"] = types[0] if len(types) == 1 else "string"
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if "prefixItems" in out:
        out.pop("prefixItems")
        out["items"] = {"description": "values in model feature order"}
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(out.get(key), int | float) and not isinstance(out.get(key), bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = out[key]
            out[key] = True
    return out


def __getattr__(name: str) -> Any:
    # ``uvicorn mlservice.api.main:app``: the one lazily built module attribute (STYLE §1).
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
