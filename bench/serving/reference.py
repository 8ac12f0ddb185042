"""The reference model: palmerpenguins, the default preprocessing, HistGradientBoosting(300).

Trained with ``mlservice.training.train`` exactly as ``mlservice train`` would, with tracking to a
SQLite MLflow store in the work dir, so MLflow serves the model the same training logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from palmerpenguins import load_penguins

__all__ = ["Reference", "payloads", "train_reference"]

FEATURES = [
    "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year",
]
BATCH_ROWS = 1000


@dataclass
class Reference:
    """The trained bundle, the MLflow model and what to send them."""

    bundle: Path
    tracking_uri: str
    model_uri: str
    metadata: dict[str, Any]


def train_reference(workdir: Path, *, max_iter: int = 300) -> Reference:
    from mlservice.config import parse_config
    from mlservice.training import train

    csv = workdir / "penguins.csv"
    load_penguins().to_csv(csv, index=False)
    tracking_uri = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    config = parse_config(
        {
            "name": "penguins-bench",
            "version": "1.0.0",
            "task": "classification",
            "data": {"source": str(csv), "target": "species"},
            "preprocessing": {
                "numeric": {"impute": "median", "scale": "standard"},
                "categorical": {"impute": "most_frequent", "encode": "onehot"},
            },
            "model": {"type": "hist_gradient_boosting", "params": {"max_iter": max_iter}},
            "cv": {"enabled": False},
            "targets": {"accuracy": ">= 0.8"},
            "tracking": {"enabled": True, "uri": tracking_uri},
            "output": {"dir": str(workdir / "models")},
        }
    )
    result = train(config, base_dir=workdir)
    if result.tracking is None:
        raise RuntimeError(f"training did not log to MLflow: {result.tracking_error}")
    version = result.tracking.get("registered_version")
    model_uri = f"models:/penguins-bench/{version}" if version else result.tracking["model_uri"]
    metadata = json.loads((result.bundle_path / "metadata.json").read_text())
    return Reference(result.bundle_path, tracking_uri, model_uri, metadata)


def sample_rows(count: int, seed: int = 0) -> list[list[Any]]:
    """Rows without missing values (every server takes them), values in feature order."""
    frame = load_penguins()[FEATURES].dropna()
    sample = frame.sample(count, replace=count > len(frame), random_state=seed)
    rows: list[list[Any]] = []
    for values in sample.itertuples(index=False):
        rows.append([v.item() if isinstance(v, np.generic) else v for v in values])
    return rows


def frame_of(rows: list[list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=FEATURES)
    for name in ("island", "sex"):
        frame[name] = frame[name].astype(object)
    return frame


def payloads() -> dict[str, dict[str, bytes]]:
    """Request bodies per server kind: ``single`` (one row) and ``batch`` (1,000 rows)."""
    one = sample_rows(1, seed=1)
    many = sample_rows(BATCH_ROWS, seed=2)

    def named(rows: list[list[Any]]) -> list[dict[str, Any]]:
        return [dict(zip(FEATURES, row, strict=True)) for row in rows]

    def mlflow(rows: list[list[Any]]) -> bytes:
        # MLflow's signature declares integer columns as doubles (they may hold missing values)
        data = [[float(v) if isinstance(v, int) else v for v in row] for row in rows]
        return json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}}).encode()

    mlservice = {
        "single": json.dumps({"features": named(one)[0]}).encode(),
        "batch": json.dumps({"instances": named(many)}).encode(),
    }
    return {
        "mlservice": mlservice,
        "echo": mlservice,  # the floor parses and returns the same bodies
        "mlflow": {"single": mlflow(one), "batch": mlflow(many)},
    }
