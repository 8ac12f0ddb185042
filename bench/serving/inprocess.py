"""In-process speed: the pipeline in scikit-learn, the graph in onnxruntime, the Predictor, and
the ASGI app without a server (time per request and where it goes)."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench.serving.asgi import AsgiDriver
from bench.serving.echo import create_echo_app
from bench.serving.reference import FEATURES, frame_of, payloads, sample_rows

__all__ = ["measure_asgi", "measure_models", "stage_split"]

SIZES = (1, 1000, 10_000)


def _rate(call: Callable[[], Any], rows: int, *, min_s: float, max_calls: int) -> dict[str, float]:
    call()  # warm-up
    calls, started = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_s or calls >= max_calls:
            break
    per_call = elapsed / calls
    return {"rows_per_s": rows / per_call, "ms_per_call": per_call * 1e3}


def measure_models(bundle: Path, *, min_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """rows/s of scikit-learn, onnxruntime and the Predictor at 1, 1,000 and 10,000 rows."""
    from mlservice.bundle import load_bundle
    from mlservice.inference import Predictor
    from mlservice.inference.onnx_runtime import OnnxModel, onnx_status

    loaded = load_bundle(bundle)
    out: dict[str, dict[str, Any]] = {"sklearn": {}, "onnxruntime": {}, "predictor": {}}
    onnx = None
    if onnx_status(loaded.metadata, loaded.path) is None:
        onnx = OnnxModel.from_bundle(loaded.path, loaded.metadata)
    predictor = Predictor.from_path(bundle)
    for size in SIZES:
        rows = sample_rows(size, seed=3)
        frame = frame_of(rows)
        out["sklearn"][str(size)] = _rate(
            partial(loaded.pipeline.predict_proba, frame), size, min_s=min_s,
            max_calls=50 if size == 1 else 10,
        )
        if onnx is not None:
            feeds = onnx.feeds_from_columns({n: frame[n].to_numpy() for n in FEATURES})
            out["onnxruntime"][str(size)] = _rate(
                partial(onnx.run, feeds), size, min_s=min_s, max_calls=100_000
            )
        out["predictor"][str(size)] = _rate(
            partial(predictor.predict_values, rows), size, min_s=min_s, max_calls=100_000
        )
    out["predictor"]["runtime"] = predictor.runtime
    return out


def _stage_us(call: Callable[[], Any], *, min_s: float = 0.3, max_calls: int = 20_000) -> float:
    return _rate(call, 1, min_s=min_s, max_calls=max_calls)["ms_per_call"] * 1e3


def stage_split(predictor: Any, body: bytes, *, batch: bool) -> dict[str, float]:
    """µs per request of each step of the fast path, timed on its own (no profiler).

    The steps are the ones ``FastPredictMiddleware`` runs, on the served predictor: parse the
    body, check its shape and values while building the graph's arrays, run onnxruntime, turn
    the outputs into answers, write the JSON answer.
    """
    from mlservice.api.fast_path import RequestShape

    shape = RequestShape(predictor, max_batch_size=10_000)
    payload = orjson.loads(body)
    rows = shape.batch(payload) if batch else shape.single(payload)
    assert rows is not None, "the benchmark body must take the fast path"
    feeds = predictor.onnx_feeds(rows)
    assert feeds is not None, "the benchmark rows must pass the fast checks"
    outputs = predictor.run_onnx(feeds)
    answers = predictor.onnx_answers(outputs, len(rows))
    answer = {"predictions": answers} if batch else answers[0]

    def checks() -> Any:
        checked = shape.batch(payload) if batch else shape.single(payload)
        return predictor.onnx_feeds(checked)

    return {
        "parse JSON (orjson)": _stage_us(partial(orjson.loads, body)),
        "checks + arrays (shape, FeedBuilder)": _stage_us(checks),
        "inference (onnxruntime run)": _stage_us(partial(predictor.run_onnx, feeds)),
        "answers (outputs → dicts)": _stage_us(
            partial(predictor.onnx_answers, outputs, len(rows))
        ),
        "write JSON (orjson)": _stage_us(
            partial(orjson.dumps, answer, option=orjson.OPT_SERIALIZE_NUMPY)
        ),
    }


def measure_asgi(bundle: Path, *, requests: int = 2000) -> dict[str, Any]:
    """The app without HTTP: µs per request (echo vs mlservice) and the split by step."""
    import uvloop

    from mlservice.api import ApiSettings, create_app

    bodies = payloads()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    sink = io.StringIO()
    result: dict[str, Any] = {}
    try:
        with redirect_stderr(sink):  # the app's JSON access log, one line per request
            echo = AsgiDriver(create_echo_app())
            served = create_app(bundle, ApiSettings(bundle_path=bundle, log_level="info"))
            app = AsgiDriver(served)
            loop.run_until_complete(echo.start())
            loop.run_until_complete(app.start())
            api_log = logging.getLogger("mlservice.api")  # one logger: its level is per process
            predictor = served.state.model.predictor
            for kind, count in (("single", requests), ("batch", max(10, requests // 100))):
                body = bodies["mlservice"][kind]
                path = "/api/v1/predict" if kind == "single" else "/api/v1/predict/batch"
                floor = loop.run_until_complete(echo.time_requests("/echo", body, count))
                api_log.setLevel(logging.INFO)
                ours = loop.run_until_complete(app.time_requests(path, body, count))
                api_log.setLevel(logging.WARNING)  # the same app without its access log line
                no_log = loop.run_until_complete(app.time_requests(path, body, count))
                api_log.setLevel(logging.INFO)
                together = loop.run_until_complete(
                    app.time_concurrent(path, body, count, at_once=8)
                )
                check = loop.run_until_complete(app.request("POST", path, body))
                steps = stage_split(predictor, body, batch=kind == "batch")
                steps["access log line"] = max(ours - no_log, 0.0) * 1e6
                steps["middleware, metrics, ASGI plumbing (the rest)"] = max(
                    ours * 1e6 - sum(steps.values()), 0.0
                )
                result[kind] = {
                    "echo_us": floor * 1e6,
                    "mlservice_us": ours * 1e6,
                    "mlservice_without_access_log_us": no_log * 1e6,
                    "mlservice_8_at_once_us": together * 1e6,
                    "status": check.status,
                    "answer": orjson.loads(check.body) if kind == "single" else None,
                    "steps_us": steps,
                }
            for driver in (app, echo):
                loop.run_until_complete(driver.stop())
    finally:
        logging.getLogger("mlservice.api").handlers.clear()
        loop.close()
        asyncio.set_event_loop(None)
    print(f"(in-process app: {len(sink.getvalue().splitlines())} log lines)", file=sys.stderr)
    return result
