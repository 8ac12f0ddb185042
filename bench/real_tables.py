"""Real tables: a categorical coded as integers with thousands of levels (a zip code).

``make_table`` generates the kind of table every business has: a ``zip`` column with
``levels`` integer codes (Zipf-like frequencies, each with its own effect on the target), a
store number with a few levels, a boolean-like 0/1 column with gaps, a few numeric columns
with gaps, and a binary target. ``python -m bench.real_tables`` trains it with the default
config (``column_types: {zip: categorical, store: categorical, garage: categorical}``) in a
child process for 50k and 500k rows and records wall time, the child's peak RSS, the test
roc_auc, the runtime that serves it and the encoding chosen for ``zip``
(``bench/results/real_tables.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def make_table(rows: int, *, levels: int = 8_000, seed: int = 7) -> pd.DataFrame:
    """A binary-target table whose ``zip`` (integer codes) carries most of the signal."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, levels + 1) ** 0.6  # a few big zips, a long tail of small ones
    zips = rng.choice(levels, size=rows, p=weights / weights.sum())
    zip_effect = rng.normal(0.0, 1.0, levels)
    store = rng.integers(1, 13, rows)
    garage = rng.integers(0, 2, rows).astype(float)
    garage[rng.random(rows) < 0.03] = np.nan  # a boolean-like column read with gaps: 0.0/1.0
    area = rng.lognormal(4.4, 0.35, rows)
    age = rng.integers(0, 80, rows).astype(float)
    age[rng.random(rows) < 0.05] = np.nan
    score = (
        1.2 * zip_effect[zips]
        + 0.5 * (np.log(area) - 4.4) / 0.35
        - 0.3 * (np.nan_to_num(age, nan=40.0) - 40.0) / 23.0
        + 0.4 * np.nan_to_num(garage, nan=0.5)
        + 0.1 * (store % 3)
    )
    target = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(score - 0.2)))).astype(int)
    return pd.DataFrame(
        {
            "zip": zips + 1000,  # codes that look like numbers, not 0..n
            "store": store,
            "garage": garage,
            "area_m2": area.round(1),
            "age": age,
            "sold": target,
        }
    )


def table_config(csv: Path, out: Path) -> dict[str, Any]:
    """The default config a user writes for the table: declare the codes categorical."""
    return {
        "name": "real-table",
        "version": "1.0.0",
        "task": "classification",
        "data": {
            "source": str(csv),
            "target": "sold",
            "column_types": {"zip": "categorical", "store": "categorical", "garage": "categorical"},
        },
        "targets": {"roc_auc": ">= 0.6"},
        "tracking": {"enabled": False},
        "output": {"dir": str(out / "models")},
    }


_CHILD = """
import json, sys, time
from pathlib import Path
from mlservice.bundle import load_metadata
from mlservice.config import parse_config
from mlservice.training import train
config = parse_config(json.loads(sys.argv[1]))
started = time.perf_counter()
result = train(config, base_dir=Path(sys.argv[2]))
meta = load_metadata(result.bundle_path)
train_s = round(time.perf_counter() - started, 1)
# API (codes as JSON numbers and as strings) against mlservice predict on the same 2,000 rows
import numpy as np, pandas as pd
from fastapi.testclient import TestClient
from mlservice.api.main import create_app
from mlservice.inference import Predictor
from mlservice.inference.batch import score_file
rows = pd.read_csv(config.data.source).drop(columns=["sold"]).head(2000)
work = Path(sys.argv[2])
rows.to_csv(work / "rows.csv", index=False)
score_file(Predictor.from_path(result.bundle_path), work / "rows.csv", work / "scored.csv")
offline = pd.read_csv(work / "scored.csv")["proba_1"].to_numpy()
def body(as_string):
    out = []
    for record in rows.astype(object).where(rows.notna(), None).to_dict(orient="records"):
        for key in ("zip", "store", "garage"):
            if record[key] is not None:
                record[key] = str(int(record[key])) if as_string else int(record[key])
        out.append(record)
    return {"instances": out}
gaps = {}
with TestClient(create_app(result.bundle_path)) as client:
    for as_string in (False, True):
        answer = client.post("/api/v1/predict/batch", json=body(as_string)).json()
        online = np.array([p["probabilities"]["1"] for p in answer["predictions"]])
        gaps["string" if as_string else "number"] = float(np.abs(online - offline).max())
print(json.dumps({
    "train_s": train_s,
    "api_vs_offline_max_abs_diff": gaps,
    "roc_auc": meta["metrics"]["test"].get("roc_auc"),
    "runtime": "onnx" if (meta.get("onnx") or {}).get("verified") else "sklearn",
    "onnx_reason": (meta.get("onnx") or {}).get("reason"),
    "encodings": (meta.get("preprocessing") or {}).get("encodings"),
    "bundle": str(result.bundle_path),
}))
"""


def measure(rows: int, levels: int) -> dict[str, Any]:
    """Train the generated table in a child process: wall time and the child's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        csv = base / "table.csv"
        make_table(rows, levels=levels).to_csv(csv, index=False)
        config = json.dumps(table_config(csv, base))
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, config, str(base)],
            capture_output=True, text=True, check=False,
        )
        wall = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode not in (0, 3):
            raise RuntimeError(f"training failed ({done.returncode}):\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
    report.pop("bundle")
    return {"rows": rows, "levels": levels, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak_mb), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--levels", type=int, default=8_000)
    args = parser.parse_args()
    results = []
    for rows in args.rows:  # one child per size: RUSAGE_CHILDREN keeps the largest peak
        results.append(measure(rows, args.levels))
        print(json.dumps(results[-1]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_tables.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Real tables: an 8,000-level integer-coded categorical",
        "",
        "`python -m bench.real_tables` (default config, `zip` declared categorical; one child "
        "process per size, peak RSS of the child; the process time also covers the check of "
        "the API against `mlservice predict` on 2,000 rows after training).",
        "",
        "| rows | levels | process wall s | train() s | peak RSS MB | test roc_auc | served by "
        "| zip encoding | API vs predict, codes as numbers / strings (max abs diff) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        zip_encoding = (r.get("encodings") or {}).get("zip")
        gap = r.get("api_vs_offline_max_abs_diff") or {}
        lines.append(
            f"| {r['rows']:,} | {r['levels']:,} | {r['wall_s']} | {r['train_s']} | "
            f"{r['peak_rss_mb']} | "
            f"{r['roc_auc']:.4f} | {r['runtime']} | {zip_encoding} | "
            f"{gap.get('number', float('nan')):.1e} / {gap.get('string', float('nan')):.1e} |"
        )
    (RESULTS / "real_tables.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
