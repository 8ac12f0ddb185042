"""The Open Inference Protocol (KServe "V2", MLServer, Triton) over REST.

``GET /v2/health/live`` and ``/v2/health/ready`` (probes), ``GET /v2`` (server metadata),
``GET /v2/models/{name}[/versions/{version}]`` (model metadata), ``.../ready`` and
``POST .../infer``. The model is the served bundle: its name, its one version.

Its metadata lists one input per feature, the way MLServer's pandas codec encodes a DataFrame
column: ``BYTES`` for categorical, text and date/time features, ``FP64`` for numbers, ``BOOL``
for booleans, shape ``[-1, 1]``. A request sends those tensors (shape ``[N]`` or ``[N, 1]``; a
nullable feature may be left out) or, when every feature is numeric, one ``[N, F]`` tensor in
feature order as KServe's scikit-learn server takes. Any integer or float datatype is taken for
a numeric feature, and integers for a categorical one (a zip code). A missing value is ``null``
or ``NaN``, or, in a categorical or date/time ``BYTES`` tensor, one of pandas' missing-value
strings that is not a category (``""``, ``"nan"``, ``"None"``...): ``tritonclient`` cannot send
``null`` and writes a pandas gap as ``"nan"``.

The outputs are ``predict`` (``[N, 1]``: class labels as ``BYTES``, or ``FP64`` values) and, for
classifiers, ``predict_proba`` (``FP64 [N, n_classes]``, classes in the order of the model's
``classes``); the request's ``outputs`` picks some of them. Triton's binary tensor data
extension works both ways (``Inference-Header-Content-Length``, ``binary_data_size``,
``binary_data`` / ``binary_data_output``), so ``tritonclient`` works with its defaults.

Errors are the protocol's ``{"error": "..."}``: 400 for a bad request (the tensor and feature
named), 404 for another model or version, 413 past ``max_batch_size`` rows, 503 before a model
is loaded. Rows are checked by the predictor as on ``POST /api/v1/predict/batch``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlservice import __version__
from mlservice.api.deps import get_model_state
from mlservice.api.errors import ApiError, BatchTooLargeError, ModelUnavailableError, request_id_of
from mlservice.api.routes._offload import per_predictor
from mlservice.api.routes.mlflow_protocol import BadRequestError, parse_json_body
from mlservice.api.routes.predict import MODEL_HEADER_NAME, run_prediction
from mlservice.errors import SchemaError
from mlservice.inference import FeatureInfo, Predictor

__all__ = [
    "BINARY_HEADER",
    "ModelNotFoundError",
    "build_open_inference_router",
    "model_metadata",
]

BINARY_HEADER = "Inference-Header-Content-Length"
_NUMPY = {
    "BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
_INTEGERS = frozenset(k for k in _NUMPY if "INT" in k)
_NUMBERS = _INTEGERS | {"FP16", "FP32", "FP64"}
#: Datatypes each feature kind takes.
_BYTES = frozenset({"BYTES"})
_ACCEPTED = {"numeric": _NUMBERS, "boolean": frozenset({"BOOL"}), "categorical": _INTEGERS | _BYTES}
_DECLARED = {"numeric": "FP64", "boolean": "BOOL"}
#: pandas' default missing-value strings (``read_csv``), as tritonclient writes a gap.
_NA_STRINGS = frozenset({"", "nan", "NaN", "NAN", "None", "null", "NULL", "NA", "<NA>", "NaT",
                         "N/A", "n/a", "#N/A", "-nan", "-NaN"})
PREDICT, PROBA = "predict", "predict_proba"


class ModelNotFoundError(ApiError):
    status_code = 404
    kind = "not_found"


# -------------------------------------------------------------------------------- metadata
def _label_type(classes: Sequence[Any]) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"


def _input_tensor(info: FeatureInfo) -> dict[str, Any]:
    datatype = _DECLARED.get(info.kind, "BYTES")
    tensor: dict[str, Any] = {"name": info.name, "datatype": datatype, "shape": [-1, 1]}
    if datatype == "BYTES":
        tensor["parameters"] = {"content_type": "str"}
    return tensor


def model_metadata(predictor: Predictor) -> dict[str, Any]:
    """``$metadata_model_response`` of the served model."""
    outputs: list[dict[str, Any]] = []
    if predictor.is_classifier and predictor.classes:
        classes = list(predictor.classes)
        outputs.append({"name": PREDICT, "datatype": _label_type(classes), "shape": [-1, 1]})
        outputs.append({"name": PROBA, "datatype": "FP64", "shape": [-1, len(classes)]})
    else:
        outputs.append({"name": PREDICT, "datatype": "FP64", "shape": [-1, 1]})
    return {
        "name": predictor.name,
        "versions": [predictor.version],
        "platform": "onnxruntime_onnx" if predictor.runtime == "onnx" else "sklearn",
        "inputs": [_input_tensor(f) for f in predictor.features_in_order],
        "outputs": outputs,
    }


_metadata_of = per_predictor(model_metadata, ModelNotFoundError)


# ---------------------------------------------------------------------------- tensors in
def _flatten(data: Any, depth: int, name: str) -> list[Any]:
    """Row-major elements of ``data`` (flat or nested as deep as the tensor's shape)."""
    if not isinstance(data, list):
        data = [data]
    for _ in range(max(depth - 1, 0)):
        if not any(isinstance(x, list) for x in data):
            break
        data = [x for part in data for x in (part if isinstance(part, list) else [part])]
    if any(isinstance(x, list | dict) for x in data):
        raise BadRequestError(f"input {name!r}: data is nested deeper than its shape")
    return data


def _from_binary(raw: bytes, datatype: str, name: str) -> list[Any]:
    if datatype == "BYTES":
        out: list[Any] = []
        at = 0
        while at < len(raw):
            size = struct.unpack_from("<I", raw, at)[0] if at + 4 <= len(raw) else -1
            if size < 0 or at + 4 + size > len(raw):
                raise BadRequestError(f"input {name!r}: truncated BYTES element")
            chunk = raw[at + 4 : at + 4 + size]
            try:
                out.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BadRequestError(f"input {name!r}: BYTES must be UTF-8 text") from exc
            at += 4 + size
        return out
    dtype = np.dtype(_NUMPY[datatype])
    if len(raw) % dtype.itemsize:
        raise BadRequestError(f"input {name!r}: {len(raw)} bytes is not a whole {datatype} tensor")
    if datatype == "BOOL":
        return (np.frombuffer(raw, dtype=np.uint8) != 0).tolist()
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    if datatype.startswith("FP"):
        return [None if math.isnan(v) else v for v in values]
    return values


class _Tensor:
    """One request input: name, datatype, shape and its elements, row-major."""

    def __init__(self, spec: Any, index: int, binary: memoryview, offset: int) -> None:
        if not isinstance(spec, dict):
            raise BadRequestError(f"inputs[{index}] must be an object")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str):
            raise BadRequestError(f"inputs[{index}] has no 'name'")
        if datatype != "BYTES" and datatype not in _NUMPY:
            raise BadRequestError(f"input {name!r}: unknown datatype {datatype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise BadRequestError(f"input {name!r}: 'shape' must be a list of sizes")
        self.name, self.datatype, self.shape = name, str(datatype), shape
        self.size = math.prod(shape)
        self.binary_size = 0
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise BadRequestError(f"input {name!r}: binary_data_size is past the body")
            self.binary_size = size
            self.raw: bytes | None = bytes(binary[offset : offset + size])
            self.data: Any = None
        elif "data" in spec:
            self.raw, self.data = None, spec["data"]
        else:
            raise BadRequestError(f"input {name!r} has no 'data'")

    def values(self) -> list[Any]:
        if self.raw is not None:
            values = _from_binary(self.raw, self.datatype, self.name)
        else:
            values = _flatten(self.data, len(self.shape), self.name)
        if len(values) != self.size:
            raise BadRequestError(
                f"input {self.name!r}: shape {self.shape} holds {self.size} elements, "
                f"data has {len(values)}"
            )
        return values


def _parse_tensors(payload: Any, binary: memoryview) -> list[_Tensor]:
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequestError("the body must be an inference request: {\"inputs\": [...]}")
    tensors, offset = [], 0
    for i, spec in enumerate(payload["inputs"]):
        tensor = _Tensor(spec, i, binary, offset)
        offset += tensor.binary_size
        tensors.append(tensor)
    if not tensors:
        raise BadRequestError("the request has no inputs")
    return tensors


def _matrix_rows(tensor: _Tensor, features: Sequence[FeatureInfo], limit: int) -> list[list[Any]]:
    """Rows of one ``[N, F]`` tensor of an all-numeric model (KServe's sklearn form)."""
    width = len(features)
    if any(f.kind != "numeric" for f in features):
        raise BadRequestError(
            f"input {tensor.name!r} is not a feature; send one tensor per feature "
            f"{[f.name for f in features]} (GET the model's metadata)"
        )
    if tensor.datatype not in _NUMBERS:
        raise BadRequestError(f"input {tensor.name!r}: datatype must be FP64, FP32 or integer")
    _check_rows(tensor.shape[0], limit)
    flat = tensor.values()
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def _check_rows(count: int, limit: int) -> None:
    if count > limit:
        raise BatchTooLargeError(
            f"request has {count} rows; the limit is {limit} (max_batch_size). "
            "Split it into smaller requests."
        )


def request_rows(
    tensors: list[_Tensor], features: Sequence[FeatureInfo], limit: int
) -> list[list[Any]]:
    """The request's rows in feature order, from per-feature tensors or one matrix."""
    by_name = {f.name: f for f in features}
    first = tensors[0]
    if len(tensors) == 1 and len(first.shape) == 2 and first.shape[1] == len(features) and (
        first.name not in by_name or len(features) > 1
    ):
        return _matrix_rows(first, features, limit)
    unknown = [t.name for t in tensors if t.name not in by_name]
    if unknown:
        raise BadRequestError(
            f"unknown inputs {unknown}; the model's inputs are {list(by_name)}"
        )
    counts = set()
    for t in tensors:
        if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
            raise BadRequestError(f"input {t.name!r}: shape must be [N] or [N, 1], got {t.shape}")
        kind = by_name[t.name].kind
        if t.datatype not in _ACCEPTED.get(kind, _BYTES):
            raise BadRequestError(
                f"input {t.name!r}: datatype {t.datatype} does not fit the {kind} feature; "
                f"send {_DECLARED.get(kind, 'BYTES')}"
            )
        counts.add(t.shape[0])
    if len(counts) != 1:
        raise BadRequestError(f"inputs have different numbers of rows: {sorted(counts)}")
    count = counts.pop()
    _check_rows(count, limit)
    columns = {t.name: _gaps(t, by_name[t.name]) for t in tensors}
    missing = [f.name for f in features if not f.nullable and f.name not in columns]
    if missing:
        raise BadRequestError(f"missing inputs {missing} (features without a default)")
    blank = [None] * count
    ordered = [columns.get(f.name, blank) for f in features]
    return [list(row) for row in zip(*ordered, strict=True)]


def _gaps(tensor: _Tensor, info: FeatureInfo) -> list[Any]:
    """The tensor's values, with missing-value strings of categorical and date/time features
    (unless they are categories) as ``None``."""
    values = tensor.values()
    if tensor.datatype != "BYTES" or info.kind not in ("categorical", "datetime"):
        return values
    known = frozenset(c for c in info.categories or () if isinstance(c, str))
    return [None if v in _NA_STRINGS and v not in known else v for v in values]


# --------------------------------------------------------------------------- tensors out
def _wanted(payload: Mapping[str, Any], available: Sequence[str]) -> list[tuple[str, bool]]:
    """Output names to answer and whether each goes as binary data."""
    params = payload.get("parameters")
    default = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    asked = payload.get("outputs")
    if asked is None:
        return [(name, default) for name in available]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadRequestError("'outputs' must be a list of {\"name\": ...} objects")
    wanted = []
    for out in asked:
        name = out.get("name")
        if name not in available:
            raise BadRequestError(f"unknown output {name!r}; the model's outputs are {available}")
        params = out.get("parameters")
        binary = params.get("binary_data", default) if isinstance(params, dict) else default
        wanted.append((str(name), bool(binary)))
    return wanted


def _output(name: str, results: list[dict[str, Any]], predictor: Predictor) -> dict[str, Any]:
    count = len(results)
    if name == PROBA:
        keys = [str(c) for c in predictor.classes or ()]
        data = [(r["probabilities"] or {}).get(k) for r in results for k in keys]
        return {"name": name, "datatype": "FP64", "shape": [count, len(keys)], "data": data}
    labels = [r["prediction"] for r in results]
    if predictor.is_classifier and predictor.classes:
        datatype = _label_type(list(predictor.classes))
        if datatype == "BYTES":
            labels = [None if v is None else str(v) for v in labels]
    else:
        datatype = "FP64"
    return {"name": name, "datatype": datatype, "shape": [count, 1], "data": labels}


def _to_binary(tensor: dict[str, Any]) -> bytes | None:
    """The tensor's data as binary (``None``: it has a null and stays JSON)."""
    data, datatype = tensor["data"], tensor["datatype"]
    if datatype == "FP64":
        return np.asarray([math.nan if v is None else v for v in data], dtype="<f8").tobytes()
    if any(v is None for v in data):
        return None
    if datatype == "BYTES":
        parts = [str(v).encode("utf-8") for v in data]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.asarray(data, dtype=_NUMPY[datatype]).tobytes()


def _infer_response(
    head: dict[str, Any], outputs: list[tuple[dict[str, Any], bool]], bundle_id: str
) -> Response:
    blobs = []
    for tensor, binary in outputs:
        raw = _to_binary(tensor) if binary else None
        if raw is not None:
            del tensor["data"]
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
    head["outputs"] = [tensor for tensor, _ in outputs]
    body = orjson.dumps(head)
    headers = {MODEL_HEADER_NAME: bundle_id}
    if not blobs:
        return Response(body, media_type="application/json", headers=headers)
    headers[BINARY_HEADER] = str(len(body))
    return Response(body + b"".join(blobs), media_type="application/octet-stream",
                    headers=headers)


# ---------------------------------------------------------------------------------- routes
def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(request: Request, exc: ApiError | SchemaError, count: bool = True) -> Response:
    """The protocol's error object (with the request id); a probe's is not counted."""
    if isinstance(exc, SchemaError):
        status, kind, detail = 400, "validation", str(exc)
    else:
        status, kind, detail = exc.status_code, exc.kind, exc.detail
    if count:
        request.app.state.metrics.count_error(kind)
    headers = exc.headers if isinstance(exc, ApiError) else None
    return _json({"error": detail, "request_id": request_id_of(request)}, status, headers)


async def _served(request: Request, name: str, version: str | None) -> Predictor:
    """The served predictor if it is the model (and version) asked for."""
    state = await get_model_state(request)
    predictor = state.predictor
    if predictor is None:
        raise ModelUnavailableError(f"no model is loaded: {state.error}")
    if name != predictor.name:
        raise ModelNotFoundError(f"model {name!r} is not served here; {predictor.name!r} is")
    if version is not None and version != predictor.version:
        raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it serves "
                                 f"version {predictor.version!r}")
    return predictor


def _split_body(request: Request, body: bytes) -> tuple[bytes, memoryview]:
    declared = request.headers.get(BINARY_HEADER)
    if declared is None:
        return body, memoryview(b"")
    if not declared.strip().isdigit() or int(declared) > len(body):
        raise BadRequestError(f"{BINARY_HEADER} must be the size of the JSON part of the body")
    size = int(declared)
    return body[:size], memoryview(body)[size:]


async def _infer(request: Request, name: str, version: str | None) -> Response:
    predictor = await _served(request, name, version)
    settings = request.app.state.settings
    head, binary = _split_body(request, await request.body())
    payload = parse_json_body(head)
    tensors = _parse_tensors(payload, binary)
    available = [o["name"] for o in _metadata_of(predictor)["outputs"]]
    wanted = _wanted(payload, available)
    rows = request_rows(tensors, predictor.features_in_order, settings.max_batch_size)
    results = await run_prediction(
        predictor, rows, timeout_s=settings.request_timeout_s, request=request,
        metrics=request.app.state.metrics,
    )
    response: dict[str, Any] = {"model_name": predictor.name, "model_version": predictor.version}
    if isinstance(payload.get("id"), str):
        response["id"] = payload["id"]
    outputs = [(_output(out, results, predictor), binary) for out, binary in wanted]
    return _infer_response(response, outputs, predictor.bundle_id)


_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {}}}
_ERROR_DOC = {"description": "Error", "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


def build_open_inference_router(
    *, dependencies: Sequence[Any] = (), include_in_schema: bool = False
) -> APIRouter:
    """The Open Inference Protocol routes under ``/v2``.

    ``dependencies`` (e.g. the API-key check) guard every route but the two health probes.
    The routes stay out of the OpenAPI document unless ``include_in_schema``: the protocol
    is specified elsewhere, and its tensors cannot be described per bundle in JSON Schema.
    """
    router = APIRouter(prefix="/v2", tags=["open-inference"], include_in_schema=include_in_schema)
    guarded = list(dependencies)
    errors: dict[int | str, dict[str, Any]] = {s: _ERROR_DOC for s in (400, 401, 404, 413, 503)}

    @router.get("/health/live", summary="Server live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="Server ready", responses={503: _ERROR_DOC})
    async def ready(request: Request) -> Response:
        state = await get_model_state(request)
        if state.draining or state.predictor is None:
            reason = "shutting down (SIGTERM received)" if state.draining else state.error
            return _json({"ready": False, "error": f"not ready: {reason}"}, 503)
        return _json({"ready": True})

    @router.get("", summary="Server metadata", dependencies=guarded, responses=errors)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "mlservice", "version": __version__, "extensions": ["binary_tensor_data"]}

    async def metadata(request: Request, name: str, version: str | None) -> Response:
        try:
            predictor = await _served(request, name, version)
        except ApiError as exc:
            return _error(request, exc)
        return _json(_metadata_of(predictor))

    async def model_ready(request: Request, name: str, version: str | None) -> Response:
        state = await get_model_state(request)
        try:
            await _served(request, name, version)
        except ApiError as exc:
            return _error(request, exc, count=exc.status_code != 503)
        if state.draining:
            return _error(request, ModelUnavailableError("not ready: shutting down"), False)
        return _json({"name": name, "ready": True})

    async def infer(request: Request, name: str, version: str | None) -> Response:
        try:
            return await _infer(request, name, version)
        except (ApiError, SchemaError) as exc:
            return _error(request, exc)

    for suffix, handler, method, what in (
        ("", metadata, "GET", "Model metadata"),
        ("/ready", model_ready, "GET", "Model ready"),
        ("/infer", infer, "POST", "Inference"),
    ):
        _add_model_routes(router, suffix, handler, method, summary=what, dependencies=guarded,
                          responses=errors, response_class=Response)
    return router


def _add_model_routes(
    router: APIRouter, suffix: str, handler: Any, method: str, **options: Any
) -> None:
    """``/models/{model_name}{suffix}`` and its ``/versions/{model_version}`` twin."""

    async def unversioned(request: Request, model_name: str) -> Response:
        return await handler(request, model_name, None)

    async def versioned(request: Request, model_name: str, model_version: str) -> Response:
        return await handler(request, model_name, model_version)

    name = suffix.strip("/") or "metadata"
    base = "/models/{model_name}"
    router.add_api_route(base + suffix, unversioned, methods=[method], operation_id=f"v2_{name}",
                         **options)
    router.add_api_route(base + "/versions/{model_version}" + suffix, versioned, methods=[method],
                         operation_id=f"v2_{name}_versioned", **options)
