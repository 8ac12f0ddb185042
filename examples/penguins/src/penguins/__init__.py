"""penguins: the penguin-species model service, built on mlservice.

Typed helpers bound to this project's layout; the CLI does the same from the project root
(``mlservice train configs/model_config.yaml``, ``mlservice serve``). Training libraries are
imported only when a function needs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlservice.config import Config
    from mlservice.inference import Predictor
    from mlservice.training import TrainResult

__all__ = [
    "BUNDLE_PATH",
    "CONFIG_PATH",
    "PROJECT_ROOT",
    "load_config",
    "load_predictor",
    "predict",
    "train_model",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = PROJECT_ROOT / "configs" / "model_config.yaml"
BUNDLE_PATH = PROJECT_ROOT / "data" / "models" / "model_latest"


def load_config(path: Path = CONFIG_PATH, overrides: Iterable[str] = ()) -> Config:
    """The validated config; ``overrides`` as ``--set`` takes them, e.g. ``"cv.folds=2"``.

    A relative SQLite tracking URI is anchored at the project root, so notebooks and scripts
    share one MLflow store whatever their working directory.
    """
    from mlservice.config import load_config as load
    from mlservice.models import config_checks

    config = load(path, overrides, extra_checks=[config_checks])
    uri = config.tracking.uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        config.tracking.uri = f"sqlite:///{PROJECT_ROOT / uri.removeprefix('sqlite:///')}"
    return config


def train_model(overrides: Iterable[str] = (), *, config_path: Path = CONFIG_PATH) -> TrainResult:
    """Run the whole training cycle (split, CV, metrics, gate, bundle, MLflow) for this project."""
    from mlservice.training import train

    return train(load_config(config_path, overrides), base_dir=PROJECT_ROOT)


def load_predictor(bundle: Path = BUNDLE_PATH) -> Predictor:
    """Load a verified bundle (hashes checked, never unpickled) for repeated predictions."""
    from mlservice.inference import Predictor

    return Predictor.from_path(bundle)


def predict(
    rows: Sequence[Mapping[str, Any]], *, bundle: Path = BUNDLE_PATH
) -> list[dict[str, Any]]:
    """Predict rows given as ``{feature: value}`` mappings; one result dict per row."""
    return load_predictor(bundle).predict_records(list(rows))
