"""The bundled example behind ``mlservice demo`` / ``make demo``: palmerpenguins species."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_CONFIG", "prepare_demo"]

DEMO_CONFIG = """\
# Palmer penguins: predict the species from body measurements (ships with `palmerpenguins`).
name: penguin-species
version: 1.0.0
task: classification
data:
  source: data/raw/penguins.csv
  target: species
  drop: []
split: {strategy: stratified, test_size: 0.2, seed: 42}
preprocessing:
  numeric: {impute: median, scale: standard}
  categorical: {impute: most_frequent, encode: onehot}
model:
  type: hist_gradient_boosting
  params: {max_iter: 300, learning_rate: 0.05}
cv: {folds: 5}
targets:                # fixed BEFORE training: the gate
  accuracy: ">= 0.90"
  f1: ">= 0.90"
  roc_auc: ">= 0.95"
tracking: {uri: "sqlite:///mlflow/mlflow.db"}
output: {dir: data/models}
"""


def prepare_demo(directory: Path) -> Path:
    """Write the raw penguins CSV and the demo config into ``directory`` if they are missing."""
    from palmerpenguins import load_penguins

    directory = directory.resolve()
    raw = directory / "data" / "raw" / "penguins.csv"
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        load_penguins().to_csv(raw, index=False)
    config = directory / "configs" / "model_config.yaml"
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(DEMO_CONFIG, encoding="utf-8")
    return config
