"""The results table, every ratio against the floor of the same run, and the acceptance checks."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["acceptance", "summarize", "to_markdown", "write_results"]

FLOOR = "bare FastAPI echo (floor)"
MLSERVICE = "mlservice serve"
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
    asgi = results.get("asgi")
    if asgi:
        lines += ["", "## Where a request's time goes (in-process ASGI, no HTTP server)", ""]
        for kind in ("single", "batch"):
            data = asgi[kind]
            lines.append(f"**{kind}**: echo {data['echo_us']:,.0f} µs, mlservice "
                         f"{data['mlservice_us']:,.0f} µs per request "
                         f"({data['mlservice_without_access_log_us']:,.0f} µs without the JSON "
                         "access log line). cProfile own time (µs per request, inflated by the "
                         "profiler):")
            lines.append("")
            for bucket, value in sorted(data["profile_us"].items(), key=lambda kv: -kv[1]):
                lines.append(f"- {bucket}: {value:,.0f}")
            lines.append("")
        lines.append("In the batch profile the onnxruntime call runs in a worker thread (more than "
                     "`INLINE_MAX_ROWS` rows) and shows up as the event loop's wait (`other`).")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "serving.json", out_dir / "serving.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(results), encoding="utf-8")
    return json_path, md_path
