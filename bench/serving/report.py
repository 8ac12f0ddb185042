"""The results table, every ratio against the floor of the same run, and the acceptance checks."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

__all__ = [
    "FLOOR",
    "MLFLOW",
    "MLSERVICE",
    "MLSERVICE_NO_MONITORING",
    "acceptance",
    "summarize",
    "to_markdown",
    "write_results",
]

FLOOR = "bare FastAPI echo (floor)"
MLSERVICE = "mlservice serve"
MLSERVICE_NO_MONITORING = "mlservice serve (monitoring off)"
MLFLOW = ("mlflow models serve (default threads)", "mlflow models serve (OMP_NUM_THREADS=1)")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each number over the runs of one server and payload."""
    keys = ("requests_per_s", "p50_ms", "p99_ms")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["runs"] = len(runs)
    return out


def _ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or not floor:
        return None
    return value / floor


def acceptance(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's acceptance ratios, each with the measured value and whether it passes."""
    servers = results["servers"]
    ours, floor = servers.get(MLSERVICE), servers.get(FLOOR)
    mlflows = [servers[name] for name in MLFLOW if name in servers]
    if ours is None or floor is None:
        return []
    checks: list[dict[str, Any]] = []

    def add(text: str, value: float | None, limit: float, higher_is_better: bool = True) -> None:
        ok = None if value is None else (value >= limit if higher_is_better else value <= limit)
        checks.append({"check": text, "value": value, "limit": limit, "pass": ok})

    add("single-row req/s ≥ 60% of the floor",
        _ratio(ours["single"]["requests_per_s"], floor["single"]["requests_per_s"]), 0.6)
    if mlflows:
        best = max(m["single"]["requests_per_s"] for m in mlflows)
        add("single-row req/s ≥ 10× the better MLflow setting",
            _ratio(ours["single"]["requests_per_s"], best), 10.0)
    add("p99 ≤ 3× the floor's p99",
        _ratio(ours["single"]["p99_ms"], floor["single"]["p99_ms"]), 3.0, higher_is_better=False)
    if mlflows:
        best_batch = max(m["batch"]["rows_per_s"] for m in mlflows)
        add("1,000-row batch rows/s ≥ 5× MLflow's (better setting)",
            _ratio(ours["batch"]["rows_per_s"], best_batch), 5.0)
    ort = results.get("in_process", {}).get("onnxruntime", {}).get("1000")
    add("1,000-row batch rows/s ≥ 40% of in-process onnxruntime at 1,000 rows",
        _ratio(ours["batch"]["rows_per_s"], ort["rows_per_s"] if ort else None), 0.4)
    add("cold start to ready ≤ 2 s", ours["cold_start_s"], 2.0, higher_is_better=False)
    ab = results.get("monitoring_ab")
    if ab:
        add("single-row req/s with monitoring ≥ 0.9× monitoring off (alternating runs)",
            ab["single"]["ratio"], 0.9)
        add("1,000-row batch rows/s with monitoring ≥ 0.9× monitoring off (alternating runs)",
            ab["batch"]["ratio"], 0.9)
    if mlflows:
        least = min(m["rss_mb"] for m in mlflows)
        add("serving RSS ≤ 1/3 of MLflow's (the smaller of the two)",
            _ratio(ours["rss_mb"], least), 1 / 3, higher_is_better=False)
    return checks


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def to_markdown(results: dict[str, Any]) -> str:
    servers = results["servers"]
    floor = servers.get(FLOOR)
    lines = [
        f"# Serving benchmark ({results['started_at']})",
        "",
        f"Machine: {results['machine']}. One worker per server on 127.0.0.1; wrk "
        f"{results['settings']['connections']} connections, 1 thread, "
        f"{results['settings']['duration_s']:g} s per run, median of "
        f"{results['settings']['runs']} run(s). Reference model: {results['model']}. "
        f"mlservice runtime: **{results['mlservice_runtime']}**.",
        "",
        "| server (1 worker) | single-row req/s | ×floor | p50 ms | p99 ms | ×floor p99 | errors "
        "| 1,000-row batch rows/s | ×floor | cold start s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in servers.items():
        single, batch = s["single"], s["batch"]
        fs = floor["single"] if floor else {}
        fb = floor["batch"] if floor else {}
        lines.append(
            f"| {name} | {_fmt(single['requests_per_s'])} "
            f"| {_x(_ratio(single['requests_per_s'], fs.get('requests_per_s')))} "
            f"| {_fmt(single['p50_ms'], 2)} | {_fmt(single['p99_ms'], 2)} "
            f"| {_x(_ratio(single['p99_ms'], fs.get('p99_ms')))} "
            f"| {single['errors'] + batch['errors']} | {_fmt(batch['rows_per_s'])} "
            f"| {_x(_ratio(batch['rows_per_s'], fb.get('rows_per_s')))} "
            f"| {_fmt(s['cold_start_s'], 2)} | {_fmt(s['rss_mb'])} |"
        )
    inproc = results.get("in_process", {})
    for name in ("sklearn", "onnxruntime", "predictor"):
        data = inproc.get(name) or {}
        if "1" not in data:
            continue
        label = {"sklearn": "in-process scikit-learn (predict_proba)",
                 "onnxruntime": "in-process onnxruntime (session.run)",
                 "predictor": f"in-process Predictor ({data.get('runtime')}, rows → answers)"}[name]
        lines.append(
            f"| {label}: 1 row / 1,000 / 10,000 rows | {_fmt(data['1']['rows_per_s'])} | "
            f"| {_fmt(data['1']['ms_per_call'], 3)} | | | | {_fmt(data['1000']['rows_per_s'])}"
            f" / {_fmt(data['10000']['rows_per_s'])} | | | |"
        )
    lines += ["", "## Acceptance (ratios from this run)", "", "| check | measured | limit | pass |",
              "|---|---|---|---|"]
    for check in results.get("acceptance", []):
        mark = {True: "yes", False: "**no**", None: "–"}[check["pass"]]
        lines.append(f"| {check['check']} | {_fmt(check['value'], 3)} | {check['limit']:.3g} "
                     f"| {mark} |")
    ab = results.get("monitoring_ab")
    if ab:
        lines += ["", "## Drift monitoring on against off (both servers up, wrk runs alternating)",
                  "", "| payload | on req/s | off req/s | on / off | runs on | runs off |",
                  "|---|---|---|---|---|---|"]
        for payload in ("single", "batch"):
            item = ab[payload]
            lines.append(
                f"| {payload} | {_fmt(item['on'])} | {_fmt(item['off'])} | {item['ratio']:.3f} "
                f"| {', '.join(_fmt(v) for v in item['runs']['on'])} "
                f"| {', '.join(_fmt(v) for v in item['runs']['off'])} |"
            )
    lines += _time_split(results)
    return "\n".join(lines) + "\n"


def _time_split(results: dict[str, Any]) -> list[str]:
    """Where a request's time goes: each step timed on its own, the rest by difference."""
    asgi = results.get("asgi")
    if not asgi or "steps_us" not in asgi.get("single", {}):
        return []
    single, batch = asgi["single"], asgi["batch"]
    lines = [
        "", "## Where a request's time goes", "",
        "Each step of the fast path timed on its own, in-process, on the served predictor; the "
        "in-process app (ASGI, no sockets, sequential requests) by difference; the HTTP server "
        "as the rest of the single-row request time under load (the server is CPU-bound on one "
        "core there). µs per request.", "",
        "| step | one row | 1,000 rows |", "|---|---|---|",
    ]
    rest = "middleware, metrics, ASGI plumbing (the rest)"
    for step, value in single["steps_us"].items():
        big = batch["steps_us"].get(step, 0.0)
        shown = "≈ 0 (within the steps' noise)" if step == rest and big <= 0 else f"{big:,.0f}"
        lines.append(f"| {step} | {value:,.1f} | {shown} |")
    lines.append(f"| **in-process app, one request at a time** | "
                 f"**{single['mlservice_us']:,.1f}** | **{batch['mlservice_us']:,.0f}** |")
    together = single.get("mlservice_8_at_once_us")
    if together:
        lines.append(f"| in-process app, 8 requests at a time (micro-batched) | {together:,.1f} "
                     f"| {batch.get('mlservice_8_at_once_us', 0.0):,.0f} |")
    lines.append(f"| (bare FastAPI echo, in-process) | {single['echo_us']:,.1f} "
                 f"| {batch['echo_us']:,.0f} |")
    ours = results["servers"].get(MLSERVICE, {}).get("single", {}).get("requests_per_s")
    if ours and together:
        http = 1e6 / ours - together
        lines.append(f"| HTTP server (uvicorn, httptools), under load: the rest of "
                     f"1 / (single-row req/s) | {http:,.1f} | |")
    lines += ["", "A request alone is a micro-batch of one; with 8 in flight the one-row "
              "requests share one onnxruntime call. A batch's onnxruntime call runs in a worker "
              "thread (more than `INLINE_MAX_ROWS` rows) while the event loop parses the next "
              "request; 8 batches at a time then use both cores."]
    return lines


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "serving.json", out_dir / "serving.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(results), encoding="utf-8")
    return json_path, md_path
