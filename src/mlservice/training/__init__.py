"""Training, evaluation, tracking and tuning: the only layer that imports mlflow and optuna."""

from mlservice.training.train import TrainResult, train

__all__ = ["TrainResult", "train"]
