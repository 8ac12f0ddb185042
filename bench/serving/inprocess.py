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

from bench.serving.asgi import AsgiDriver, profile_split
from bench.serving.echo import create_echo_app
from bench.serving.reference import FEATURES, frame_of, payloads, sample_rows

__all__ = ["measure_asgi", "measure_models"]

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


def measure_asgi(bundle: Path, *, requests: int = 2000) -> dict[str, Any]:
    """The app without HTTP: µs per request (echo vs mlservice) and a cProfile split."""
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
            app = AsgiDriver(create_app(bundle))
            # the same app without its per-request JSON access log line (log level warning)
            quiet = AsgiDriver(create_app(bundle, ApiSettings(bundle_path=bundle,
                                                              log_level="warning")))
            for driver in (echo, app, quiet):
                loop.run_until_complete(driver.start())
            for kind, count in (("single", requests), ("batch", max(10, requests // 100))):
                body = bodies["mlservice"][kind]
                path = "/api/v1/predict" if kind == "single" else "/api/v1/predict/batch"
                floor = loop.run_until_complete(echo.time_requests("/echo", body, count))
                ours = loop.run_until_complete(app.time_requests(path, body, count))
                no_log = loop.run_until_complete(quiet.time_requests(path, body, count))
                check = loop.run_until_complete(app.request("POST", path, body))
                result[kind] = {
                    "echo_us": floor * 1e6,
                    "mlservice_us": ours * 1e6,
                    "mlservice_without_access_log_us": no_log * 1e6,
                    "status": check.status,
                    "answer": orjson.loads(check.body) if kind == "single" else None,
                    "profile_us": profile_split(app, path, body, count, loop),
                }
            for driver in (quiet, app, echo):
                loop.run_until_complete(driver.stop())
    finally:
        logging.getLogger("mlservice.api").handlers.clear()
        loop.close()
        asyncio.set_event_loop(None)
    print(f"(in-process app: {len(sink.getvalue().splitlines())} log lines)", file=sys.stderr)
    return result
