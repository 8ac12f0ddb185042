"""MLflow tracking: one run per training, the bundle as artifacts, a registered sklearn model.

This is one of the two modules allowed to import mlflow (with hyperparameter search).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from mlservice.bundle import TRUSTED_TYPES
from mlservice.config import Config
from mlservice.errors import TrackingError

__all__ = ["log_training_run", "prepare_tracking"]

CHAMPION_ALIAS = "champion"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _lineage_tags(data: dict[str, Any]) -> dict[str, str]:
    """DVC state of the training data and how its CSV was read, as ``mlservice.*`` tags.

    ``data_dvc_md5`` holds the md5 only when the file matches its ``.dvc`` record; a file
    changed since ``dvc add`` is tagged ``mlservice.dvc_state=modified`` with the stale md5 in
    ``mlservice.dvc_recorded_md5``.
    """
    fingerprint = data.get("fingerprint") or {}
    tags = {
        "mlservice.dvc_state": str(fingerprint.get("dvc_state") or "untracked"),
        "mlservice.dvc_recorded_md5": str(fingerprint.get("dvc_recorded_md5") or ""),
    }
    read = data.get("read")
    if isinstance(read, dict):
        for key in ("sep", "decimal", "encoding"):
            tags[f"mlservice.csv_{key}"] = str(read.get(key))
    return tags


def prepare_tracking(config: Config) -> str:
    """Set the tracking URI and fail fast (seconds) when a tracking server cannot be reached."""
    import mlflow

    uri = config.tracking.uri
    timeout = config.tracking.timeout_s
    # Bounded retries: MLflow's client defaults (7 retries, 120 s timeout) hang for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout, 1))))
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
                pass
        except OSError as exc:
            raise TrackingError(
                f"MLflow tracking server {uri!r} is unreachable ({exc}); start it, fix "
                "tracking.uri, or train with --set tracking.enabled=false"
            ) from exc
    elif parsed.scheme == "sqlite":
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def _experiment_id(config: Config) -> str:
    import mlflow

    name = config.experiment_name
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    artifact_location = None
    uri = config.tracking.uri
    if uri.startswith("sqlite:///"):
        # Keep artifacts beside the database instead of a ./mlruns in whatever the cwd is.
        root = Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"
        artifact_location = root.as_uri()
    return str(mlflow.create_experiment(name, artifact_location=artifact_location))


def input_schema(metadata: dict[str, Any]) -> Any:
    """The MLflow input schema of the logged pipeline, built from the bundle's feature schema.

    A number keeps its training dtype: an integer feature without missing values is ``long``,
    any other number ``double`` (MLflow will not cast int64 to float64, so an inferred
    ``double`` refused the raw frame's integer ``year``). Categorical and boolean features are
    ``string``: the pipeline takes their canonical strings (``mlservice.categories``). Every
    column is required: ``required`` is about the column being there, not its values (MLflow
    takes missing values in a required column), and the pipeline needs every column.
    """
    from mlflow.types import ColSpec, Schema

    specs = {str(spec["name"]): spec for spec in metadata["features"]}
    columns: list[Any] = []
    for name in metadata["feature_names"]:
        spec = specs[str(name)]
        kind = str(spec.get("type", "numeric"))
        if kind == "numeric":
            integer = str(spec.get("dtype", "")).startswith(("int", "uint"))
            dtype = "long" if integer and not spec.get("nullable") else "double"
        else:
            dtype = "datetime" if kind == "datetime" else "string"
        columns.append(ColSpec(dtype, str(name)))
    return Schema(columns)


def log_training_run(
    *,
    config: Config,
    bundle_path: Path,
    metadata: dict[str, Any],
    pipeline: Any,
    frame: pd.DataFrame,
    X_sample: pd.DataFrame,  # noqa: N803
    promote: bool,
) -> dict[str, Any]:
    """Log params, metrics, dataset, tags, bundle and model; register; alias ``champion``."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        experiment_id = _experiment_id(config)
        with mlflow.start_run(experiment_id=experiment_id, run_name=metadata["bundle_id"]) as run:
            params: dict[str, Any] = {}
            _flatten("model", metadata["model"]["params"], params)
            _flatten("preprocessing", metadata.get("preprocessing", {}), params)
            _flatten("split", {k: v for k, v in metadata["split"].items()}, params)
            params["model.type"] = metadata["model"]["type"]
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
            metrics: dict[str, float] = {}
            for part in ("train", "test"):
                for key, value in metadata["metrics"][part].items():
                    if value is not None:
                        metrics[f"{part}_{key}"] = float(value)
            for key, stats in metadata["metrics"].get("cv", {}).items():
                for stat in ("mean", "std"):
                    if stats.get(stat) is not None:
                        metrics[f"cv_{stat}_{key}"] = float(stats[stat])
            mlflow.log_metrics(metrics)
            fingerprint = metadata["data"]["fingerprint"]
            source = str(metadata["data"]["source"])
            mlflow.set_tags(
                {
                    "git_commit": metadata.get("git_commit") or "unknown",
                    "data_sha256": fingerprint["sha256"],
                    "data_dvc_md5": fingerprint.get("dvc_md5") or "",
                    "mlservice_version": metadata["versions"]["mlservice"],
                    "bundle_id": metadata["bundle_id"],
                    "gate_passed": str(metadata["gate"]["passed"]).lower(),
                    "task": config.task,
                    **_lineage_tags(metadata["data"]),
                }
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # source-kind ambiguity warnings are noise here
                dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                    frame,
                    # builtin datasets have no file: MLflow then records the code as source
                    source=None if source.startswith("builtin:") else str(Path(source).resolve()),
                    targets=config.data.target,
                    name=source.removeprefix("builtin:")
                    if source.startswith("builtin:")
                    else Path(source).stem,
                    digest=fingerprint["sha256"][:36],
                )
                mlflow.log_input(dataset, context="training")
            mlflow.log_artifacts(str(bundle_path), artifact_path="bundle")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                signature = ModelSignature(  # what users send, not the coerced frame
                    inputs=input_schema(metadata),
                    outputs=infer_signature(X_sample, pipeline.predict(X_sample)).outputs,
                )
                info = mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    signature=signature,
                    input_example=X_sample.head(3),
                    serialization_format="skops",
                    skops_trusted_types=sorted(TRUSTED_TYPES),
                    registered_model_name=config.name if config.tracking.register_model else None,
                )
            version = getattr(info, "registered_model_version", None)
            if version is not None and promote:
                MlflowClient().set_registered_model_alias(config.name, CHAMPION_ALIAS, str(version))
            return {
                "tracking_uri": config.tracking.uri,
                "experiment": config.experiment_name,
                "experiment_id": experiment_id,
                "run_id": run.info.run_id,
                "model_uri": info.model_uri,
                "registered_version": str(version) if version is not None else None,
                "alias": CHAMPION_ALIAS if (version is not None and promote) else None,
            }
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many unrelated types for one failure
        with suppress(Exception):
            mlflow.end_run(status="FAILED")
        raise TrackingError(
            f"logging to MLflow at {config.tracking.uri!r} failed: {exc}. "
            f"The bundle is saved at {str(bundle_path)!r}."
        ) from exc
