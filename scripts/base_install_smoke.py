"""Serve a bundle from the BASE install (no extras) and predict once over HTTP.

Run by `make test` with the dev venv's python: it trains a small bundle with the training stack,
then starts `mlservice serve` from a second venv that has only `pip install .`, so the API is
proven to start and answer without MLflow, Optuna or matplotlib installed.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-venv", type=Path, required=True)
    args = parser.parse_args()
    base_bin = args.base_venv / "bin"
    missing = subprocess.run(
        [str(base_bin / "python"), "-I", "-c", "import mlflow"], capture_output=True, check=False
    )
    assert missing.returncode != 0, "the base venv must not have mlflow installed"

    from palmerpenguins import load_penguins

    from mlservice.config import parse_config
    from mlservice.training import train

    tmp = Path(tempfile.mkdtemp(prefix="mlservice-base-smoke-"))
    csv = tmp / "penguins.csv"
    load_penguins().to_csv(csv, index=False)
    config = parse_config(
        {
            "name": "base-smoke",
            "task": "classification",
            "data": {"source": str(csv), "target": "species"},
            "model": {"type": "random_forest", "params": {"n_estimators": 20}},
            "cv": {"folds": 2},
            "targets": {"accuracy": ">= 0.8"},
            "tracking": {"enabled": False},
            "output": {"dir": str(tmp / "models")},
        }
    )
    bundle = train(config, base_dir=tmp).bundle_path
    port = _free_port()
    server = subprocess.Popen(
        [str(base_bin / "mlservice"), "serve", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/health/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)  # polling interval, bounded by the deadline
        assert status == 200, f"server never became ready: {server.stderr and server.stderr.read()}"
        body = json.dumps(
            {
                "features": {
                    "island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0,
                    "flipper_length_mm": 218.0, "body_mass_g": 5200.0, "sex": "male",
                    "year": 2008,
                }
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/predict",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["prediction"] == "Gentoo", answer
        print(f"base install served {bundle.name}: {answer['prediction']} ({answer['confidence']})")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
