"""The soak run: bundle → ``mlservice serve`` → wrk at a steady rate → /proc samples → verdict.

The load is wrk (Debian package ``wrk``) with a generated Lua script: 64 request bodies built from
the bundle's feature schema (seeded), nine single predictions for each batch of 20, and a
per-connection ``delay()`` that holds the rate near ``--rate`` requests per second (calibrated
with the warm-up's mean latency; ``0``: as fast as the server answers). wrk counts socket errors
(connect, read, write, timeout at 10 s) and answers of 400 or more; all of them are errors here.

Memory is compared like with like: a warm-up run (not counted) fills the caches and thread
pools first, then the first sample of the measured phase (taken under the same load) is the
baseline and the last one is the end. File descriptors are compared the same way; with a fixed
number of keep-alive connections a leak shows as a count that only goes up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = ["main"]

_RESULTS = Path(__file__).resolve().parents[1] / "results"
_STARTUP_S = 120.0
_BODIES = 64
_BATCH_ROWS = 20
_WRK_TIMEOUT = "10s"


# ---------------------------------------------------------------------------- arguments
def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of measured load (default 600; CI: 60)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before measuring (default: duration/10, 5-30 s)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="target requests/s over all connections; 0 = as fast as possible")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sample-every", type=float, default=5.0,
                        help="seconds between RSS/FD samples of the server process")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="serve this bundle instead of training the penguins example")
    parser.add_argument("--out", type=Path, default=_RESULTS,
                        help="directory for soak.json and soak.md")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="percent")
    parser.add_argument("--p99-budget-ms", type=float, default=500.0,
                        help="latency budget for the 99th percentile")
    parser.add_argument("--fd-tolerance", type=int, default=2,
                        help="open descriptors the end may have over the start")
    args = parser.parse_args(argv)
    if args.duration < 3 * args.sample_every:
        parser.error("--duration must be at least three sampling intervals")
    if args.warmup is None:
        args.warmup = min(30.0, max(5.0, args.duration / 10))
    return args


# ------------------------------------------------------------------------------ bundle
def _train_bundle(work: Path) -> Path:
    """The penguins example (random forest, tracking off) trained into ``work``."""
    from palmerpenguins import load_penguins

    from mlservice.config import parse_config
    from mlservice.training import train

    csv = work / "penguins.csv"
    load_penguins().to_csv(csv, index=False)
    config = parse_config({
        "name": "penguins-soak",
        "version": "1.0.0",
        "task": "classification",
        "data": {"source": str(csv), "target": "species"},
        "model": {"type": "random_forest", "params": {"n_estimators": 50}},
        "cv": {"folds": 3},
        "targets": {"accuracy": ">= 0.8"},
        "tracking": {"enabled": False},
        "output": {"dir": str(work / "models")},
    })
    return train(config, base_dir=work).bundle_path


def _value(spec: dict[str, Any], rng: np.random.Generator) -> Any:
    kind = spec.get("type", "numeric")
    if spec.get("nullable") and rng.random() < 0.05:
        return None
    if spec.get("categories"):
        return spec["categories"][int(rng.integers(len(spec["categories"])))]
    if kind == "numeric" and spec.get("min") is not None and spec.get("max") is not None:
        value = float(rng.uniform(float(spec["min"]), float(spec["max"])))
        return round(value) if "int" in str(spec.get("dtype", "")) else round(value, 3)
    return spec.get("example")


def _bodies(bundle: Path, seed: int = 0) -> list[tuple[str, str]]:
    """(path, JSON body) pairs from the bundle's feature schema: rows within training ranges."""
    from mlservice.bundle import load_metadata

    specs = load_metadata(bundle)["features"]
    rng = np.random.default_rng(seed)

    def row() -> dict[str, Any]:
        return {str(s["name"]): _value(s, rng) for s in specs}

    out = []
    for i in range(_BODIES):
        if i % 10 == 9:
            body = {"instances": [row() for _ in range(_BATCH_ROWS)]}
            out.append(("/api/v1/predict/batch", json.dumps(body)))
        else:
            out.append(("/api/v1/predict", json.dumps({"features": row()})))
    return out


def _lua(bodies: list[tuple[str, str]], delay_ms: float) -> str:
    items = ",\n".join(f'  {{"{path}", [==[{body}]==]}}' for path, body in bodies)
    return f"""-- generated by bench/soak/run.py
local items = {{
{items}
}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  i = i + 1
  local item = items[(i % #items) + 1]
  return wrk.format(nil, item[1], nil, item[2])
end

delay = function()
  return {delay_ms:.3f}
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SOAK_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


# ------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(bundle: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from mlservice.cli import main; main()", "serve",
               str(bundle), "--port", str(port), "--log-level", "warning"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLSERVICE_LOG_LEVEL": "warning"})
    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # poll interval
    process.kill()
    raise RuntimeError(f"the server was not ready within {_STARTUP_S:g} s")


def _stop_server(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


# ----------------------------------------------------------------------------- sampling
@dataclass
class Sample:
    t_s: float
    phase: str
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float


def _sample(pid: int, t_s: float, phase: str) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
    return Sample(round(t_s, 2), phase, round(rss_kb / 1024, 2), len(os.listdir(f"/proc/{pid}/fd")),
                  int(fields["Threads"]), round(cpu, 2))


def _wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def _run_phase(
    wrk: str, script: Path, url: str, *, seconds: float, args: argparse.Namespace,
    pid: int, phase: str, t0: float, samples: list[Sample],
) -> dict[str, Any]:
    """Run wrk for ``seconds``, sampling the server meanwhile; return wrk's summary."""
    command = [wrk, "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", _WRK_TIMEOUT, "-s", str(script), url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    next_at = time.monotonic() + args.sample_every
    deadline = time.monotonic() + seconds + 60
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(max(0.0, min(0.2, next_at - time.monotonic())))  # pacing, not sync
        if time.monotonic() >= next_at and process.poll() is None:
            samples.append(_sample(pid, time.monotonic() - t0, phase))
            next_at += args.sample_every
    if process.poll() is None:
        process.kill()
    out, err = process.communicate(timeout=30)
    line = next((x for x in out.splitlines() if x.startswith("SOAK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err}\n{out}")
    summary: dict[str, Any] = json.loads(line.removeprefix("SOAK_JSON "))
    return summary


# ------------------------------------------------------------------------------ verdict
def _slope_mb_per_h(samples: list[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    t = np.array([s.t_s for s in samples])
    rss = np.array([s.rss_mb for s in samples])
    return float(np.polyfit(t, rss, 1)[0] * 3600)


def _verdict(
    wrk: dict[str, Any], measured: list[Sample], args: argparse.Namespace
) -> dict[str, Any]:
    errors = {k: int(wrk[k]) for k in ("connect", "read", "write", "timeout", "status")}
    start, end = measured[0], measured[-1]
    growth = (end.rss_mb - start.rss_mb) / start.rss_mb * 100
    duration_s = wrk["duration_us"] / 1e6
    result = {
        "requests": int(wrk["requests"]),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests_per_s": round(wrk["requests"] / duration_s, 1),
        "latency_ms": {
            "p50": round(wrk["p50_us"] / 1000, 2),
            "p90": round(wrk["p90_us"] / 1000, 2),
            "p99": round(wrk["p99_us"] / 1000, 2),
            "max": round(wrk["max_us"] / 1000, 2),
            "mean": round(wrk["mean_us"] / 1000, 2),
        },
        "rss_mb": {"start": start.rss_mb, "end": end.rss_mb,
                   "max": max(s.rss_mb for s in measured), "growth_pct": round(growth, 2),
                   "slope_mb_per_h": round(_slope_mb_per_h(measured), 2)},
        "fds": {"start": start.fds, "end": end.fds, "min": min(s.fds for s in measured),
                "max": max(s.fds for s in measured)},
        "threads": {"start": start.threads, "end": end.threads},
        "server_cpu_s": round(end.cpu_s - start.cpu_s, 1),
    }
    checks = {
        "zero errors": result["errors"] == 0 and result["requests"] > 0,
        f"p99 < {args.p99_budget_ms:g} ms": wrk["p99_us"] / 1000 < args.p99_budget_ms,
        f"RSS growth < {args.max_rss_growth:g} %": growth < args.max_rss_growth,
        "open FDs flat": end.fds - start.fds <= args.fd_tolerance,
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return result


def _markdown(report: dict[str, Any]) -> str:
    r, run = report["result"], report["run"]
    lat, rss, fds = r["latency_ms"], r["rss_mb"], r["fds"]
    lines = [
        "# Soak test",
        "",
        f"{run['date']} · {run['duration_s']:g} s measured after {run['warmup_s']:g} s warm-up · "
        f"target {run['rate']:g} req/s over {run['connections']} connections · "
        f"{run['bundle']} · {run['machine']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests | {r['requests']} ({r['requests_per_s']} req/s) |",
        f"| errors | {r['errors']} {r['error_kinds']} |",
        f"| latency p50 / p90 / p99 / max | {lat['p50']} / {lat['p90']} / {lat['p99']} / "
        f"{lat['max']} ms |",
        f"| RSS start → end (max) | {rss['start']} → {rss['end']} MB ({rss['max']} MB) |",
        f"| RSS growth | {rss['growth_pct']} % (trend {rss['slope_mb_per_h']} MB/h) |",
        f"| open FDs start → end (min–max) | {fds['start']} → {fds['end']} "
        f"({fds['min']}–{fds['max']}) |",
        f"| threads start → end | {r['threads']['start']} → {r['threads']['end']} |",
        f"| server CPU | {r['server_cpu_s']} s |",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in r["checks"].items()],
        "",
        f"**{'PASS' if r['passed'] else 'FAIL'}**",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check passes, 1 when one fails, 2 when it cannot run."""
    args = _parse(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk (make soak does it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlservice-soak-") as tmp:
        work = Path(tmp)
        bundle = args.bundle.resolve() if args.bundle else _train_bundle(work)
        bodies = _bodies(bundle)
        cycle_ms = args.connections * 1000 / args.rate if args.rate > 0 else 0.0
        script = work / "soak.lua"
        script.write_text(_lua(bodies, cycle_ms), encoding="utf-8")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = work / "server.log"
        load_start = os.getloadavg()
        process = _start_server(bundle, port, log_path)
        samples: list[Sample] = []
        t0 = time.monotonic()
        try:
            samples.append(_sample(process.pid, 0.0, "idle"))
            warm = _run_phase(wrk, script, url, seconds=args.warmup, args=args,
                              pid=process.pid, phase="warmup", t0=t0, samples=samples)
            # Each connection waits ``delay`` after an answer: take the answer time measured
            # in the warm-up off the cycle, so that the measured phase runs near --rate.
            delay_ms = max(0.0, cycle_ms - warm["mean_us"] / 1000) if cycle_ms else 0.0
            script.write_text(_lua(bodies, delay_ms), encoding="utf-8")
            summary = _run_phase(wrk, script, url, seconds=args.duration, args=args,
                                 pid=process.pid, phase="measured", t0=t0, samples=samples)
            ready = httpx.get(f"{url}/health/ready", timeout=10).status_code
        finally:
            exit_code = _stop_server(process)
        measured = [s for s in samples if s.phase == "measured"]
        if len(measured) < 2:
            print("too few samples in the measured phase", file=sys.stderr)
            return 2
        result = _verdict(summary, measured, args)
        result["ready_after"] = ready
        result["server_exit_code"] = exit_code
        result["checks"]["ready after the run"] = ready == 200
        result["passed"] = all(result["checks"].values())
        from mlservice.bundle import load_metadata

        meta = load_metadata(bundle)
        report = {
            "run": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rate": args.rate,
                "connections": args.connections,
                "sample_every_s": args.sample_every,
                "bundle": f"{meta['name']} {meta['version']} ({meta['model']['type']})",
                "machine": f"{os.cpu_count()} cpus, load {load_start[0]:.1f} at start, "
                           f"Python {platform.python_version()}",
                "wrk": _wrk_version(wrk),
                "requests": "9 single predictions per batch of 20 rows, 64 distinct bodies",
            },
            "result": result,
            "samples": [asdict(s) for s in samples],
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(report, indent=2) + "\n",
                                            encoding="utf-8")
        markdown = _markdown(report)
        (args.out / "soak.md").write_text(markdown, encoding="utf-8")
        print(markdown)
        return 0 if result["passed"] else 1
