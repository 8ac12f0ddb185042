"""Explanations: single-row ``POST /api/v1/explain`` latency, in process, for two models.

``python -m bench.explain`` trains the penguins HistGradientBoosting (300 iterations × 3
classes, the serving benchmark's reference) and a 300-tree LightGBM classifier, and times one-row
explain requests through the whole app (``TestClient``: routing, checks, the explainer in a
worker thread, JSON) after a warm-up: p50/p90 ms, next to ``/api/v1/predict`` on the same app as
the baseline of the same run. Results: ``bench/results/explain.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from palmerpenguins import load_penguins

RESULTS = Path(__file__).parent / "results"
ROW = {"island": "Biscoe", "bill_length_mm": 45.1, "bill_depth_mm": 14.5,
       "flipper_length_mm": 215.0, "body_mass_g": 5000.0, "sex": "female", "year": 2008}
MODELS = {
    "HistGradientBoosting (300 iterations × 3 classes)":
        {"type": "hist_gradient_boosting", "params": {"max_iter": 300}},
    "LightGBM (300 trees × 3 classes)": {"type": "lightgbm", "params": {"n_estimators": 300}},
}


def _train(work: Path, model: dict[str, Any]) -> Path:
    from mlservice.config import parse_config
    from mlservice.training import train

    csv = work / "penguins.csv"
    load_penguins().to_csv(csv, index=False)
    config = parse_config({
        "name": "penguins-explain", "version": "1.0.0", "task": "classification",
        "data": {"source": str(csv), "target": "species"}, "model": model,
        "cv": {"enabled": False}, "targets": {"accuracy": ">= 0.8"},
        "tracking": {"enabled": False}, "output": {"dir": str(work / "models")},
    })
    return train(config, base_dir=work).bundle_path


def _timed(client: Any, path: str, count: int) -> list[float]:
    body = {"features": ROW}
    for _ in range(20):  # warm-up: the explainer is built on the first request
        assert client.post(path, json=body).status_code == 200
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.post(path, json=body)
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200
    return sorted(times)


def measure(count: int = 400) -> list[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from mlservice.api.main import create_app

    results = []
    for name, model in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            bundle = _train(Path(tmp), model)
            with TestClient(create_app(bundle)) as client:
                explain = _timed(client, "/api/v1/explain", count)
                predict = _timed(client, "/api/v1/predict", count)
        results.append({
            "model": name,
            "explain_p50_ms": round(statistics.median(explain), 3),
            "explain_p90_ms": round(explain[int(0.9 * len(explain))], 3),
            "predict_p50_ms": round(statistics.median(predict), 3),
            "requests": count,
        })
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    results = measure()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Explanations: one-row `POST /api/v1/explain` (in process, TestClient)",
        "",
        "| model | explain p50 ms | explain p90 ms | predict p50 ms (same app) |",
        "|---|---|---|---|",
        *(f"| {r['model']} | {r['explain_p50_ms']} | {r['explain_p90_ms']} | "
          f"{r['predict_p50_ms']} |" for r in results),
    ]
    (RESULTS / "explain.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
