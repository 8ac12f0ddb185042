"""MLflow's scoring protocol: ``GET /ping``, ``GET /version`` and ``POST /invocations``.

A client of ``mlflow models serve`` (``ScoringServerClient``, SageMaker-style callers, plain
``requests``) works unchanged against this server. ``/invocations`` takes what MLflow 3's
scoring server takes (``mlflow/pyfunc/scoring_server``):

* ``Content-Type: application/json`` with exactly one of ``dataframe_split`` (``columns``,
  ``data``, optional ``index``), ``dataframe_records`` (a list of rows), ``instances`` (rows,
  or columns) or ``inputs`` (columns, or rows); ``params`` and any other key are ignored, as
  MLflow does. JSON's ``NaN`` (what ``json.dumps`` writes for a pandas gap) means a missing
  value;
* ``Content-Type: text/csv``: a header line and rows, read by ``pandas.read_csv``;
* only the ``charset`` parameter, and only UTF-8 (415 otherwise, as MLflow).

Columns the model does not take are ignored (MLflow's schema enforcement ignores them too: a
frame with its target column, or a CSV with its index, is fine). Rows of positional values are
taken in model feature order. Every row is checked by the predictor as on
``POST /api/v1/predict/batch``, under the same limits: more rows than ``max_batch_size`` is a
413, a body that is not one of these formats a 400, a value the schema refuses a 422 naming the
row and feature. Errors carry the API's ``detail`` and ``request_id`` and MLflow's
``error_code`` and ``message``.

The answer is MLflow's for a scikit-learn model: ``{"predictions": [...]}``, one class label or
one number per row, in the order sent.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from importlib import metadata as _metadata
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from mlservice.api.deps import get_model_state, get_predictor
from mlservice.api.errors import (
    ERROR_RESPONSES,
    ApiError,
    BatchTooLargeError,
    ModelUnavailableError,
    request_id_of,
)
from mlservice.api.routes.predict import MODEL_HEADER_NAME, JsonBytesResponse, run_prediction
from mlservice.errors import SchemaError
from mlservice.inference import FeatureInfo, Predictor

__all__ = [
    "FORMATS",
    "MLFLOW_PROTOCOL_VERSION",
    "BadRequestError",
    "UnsupportedMediaTypeError",
    "build_mlflow_router",
    "csv_rows",
    "parse_json_body",
    "payload_rows",
]

#: The MLflow version ``GET /version`` reports when MLflow is not installed: the scoring
#: protocol implemented here is MLflow 3's.
MLFLOW_PROTOCOL_VERSION = "3.0.0"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
_BOM = b"\xef\xbb\xbf"
_HINT = "See GET /api/v1/model for the feature schema."
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    413: "RESOURCE_EXHAUSTED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

Rows = list[list[Any]]


class BadRequestError(ApiError):
    """A body that is not one of the protocol's formats (400)."""

    status_code = 400
    kind = "bad_request"


class UnsupportedMediaTypeError(ApiError):
    status_code = 415
    kind = "unsupported_media_type"


# --------------------------------------------------------------------------------- parsing
def _json_constant(name: str) -> float | None:
    """``NaN`` (pandas' gap written by ``json.dumps``) is a missing value; infinities stay
    numbers, for the schema checks to refuse by name."""
    return None if name == "NaN" else float(name)


def parse_json_body(body: bytes) -> Any:
    """The JSON value of ``body``: orjson first, then the stdlib for ``NaN``/``Infinity``
    (which ``json.dumps`` writes and orjson refuses). 400 when it is not JSON."""
    if body.startswith(_BOM):
        body = body[len(_BOM):]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_json_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadRequestError(f"request body is not valid JSON: {reason}") from exc


def _media_type(content_type: str | None) -> str:
    """``json`` or ``csv`` from the ``Content-Type`` header, by MLflow's rules (415 else)."""
    parts = [part.strip() for part in (content_type or "").split(";")]
    mime = parts[0].lower()
    params = {}
    for part in parts[1:]:
        if part:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"').lower()
    if params.get("charset", "utf-8") != "utf-8":
        raise UnsupportedMediaTypeError("the scoring server only supports UTF-8 (charset=utf-8)")
    unknown = sorted(set(params) - {"charset"})
    if unknown:
        raise UnsupportedMediaTypeError(
            f"unrecognized content type parameters: {', '.join(unknown)}; the scoring protocol "
            "of MLflow 2 and later takes none but charset (send the format as a JSON key such "
            "as dataframe_split)"
        )
    if mime == "text/csv":
        return "csv"
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return "json"
    got = repr(mime) if mime else "no Content-Type"
    raise UnsupportedMediaTypeError(
        f"Content-Type must be application/json or text/csv, got {got}"
    )


class _Layout:
    """How rows of one predictor are laid out: feature order and the required features."""

    def __init__(self, predictor: Predictor, max_rows: int) -> None:
        self.features: tuple[FeatureInfo, ...] = predictor.features_in_order
        self.names = tuple(f.name for f in self.features)
        self.required = frozenset(f.name for f in self.features if not f.nullable)
        self.max_rows = max_rows

    def check_count(self, count: int, what: str) -> None:
        if count > self.max_rows:
            raise BatchTooLargeError(
                f"{what}: request has {count} rows; the limit is {self.max_rows} "
                "(max_batch_size). Split it into smaller requests."
            )

    def missing(self, present: Any, where: str) -> None:
        absent = [name for name in self.names if name in self.required and name not in present]
        if absent:
            raise SchemaError(f"{where}request is missing features {absent}. {_HINT}")

    def from_mapping(self, row: Mapping[str, Any], index: int) -> list[Any]:
        self.missing(row, f"row {index}: ")
        return [row.get(name) for name in self.names]

    def positional(self, row: Sequence[Any], index: int) -> list[Any]:
        if len(row) != len(self.names):
            raise SchemaError(
                f"row {index}: expected {len(self.names)} values in the order "
                f"{list(self.names)}, got {len(row)}"
            )
        return list(row)


def _row_list(rows: Any, layout: _Layout, where: str) -> Rows:
    """Rows given as a list: objects of columns or lists of values in feature order."""
    layout.check_count(len(rows), where)
    if len(layout.names) == 1 and all(not isinstance(r, dict | list) for r in rows):
        return [[value] for value in rows]  # one feature: a flat list is its column
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            out.append(layout.from_mapping(row, i))
        elif isinstance(row, list):
            out.append(layout.positional(row, i))
        else:
            raise BadRequestError(
                f"{where}[{i}] must be an object of columns or a list of values in feature "
                f"order, got {type(row).__name__}"
            )
    return out


def _column_rows(columns: Mapping[str, Any], layout: _Layout, where: str) -> Rows:
    """Rows from an object of columns (``{"feature": [values...]}``; scalars: one row)."""
    known = {name: columns[name] for name in layout.names if name in columns}
    if not known:
        raise BadRequestError(
            f"{where}: none of the columns {sorted(columns)[:20]} is a feature of the model; "
            f"it takes {list(layout.names)}"
        )
    layout.missing(known, "")
    if known and all(not isinstance(v, list) for v in known.values()):
        return [[known.get(name) for name in layout.names]]
    lengths = {len(v) if isinstance(v, list) else -1 for v in known.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise BadRequestError(
            f"{where}: every column must be a list of values of the same length"
        )
    count = lengths.pop()
    layout.check_count(count, where)
    blank = [None] * count
    return [list(row) for row in zip(*(known.get(n, blank) for n in layout.names), strict=True)]


def _split_rows(split: Any, layout: _Layout) -> Rows:
    """Rows of ``dataframe_split``: ``data`` rows under ``columns`` (feature order without)."""
    where = "dataframe_split"
    if not isinstance(split, dict) or "data" not in split or set(split) - _SPLIT_KEYS:
        got = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise BadRequestError(
            f"{where} must be an object with a 'data' field and optionally 'columns' and "
            f"'index' fields, got {got}"
        )
    data, columns = split["data"], split.get("columns")
    if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
        raise BadRequestError(f"{where}.data must be a list of rows, each a list of values")
    layout.check_count(len(data), where)
    if columns is None or list(columns) == list(layout.names):
        return [layout.positional(row, i) for i, row in enumerate(data)]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequestError(f"{where}.columns must be a list of column names")
    bad = next((i for i, row in enumerate(data) if len(row) != len(columns)), None)
    if bad is not None:
        raise BadRequestError(
            f"{where}.data[{bad}] has {len(data[bad])} values for {len(columns)} columns"
        )
    position = {name: j for j, name in enumerate(columns)}
    layout.missing(position, "")
    picks = [position.get(name) for name in layout.names]
    return [[None if j is None else row[j] for j in picks] for row in data]


def payload_rows(payload: Any, predictor: Predictor, max_rows: int) -> Rows:
    """The rows of a parsed JSON body in any of the protocol's formats, in feature order.

    Raises ``BadRequestError`` (400) for a body of no known format, ``BatchTooLargeError``
    (413) past ``max_rows`` and ``SchemaError`` (422) for missing features or wrong row sizes;
    the values themselves are checked by the predictor.
    """
    if not isinstance(payload, dict):
        raise BadRequestError(
            f"the body must be a JSON object with exactly one of the fields {list(FORMATS)}, "
            f"got a {type(payload).__name__}"
        )
    found = [key for key in FORMATS if key in payload]
    if len(found) != 1:
        raise BadRequestError(
            f"the body must be a JSON object with exactly one of the fields {list(FORMATS)}; "
            f"got the fields {sorted(str(k) for k in payload)}"
        )
    key = found[0]
    value = payload[key]
    layout = _Layout(predictor, max_rows)
    if key == "dataframe_split":
        return _split_rows(value, layout)
    if isinstance(value, list):
        return _row_list(value, layout, key)
    if isinstance(value, dict) and key != "dataframe_records":
        return _column_rows(value, layout, key)
    shape = "a list of records" if key == "dataframe_records" else "a list of rows or columns"
    raise BadRequestError(f"{key} must be {shape}, got {type(value).__name__}")


def _csv_dtypes(features: Sequence[FeatureInfo]) -> dict[str, Any]:
    """Read string-valued features as text: ``"01234"`` stays a zip code, not the number 1234."""
    return {
        f.name: str
        for f in features
        if f.kind in ("categorical", "text", "datetime")
        and all(isinstance(c, str) for c in f.categories or ())
    }


def csv_rows(body: bytes, predictor: Predictor, max_rows: int) -> Rows:
    """The rows of a CSV body (a header line, then rows), in feature order."""
    import pandas as pd

    layout = _Layout(predictor, max_rows)
    try:
        text = body.decode("utf-8-sig")
        frame = pd.read_csv(io.StringIO(text), dtype=_csv_dtypes(layout.features))
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadRequestError(
            f"the body is not a CSV table (a header line, then one line per row): {reason}"
        ) from exc
    layout.check_count(len(frame), "csv")
    layout.missing(frame.columns, "")
    count = len(frame)
    columns = []
    for name in layout.names:
        if name not in frame.columns:
            columns.append([None] * count)
            continue
        column = frame[name]
        columns.append(column.astype(object).where(column.notna(), None).tolist())
    return [list(row) for row in zip(*columns, strict=True)]


# ---------------------------------------------------------------------------------- routes
def _error_body(request: Request, exc: ApiError | SchemaError, *, count: bool = True) -> Response:
    """The API's error shape with MLflow's ``error_code`` and ``message`` added (counted in
    ``mlservice_errors_total`` unless it answers a probe)."""
    status, kind = (422, "validation") if isinstance(exc, SchemaError) else (
        exc.status_code, exc.kind
    )
    detail = str(exc) if isinstance(exc, SchemaError) else exc.detail
    if count:
        request.app.state.metrics.count_error(kind)
    body = {
        "error_code": _MLFLOW_CODES.get(status, "INTERNAL_ERROR"),
        "message": detail,
        "detail": detail,
        "request_id": request_id_of(request),
    }
    headers = exc.headers if isinstance(exc, ApiError) else None
    return JsonBytesResponse(body, status_code=status, headers=headers)


def _installed_mlflow_version() -> str:
    for dist in ("mlflow", "mlflow-skinny"):
        try:
            return _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            continue
    return MLFLOW_PROTOCOL_VERSION


def _records_schema(features: Sequence[FeatureInfo], max_rows: int) -> dict[str, Any]:
    """OpenAPI schema of the ``dataframe_records`` body (the one format documented)."""
    props: dict[str, Any] = {}
    for f in features:
        if f.kind == "numeric":
            spec: dict[str, Any] = {"type": "number", "minimum": -1e15, "maximum": 1e15}
        elif f.kind == "boolean":
            spec = {"type": "boolean"}
        elif f.kind == "categorical" and f.closed and f.categories:
            spec = {"enum": list(f.categories)}
        else:
            spec = {"type": "string"}
        props[f.name] = {"anyOf": [spec, {"type": "null"}]} if f.nullable else spec
    row = {
        "type": "object",
        "properties": props,
        "required": [f.name for f in features if not f.nullable],
        "description": "One row; columns the model does not take are ignored.",
    }
    return {
        "type": "object",
        "required": ["dataframe_records"],
        "properties": {
            "dataframe_records": {
                "type": "array", "items": row, "minItems": 1, "maxItems": max_rows
            }
        },
    }


_PREDICTIONS_SCHEMA = {
    "type": "object",
    "required": ["predictions"],
    "properties": {"predictions": {"type": "array", "items": {}}},
}


def build_mlflow_router(
    *,
    dependencies: Sequence[Any] = (),
    features: Sequence[FeatureInfo] | None = None,
    max_batch_size: int = 10_000,
    version: str | None = None,
) -> APIRouter:
    """The MLflow scoring routes.

    ``dependencies`` (e.g. the API-key check) guard ``/version`` and ``/invocations``; ``/ping``
    is a probe and never takes them. With ``features`` (the bundle's schema) ``/invocations``
    is documented in OpenAPI with its ``dataframe_records`` form (``max_batch_size`` rows at
    most); without, it is left out of the document. The row limit enforced is always the
    app's ``settings.max_batch_size``. ``version`` is what ``/version`` answers (default: the
    installed MLflow's version, else ``MLFLOW_PROTOCOL_VERSION``).
    """
    router = APIRouter(tags=["mlflow"])
    guarded = list(dependencies)
    reported = version or _installed_mlflow_version()

    @router.get(
        "/ping",
        summary="MLflow health check",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, 503: ERROR_RESPONSES[503]},
    )
    async def ping(request: Request) -> Response:
        """200 once a model is loaded and while the server is not shutting down."""
        state = await get_model_state(request)
        if state.draining or state.predictor is None:
            reason = "shutting down (SIGTERM received)" if state.draining else state.error
            unavailable = ModelUnavailableError(f"not ready: {reason}")
            return _error_body(request, unavailable, count=False)  # probes poll by design
        return PlainTextResponse("\n")

    @router.get(
        "/version",
        summary="MLflow version",
        dependencies=guarded,
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, 401: ERROR_RESPONSES[401]},
    )
    async def mlflow_version() -> Response:
        """The MLflow version whose scoring protocol ``/invocations`` speaks."""
        return PlainTextResponse(reported)

    extra: dict[str, Any] = {}
    if features:
        schema = _records_schema(features, max_batch_size)
        extra = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": schema}}}}

    @router.post(
        "/invocations",
        summary="MLflow scoring: predict a DataFrame",
        dependencies=guarded,
        include_in_schema=bool(features),
        openapi_extra=extra,
        responses={
            200: {"content": {"application/json": {"schema": _PREDICTIONS_SCHEMA}}},
            **ERROR_RESPONSES,
        },
    )
    async def invocations(request: Request) -> Response:
        """`dataframe_split`, `dataframe_records`, `instances` or `inputs` as JSON, or a CSV
        table (`Content-Type: text/csv`); answers `{"predictions": [...]}`."""
        try:
            return await _invoke(request)
        except (ApiError, SchemaError) as exc:
            return _error_body(request, exc)

    return router


async def _invoke(request: Request) -> Response:
    predictor = await get_predictor(await get_model_state(request))
    settings = request.app.state.settings
    media = _media_type(request.headers.get("content-type"))
    body = await request.body()
    limit = settings.max_batch_size
    if media == "csv":
        rows = await run_in_threadpool(csv_rows, body, predictor, limit)
    else:
        rows = payload_rows(parse_json_body(body), predictor, limit)
    results = await run_prediction(
        predictor,
        rows,
        timeout_s=settings.request_timeout_s,
        request=request,
        metrics=request.app.state.metrics,
    )
    return JsonBytesResponse(
        {"predictions": [r["prediction"] for r in results]},
        headers={MODEL_HEADER_NAME: predictor.bundle_id},
    )
