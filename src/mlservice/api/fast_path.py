"""The fast path of ``POST /api/v1/predict`` and ``/predict/batch``: valid requests, ONNX models.

FastAPI's request machinery (routing, dependency injection, ``json.loads`` then a pydantic model
instance per row) costs more than the ONNX prediction itself: about 250 µs of a 370 µs one-row
request, and 4 ms of pydantic validation in a 1,000-row batch whose onnxruntime call takes 10 ms
(``python -m bench.serving`` measures it). No library validates rows straight into the column
arrays the graph takes, so this ASGI layer does it by hand, for the happy path only:

* the body (size and content type already checked by ``BodyGuardMiddleware``) is parsed once by
  orjson; the request's shape is checked here, its values by the predictor's ``FeedBuilder``,
  which accepts a strict subset of what the generated pydantic models accept (finite numbers in
  range, strings, closed categories, nulls only where allowed) and builds the graph's inputs in
  the same pass;
* anything it does not accept, for whatever reason (malformed JSON, a wrong type, a missing
  feature, too many rows, no model loaded, a model served by scikit-learn), is handed untouched
  to the FastAPI route, which validates it fully and answers exactly as it always does (422
  naming the field, 413, 503, ...). The API key was already checked by the body guard, before
  the body was read. The fast path never answers a 4xx of its own, so the two can't
  disagree about what is valid: ``tests/test_fast_path.py`` checks that every request it
  takes gets the same answer from the route.

Predictions run as in the route: up to ``INLINE_MAX_ROWS`` rows on the event loop (small
requests that are ready in the same loop turn share one onnxruntime call: ``MicroBatcher``),
larger ones in a worker thread under the request timeout (504), model failures as a generic 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlservice.api.deps import ModelState
from mlservice.api.errors import ApiError, error_response
from mlservice.api.metrics import ApiMetrics
from mlservice.api.middleware import replay_body
from mlservice.api.monitoring import record_feeds
from mlservice.api.routes._offload import call_model, model_failure
from mlservice.api.routes.predict import (
    INLINE_MAX_ROWS,
    MODEL_HEADER,
    MODEL_HEADER_NAME,
    runs_inline,
)
from mlservice.api.settings import ApiSettings
from mlservice.errors import MlserviceError
from mlservice.inference import Predictor

__all__ = ["FAST_PATHS", "FastPredictMiddleware", "MicroBatcher", "RequestShape"]


PREDICT = "/api/v1/predict"
BATCH = "/api/v1/predict/batch"
FAST_PATHS = (PREDICT, BATCH)
_JSON_HEADERS = [(b"content-type", b"application/json")]

Rows = list[Sequence[Any]]


class RequestShape:
    """Rows of one predictor's requests, as values in feature order (``None``: not simple)."""

    def __init__(self, predictor: Predictor, max_batch_size: int) -> None:
        self.predictor = predictor
        self.names = predictor.feature_names
        self.size = len(self.names)
        self.required = frozenset(f.name for f in predictor.features if not f.nullable)
        self.allowed = frozenset(self.names)
        self.max_batch_size = max_batch_size
        if self.size > 1:
            self._values: Any = itemgetter(*self.names)
        else:  # itemgetter of one name returns the value, of none raises
            self._values = lambda row: tuple(row[name] for name in self.names)

    def row(self, row: Any) -> Sequence[Any] | None:
        if type(row) is dict:
            keys = row.keys()
            if keys == self.allowed:  # every feature named: one C call
                values: Sequence[Any] = self._values(row)
                return values
            if self.required <= keys <= self.allowed:  # nullable features left out
                return [row.get(name) for name in self.names]
            return None
        if type(row) is list and len(row) == self.size:
            return row
        return None

    def single(self, payload: Any) -> Rows | None:
        if type(payload) is not dict or len(payload) != 1 or "features" not in payload:
            return None
        row = self.row(payload["features"])
        return None if row is None else [row]

    def batch(self, payload: Any) -> Rows | None:
        if type(payload) is not dict or len(payload) != 1:
            return None
        instances = payload.get("instances")
        if type(instances) is not list or not 0 < len(instances) <= self.max_batch_size:
            return None
        rows = []
        allowed, values = self.allowed, self._values
        for instance in instances:
            if type(instance) is dict and instance.keys() == allowed:  # the usual row, inlined
                rows.append(values(instance))
                continue
            row = self.row(instance)
            if row is None:
                return None
            rows.append(row)
        return rows


class FastPredictMiddleware:
    """Answers valid predict requests for ONNX-served models; passes everything else on."""

    def __init__(
        self, app: ASGIApp, *, state: ModelState, settings: ApiSettings, metrics: ApiMetrics
    ) -> None:
        self.app = app
        self.state = state
        self.settings = settings
        self.metrics = metrics
        self._shape: RequestShape | None = None
        self.batcher = (
            MicroBatcher(INLINE_MAX_ROWS, observe=metrics.micro_batches.observe)
            if settings.micro_batching
            else None
        )

    async def _predict(
        self, predictor: Predictor, rows: Rows, request_id: str | None
    ) -> list[dict[str, Any]] | None:
        """The answers, ``None`` to defer to the route; raises ``ApiError`` (504, 500)."""
        inline = runs_inline(predictor, len(rows))
        try:
            if self.batcher is None or not inline:
                return await _predict_rows(
                    predictor, rows, inline=inline, timeout_s=self.settings.request_timeout_s,
                    request_id=request_id, window=self.state.window,
                )
            joined = await self.batcher.submit(predictor, rows, self.state.window)
        except ApiError:
            raise
        except MlserviceError:  # an input the full checks should name: the route answers
            return None
        except Exception as exc:  # the model failed outside onnxruntime: the route's 500
            raise model_failure(request_id, exc) from exc
        if isinstance(joined, BaseException):
            raise model_failure(request_id, joined) from joined
        return joined

    def _shape_of(self, predictor: Predictor) -> RequestShape:
        shape = self._shape
        if shape is None or shape.predictor is not predictor:  # built once per served model
            shape = self._shape = RequestShape(predictor, self.settings.max_batch_size)
        return shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in FAST_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        predictor = self.state.predictor
        # The API key was checked by the body guard, before the body was read.
        if predictor is None or not predictor.onnx_self_contained:
            self.metrics.fast_deferred.inc()
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        answer = await self._answer(scope, path, predictor, body)
        if answer is None:
            self.metrics.fast_deferred.inc()
            await self.app(scope, replay_body(body, receive), send)
            return
        self.metrics.fast_answered.inc()
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        headers = [
            *_JSON_HEADERS,
            (b"content-length", str(len(answer)).encode()),
            (MODEL_HEADER, predictor.bundle_id.encode("latin-1", "replace")),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _answer(
        self, scope: Scope, path: str, predictor: Predictor, body: bytes
    ) -> bytes | Response | None:
        """The JSON answer, an error response, or ``None`` to let the FastAPI route answer."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        shape = self._shape_of(predictor)
        rows = shape.single(payload) if path == PREDICT else shape.batch(payload)
        if rows is None:
            return None
        request_id = scope.get("state", {}).get("request_id")
        try:
            results = await self._predict(predictor, rows, request_id)
        except ApiError as exc:  # a timeout or a model failure: answered as the route would
            self.metrics.count_error(exc.kind)
            return error_response(
                exc.status_code,
                exc.detail,
                request_id=request_id,
                headers={**exc.headers, MODEL_HEADER_NAME: predictor.bundle_id},
            )
        if results is None:
            return None
        self.metrics.count_predictions(
            (r["prediction"] for r in results), classification=predictor.is_classifier
        )
        if path == PREDICT:
            answer: dict[str, Any] = {**results[0], "model_version": predictor.version}
        else:
            answer = {
                "predictions": results,
                "total_instances": len(results),
                "model_version": predictor.version,
            }
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


async def _predict_rows(
    predictor: Predictor,
    rows: Rows,
    *,
    inline: bool,
    timeout_s: float,
    request_id: str | None,
    window: Any = None,
) -> list[dict[str, Any]] | None:
    """Checks, onnxruntime (in a worker thread unless ``inline``), answers; ``None``: defer."""
    # Only the onnxruntime call leaves the event loop: the Python steps around it would wait
    # for the GIL in a worker thread while the loop parses the next request.
    feeds = predictor.onnx_feeds(rows)
    if feeds is None:
        return None
    outputs = await call_model(
        partial(predictor.run_onnx, feeds), inline=inline, timeout_s=timeout_s,
        request_id=request_id,
    )
    answers = predictor.onnx_answers(outputs, len(rows))
    record_feeds(window, predictor, feeds, answers)
    return answers


class _Pending:
    """One request waiting in a micro-batch: its rows and where its answers go."""

    __slots__ = ("future", "rows")

    def __init__(self, rows: Rows, future: asyncio.Future[Answers]) -> None:
        self.rows = rows
        self.future = future


#: A request's answers; ``None``: the fast checks refused a value (the route answers);
#: an exception: the model failed.
Answers = list[dict[str, Any]] | BaseException | None


class MicroBatcher:
    """Joins the small requests that are ready in the same event-loop turn into one ONNX call.

    A request's rows are queued and a flush is scheduled with ``call_soon``: every request the
    loop handles in this turn (under load, one per busy connection) joins the batch, and the
    flush runs as soon as they have, so no request ever waits for a timer. Alone, a request is
    a batch of one. A batch holds at most ``max_rows`` rows and one predictor (a hot reload
    starts a new batch); answers go back by position, each request gets exactly its own rows'.
    If the joined rows fail the fast checks or the model fails on them, each request is run on
    its own, so one bad row never costs the others their answer.

    Why: under load most of a one-row request's onnxruntime time is fetching the trees into
    the CPU cache and the graph's per-call overhead; a joined call pays both once per batch
    (``python -m bench.serving``: single-row req/s with and without it).
    """

    def __init__(self, max_rows: int, *, observe: Callable[[float], None] | None = None) -> None:
        self.max_rows = max_rows
        self.observe = observe
        self._pending: list[_Pending] = []
        self._rows = 0
        self._predictor: Predictor | None = None
        self._window: Any = None
        self._scheduled = False

    def submit(
        self, predictor: Predictor, rows: Rows, window: Any = None
    ) -> asyncio.Future[Answers]:
        """Queue ``rows``; ``window`` (the model's drift window) gets the batch's rows."""
        loop = asyncio.get_running_loop()
        if self._pending and (
            predictor is not self._predictor or self._rows + len(rows) > self.max_rows
        ):
            self.flush()
        future: asyncio.Future[Answers] = loop.create_future()
        self._pending.append(_Pending(rows, future))
        self._rows += len(rows)
        self._predictor = predictor
        self._window = window
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._scheduled_flush)
        return future

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        pending, predictor, window = self._pending, self._predictor, self._window
        self._pending, self._rows, self._predictor, self._window = [], 0, None, None
        if pending and predictor is not None:
            if self.observe is not None:
                self.observe(len(pending))
            _run_batch(predictor, pending, window)


def _run_batch(predictor: Predictor, pending: list[_Pending], window: Any = None) -> None:
    rows = [row for item in pending for row in item.rows] if len(pending) > 1 else pending[0].rows
    try:
        feeds = predictor.onnx_feeds(rows)
        if feeds is None:
            if len(pending) > 1:
                for item in pending:  # find the request with the value the checks refused
                    _run_batch(predictor, [item], window)
                return
            _resolve(pending[0].future, None)
            return
        answers = predictor.onnx_answers(predictor.run_onnx(feeds), len(rows))
    except Exception as exc:
        if len(pending) > 1:  # only the request the model fails on gets the error
            for item in pending:
                _run_batch(predictor, [item], window)
            return
        # an input error (``MlserviceError``): the route names it; anything else: a 500
        _resolve(pending[0].future, None if isinstance(exc, MlserviceError) else exc)
        return
    start = 0
    for item in pending:
        end = start + len(item.rows)
        _resolve(item.future, answers[start:end])
        start = end
    record_feeds(window, predictor, feeds, answers)  # after the answers: off their latency


def _resolve(future: asyncio.Future[Answers], value: Answers) -> None:
    if not future.done():  # a cancelled request no longer waits
        future.set_result(value)
