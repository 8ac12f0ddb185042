"""Orchestrate the serving benchmark (see the package docstring); ``main`` is the CLI."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.serving.inprocess import measure_asgi, measure_models
from bench.serving.load import ensure_wrk, run_wrk
from bench.serving.reference import BATCH_ROWS, Reference, payloads, train_reference
from bench.serving.report import (
    FLOOR,
    MLFLOW,
    MLSERVICE,
    MLSERVICE_NO_MONITORING,
    acceptance,
    summarize,
    write_results,
)
from bench.serving.servers import ServerSpec, start_server

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PATHS = {
    "echo": ("/echo", "/echo"),
    "mlservice": ("/api/v1/predict", "/api/v1/predict/batch"),
    "mlflow": ("/invocations", "/invocations"),
}


def _specs(ref: Reference) -> list[tuple[str, str, ServerSpec]]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    path = os.pathsep.join((str(BIN), os.environ.get("PATH", "")))  # mlflow execs `uvicorn`
    mlflow_cmd = [
        str(BIN / "mlflow"), "models", "serve", "-m", ref.model_uri, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", "{port}", "-w", "1",
    ]
    mlflow_env = {"MLFLOW_TRACKING_URI": ref.tracking_uri, "PATH": path}
    return [
        ("echo", FLOOR, ServerSpec(
            FLOOR,
            [sys.executable, "-m", "uvicorn", "--factory", "bench.serving.echo:create_echo_app",
             "--host", "127.0.0.1", "--port", "{port}", "--workers", "1", "--no-access-log",
             "--log-level", "warning"],
            "/health", env={"PYTHONPATH": pythonpath})),
        ("mlservice", MLSERVICE, ServerSpec(
            MLSERVICE,
            [str(BIN / "mlservice"), "serve", str(ref.bundle), "--host", "127.0.0.1",
             "--port", "{port}", "--workers", "1"],
            "/health/ready")),
        ("mlflow", MLFLOW[0], ServerSpec(MLFLOW[0], mlflow_cmd, "/ping", env=mlflow_env)),
        ("mlflow", MLFLOW[1], ServerSpec(
            MLFLOW[1], mlflow_cmd, "/ping", env={**mlflow_env, "OMP_NUM_THREADS": "1"})),
    ]


def _bench_server(
    kind: str, spec: ServerSpec, *, wrk: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    bodies = payloads()[kind]
    server = start_server(spec, log_dir=work)
    print(f"  {spec.name}: ready in {server.cold_start_s:.2f} s", flush=True)
    try:
        out: dict[str, Any] = {"cold_start_s": server.cold_start_s}
        for payload, path in zip(("single", "batch"), PATHS[kind], strict=True):
            url = server.url + path
            check = httpx.post(url, content=bodies[payload], timeout=60,
                               headers={"Content-Type": "application/json"})
            if check.status_code != 200:
                raise RuntimeError(f"{spec.name} {path} answered {check.status_code}: "
                                   f"{check.text[:500]}")
            run_wrk(wrk, url, bodies[payload], workdir=work, duration_s=args.warmup,
                    connections=args.connections)
            runs = [
                run_wrk(wrk, url, bodies[payload], workdir=work, duration_s=args.duration,
                        connections=args.connections).to_dict()
                for _ in range(args.runs)
            ]
            summary = summarize(runs)
            if payload == "batch":
                summary["rows_per_s"] = summary["requests_per_s"] * BATCH_ROWS
            out[payload] = {**summary, "each_run": runs}
            print(f"  {spec.name} {payload}: {summary['requests_per_s']:,.1f} req/s, p50 "
                  f"{summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
                  f"{summary['errors']} errors", flush=True)
        out["rss_mb"] = server.rss_mb()
        out["log_tail"] = server.log_path.read_text(errors="replace")[-400:]
        return out
    finally:
        server.stop()


def _monitoring_ab(ref: Reference, *, wrk: str, work: Path, args: argparse.Namespace) -> dict:
    """mlservice with drift monitoring on and off, both up at once, wrk runs alternating
    between them in ABBA order (on, off, off, on, ...): run-to-run drift on this shared machine
    (~10-20 %) then affects both alike, and so does the ~10 % that the second run of a pair
    gained in every A/B we made (servers in a fixed order measured 0.84-0.87 one way round
    and 0.98 the other)."""
    bodies = payloads()["mlservice"]
    command = [str(BIN / "mlservice"), "serve", str(ref.bundle), "--host", "127.0.0.1",
               "--port", "{port}", "--workers", "1"]
    on = start_server(ServerSpec(MLSERVICE, command, "/health/ready"), log_dir=work)
    off = start_server(ServerSpec(MLSERVICE_NO_MONITORING, command, "/health/ready",
                                  env={"MLSERVICE_MONITORING": "false"}), log_dir=work)
    out: dict[str, Any] = {}
    try:
        for payload, path in zip(("single", "batch"), PATHS["mlservice"], strict=True):
            runs: dict[str, list[float]] = {"on": [], "off": []}
            for server in (on, off):
                run_wrk(wrk, server.url + path, bodies[payload], workdir=work,
                        duration_s=args.warmup, connections=args.connections)
            pairs = (("on", on), ("off", off))
            for i in range(2 * ((args.runs + 1) // 2)):  # ABBA: whichever runs second in a
                for name, server in pairs if i % 2 == 0 else pairs[::-1]:  # pair gains ~10 %
                    result = run_wrk(wrk, server.url + path, bodies[payload], workdir=work,
                                     duration_s=args.duration, connections=args.connections)
                    runs[name].append(result.requests_per_s)
            medians = {k: statistics.median(v) for k, v in runs.items()}
            out[payload] = {**medians, "runs": runs, "ratio": medians["on"] / medians["off"]}
            print(f"  monitoring on/off {payload}: {medians['on']:,.1f} / {medians['off']:,.1f} "
                  f"req/s = {out[payload]['ratio']:.3f}", flush=True)
    finally:
        on.stop()
        off.stop()
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per server (median)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=300, help="trees of the reference model")
    parser.add_argument("--skip-mlflow", action="store_true", help="only echo and mlservice")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from mlservice.inference.onnx_runtime import onnx_status, requested_runtime

    args = _parse(argv)
    started = time.perf_counter()
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="mlservice-serving-bench-") as tmp:
        work = Path(tmp)
        print("training the reference model (HistGradientBoosting, 300 trees)…", flush=True)
        ref = train_reference(work, max_iter=args.max_iter)
        problem = onnx_status(ref.metadata, ref.bundle)
        requested = requested_runtime(ref.metadata)
        runtime = "sklearn" if requested == "sklearn" or problem else "onnx"
        if problem:
            print(f"NOTE: mlservice serves with scikit-learn: {problem}", flush=True)
        results: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}",
            "settings": {"duration_s": args.duration, "runs": args.runs,
                         "connections": args.connections, "wrk_threads": 1,
                         "batch_rows": BATCH_ROWS},
            "model": f"palmerpenguins, HistGradientBoosting(max_iter={args.max_iter}), "
                     "median/most-frequent imputation, scaling, one-hot",
            "mlservice_runtime": runtime if not problem else f"sklearn ({problem})",
            "onnx": ref.metadata.get("onnx"),
            "mlflow_model_uri": ref.model_uri,
            "servers": {},
        }
        print(f"trained in {time.perf_counter() - started:.0f} s; serving benchmark:", flush=True)
        for kind, name, spec in _specs(ref):
            if args.skip_mlflow and kind == "mlflow":
                continue
            results["servers"][name] = _bench_server(kind, spec, wrk=wrk, work=work, args=args)
        print("drift monitoring on against off (alternating runs)…", flush=True)
        results["monitoring_ab"] = _monitoring_ab(ref, wrk=wrk, work=work, args=args)
        print("in-process models and request path…", flush=True)
        results["in_process"] = measure_models(ref.bundle)
        results["asgi"] = measure_asgi(ref.bundle)
        results["acceptance"] = acceptance(results)
        results["total_s"] = time.perf_counter() - started
        json_path, md_path = write_results(results, args.out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"results: {json_path} and {md_path} ({results['total_s']:.0f} s in all)")
    return 0
