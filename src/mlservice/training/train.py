"""The training cycle (SPEC §4): load, split, one Pipeline, CV, metrics, gate, bundle, MLflow."""

from __future__ import annotations

import logging
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from mlservice.bundle import find_bundles, promote_latest, save_bundle, update_bundle_files
from mlservice.config import Config, config_hash
from mlservice.data import build_feature_specs, infer_column_types, load_dataset, split_indices
from mlservice.errors import DataError, TrackingError
from mlservice.models import build_estimator, get_spec
from mlservice.pipelines import build_pipeline
from mlservice.training.evaluate import (
    GateResult,
    compute_metrics,
    cross_validate,
    evaluate_gate,
    predict_outputs,
)

__all__ = ["Progress", "TrainResult", "prepare_frame", "train"]

log = logging.getLogger(__name__)

INTERVAL_LEVEL = 0.9
_IMPORTANCE_MAX_ROWS = 2000


class Progress(Protocol):
    """What the CLI shows while training runs."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: int | None = None) -> None:
        log.info("stage: %s", name)

    def advance(self) -> None:
        return None


@dataclass
class TrainResult:
    """Outcome of one training run."""

    bundle_path: Path
    metadata: dict[str, Any]
    gate: GateResult
    promoted: bool
    tracking: dict[str, Any] | None = None
    tracking_error: str | None = None
    warnings: list[str] = field(default_factory=list)


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def prepare_frame(
    frame: pd.DataFrame, config: Config
) -> tuple[pd.DataFrame, pd.Series, dict[str, str], list[str]]:
    """Features, target (rows with a missing target dropped), column types, warnings."""
    notes: list[str] = []
    data = config.data
    excluded = {data.target, *data.drop, *(c for c in (data.group_column, data.time_column) if c)}
    features = data.features or [str(c) for c in frame.columns if str(c) not in excluded]
    if data.target in features:
        raise DataError(f"data.features lists the target {data.target!r}; remove it (leakage)")
    unknown = sorted(set(data.column_types) - set(features))
    if unknown:
        raise DataError(f"data.column_types names columns that are not features: {unknown}")
    if not features:
        raise DataError("no feature columns left after removing target and data.drop")
    missing_target = frame[data.target].isna()
    if missing_target.any():
        notes.append(f"dropped {int(missing_target.sum())} rows with a missing target")
        frame = frame.loc[~missing_target]
    frame = frame.reset_index(drop=True)
    X = frame[features].copy()  # noqa: N806
    types = infer_column_types(X, data.column_types)
    for name, kind in types.items():
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(X[name]):
            converted = pd.to_numeric(X[name], errors="coerce")
            bad = X[name].notna() & converted.isna()
            if bad.any():
                raise DataError(
                    f"column {name!r} is declared numeric but holds {X[name][bad].iloc[0]!r}"
                )
            X[name] = converted
        elif kind in ("categorical", "text"):
            X[name] = X[name].astype("object").where(X[name].notna(), np.nan)
    return X, frame[data.target], types, notes


def _encode_target(y: pd.Series, task: str) -> tuple[np.ndarray, list[Any] | None]:
    if task == "classification":
        classes = sorted(y.unique().tolist(), key=lambda v: (str(type(v)), v))
        if len(classes) < 2:
            raise DataError(f"target {y.name!r} has one class {classes!r}; need at least two")
        codes = pd.Categorical(y, categories=classes).codes.astype(np.int64)
        return codes, [c.item() if isinstance(c, np.generic) else c for c in classes]
    values = pd.to_numeric(y, errors="coerce")
    if values.isna().any():
        raise DataError(f"target {y.name!r} must be numeric for task {task!r}")
    return values.to_numpy(dtype=float), None


def _importance(pipeline: Any, X: pd.DataFrame, y: np.ndarray, seed: int) -> list[dict[str, Any]]:  # noqa: N803
    if len(X) > _IMPORTANCE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(len(X), _IMPORTANCE_MAX_ROWS, replace=False)
        X, y = X.iloc[rows], y[rows]  # noqa: N806
    result = permutation_importance(pipeline, X, y, n_repeats=5, random_state=seed, n_jobs=1)
    items = [
        {"feature": str(name), "importance": float(mean), "std": float(std)}
        for name, mean, std in zip(
            X.columns, result.importances_mean, result.importances_std, strict=True
        )
    ]
    return sorted(items, key=lambda item: item["importance"], reverse=True)


def train(
    config: Config, *, base_dir: Path | None = None, progress: Progress | None = None
) -> TrainResult:
    """Run the whole cycle; the returned result says whether the gate passed."""
    progress = progress or _NoProgress()
    base_dir = (base_dir or Path.cwd()).resolve()
    task = config.task
    seed = config.split.seed

    progress.stage("loading data")
    dataset = load_dataset(config.data, base_dir=base_dir)
    X, y_raw, types, notes = prepare_frame(dataset.frame, config)  # noqa: N806
    y, classes = _encode_target(y_raw, task)
    n_classes = len(classes) if classes else 0

    progress.stage("splitting")
    frame = dataset.frame
    train_idx, test_idx = split_indices(
        len(X),
        strategy=str(config.split.strategy),
        test_size=config.split.test_size,
        seed=seed,
        y=y_raw.reset_index(drop=True) if task == "classification" else None,
        time=frame[config.data.time_column] if config.data.time_column else None,
        groups=frame[config.data.group_column] if config.data.group_column else None,
    )
    X_train, X_test = X.iloc[train_idx], X.iloc[test_idx]  # noqa: N806
    y_train, y_test = y[train_idx], y[test_idx]
    specs = build_feature_specs(X_train, types)

    estimator = build_estimator(config.model_type, task, config.model.params, seed=seed)
    pipeline = build_pipeline(types=types, preprocessing=config.preprocessing, estimator=estimator)

    cv_summary: dict[str, Any] = {}
    interval = None
    if config.cv.enabled:
        folds = min(config.cv.folds, len(X_train))
        progress.stage(f"cross-validation ({folds} folds)", total=folds)
        groups = (
            frame[config.data.group_column].iloc[train_idx] if config.data.group_column else None
        )
        cv = cross_validate(
            pipeline,
            X_train,
            y_train,
            task=task,
            folds=folds,
            seed=seed,
            strategy=str(config.split.strategy),
            n_classes=n_classes,
            groups=groups,
            on_fold=lambda _i: progress.advance(),
        )
        cv_summary = cv.summary
        if cv.oof_residuals is not None:
            residuals = np.abs(cv.oof_residuals[~np.isnan(cv.oof_residuals)])
            if residuals.size:
                interval = {
                    "level": INTERVAL_LEVEL,
                    "halfwidth": float(np.quantile(residuals, INTERVAL_LEVEL)),
                    "method": "split-conformal on out-of-fold CV residuals",
                }

    progress.stage("fitting on the training part")
    pipeline.fit(X_train, y_train)
    progress.stage("evaluating")
    train_pred, train_proba = predict_outputs(pipeline, X_train, task)
    test_pred, test_proba = predict_outputs(pipeline, X_test, task)
    train_metrics = compute_metrics(task, y_train, train_pred, train_proba, n_classes=n_classes)
    test_metrics = compute_metrics(task, y_test, test_pred, test_proba, n_classes=n_classes)
    gate = evaluate_gate(config.parsed_targets(), test_metrics)
    progress.stage("feature importance")
    importance = _importance(pipeline, X_test, y_test, seed)

    spec = get_spec(config.model_type)
    estimator_cls = type(pipeline.named_steps["model"])
    module_root = estimator_cls.__module__.split(".")[0]
    requirements = [module_root] if module_root in ("lightgbm", "xgboost") else []
    versions = {
        "python": platform.python_version(),
        "mlservice": _version("mlservice") or "unknown",
        "scikit-learn": _version("scikit-learn"),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "skops": _version("skops"),
    }
    for module in requirements:
        versions[module] = _version("xgboost-cpu") or _version(module)
    balance = None
    if classes is not None:
        shares = pd.Series(y).value_counts(normalize=True).sort_index()
        balance = {str(classes[int(str(i))]): round(float(v), 6) for i, v in shares.items()}
    metadata: dict[str, Any] = {
        "name": config.name,
        "version": config.version,
        "task": task,
        "description": f"{task} of {config.data.target!r} with {spec.name}",
        "target": {"name": config.data.target, "classes": classes, "dtype": str(y_raw.dtype)},
        "features": [s.to_dict() for s in specs],
        "feature_names": [s.name for s in specs],
        "model": {
            "type": spec.name,
            "estimator": f"{estimator_cls.__module__}.{estimator_cls.__name__}",
            "params": {
                k: v
                for k, v in pipeline.named_steps["model"].get_params().items()
                if isinstance(v, str | int | float | bool | type(None))
            },
            "config_params": config.model.params,
        },
        "preprocessing": config.preprocessing.model_dump(mode="json"),
        "split": {
            **config.split.model_dump(mode="json"),
            "n_train": len(train_idx),
            "n_test": len(test_idx),
        },
        "data": {
            "source": config.data.source,
            "fingerprint": dataset.fingerprint,
            "n_rows": len(frame),
            "n_columns": frame.shape[1],
            "class_balance": balance,
        },
        "metrics": {"train": train_metrics, "test": test_metrics, "cv": cv_summary},
        "targets": gate.rows,
        "gate": gate.to_dict(),
        "interval": interval,
        "feature_importance": importance,
        "config_hash": config_hash(config),
        "config": config.model_dump(mode="json", by_alias=True),
        "git_commit": _git_commit(base_dir),
        "versions": versions,
        "requirements": requirements,
        "serving": config.serving.model_dump(mode="json"),
        "notes": notes,
        "mlflow": None,
    }

    output_dir = (
        config.output.dir if config.output.dir.is_absolute() else base_dir / config.output.dir
    )
    history = find_bundles(output_dir, name=config.name)

    def write_extras(tmp: Path, meta: dict[str, Any]) -> None:
        from mlservice.reports import render_plots, write_model_card

        progress.stage("plots and model card")
        plots_dir = tmp / "plots"
        plots_dir.mkdir()
        meta["plots"] = render_plots(
            task=task,
            y_true=y_test,
            y_pred=test_pred,
            proba=test_proba,
            classes=[str(c) for c in classes] if classes else None,
            importance=importance,
            out_dir=plots_dir,
        )
        write_model_card(tmp, meta, history=history)

    progress.stage("saving the bundle")
    bundle_path = save_bundle(
        output_dir=output_dir, pipeline=pipeline, metadata=metadata, write_extras=write_extras
    )
    dataset.verify_unchanged()
    promoted = False
    if gate.passed:
        promote_latest(bundle_path)
        promoted = True
    result = TrainResult(bundle_path, metadata, gate, promoted, warnings=notes)
    result.metadata = {**metadata, "bundle_id": bundle_path.name}

    if config.tracking.enabled:
        progress.stage("logging to MLflow")
        from mlservice.bundle import load_metadata
        from mlservice.training.tracking import log_training_run, prepare_tracking

        saved = load_metadata(bundle_path)
        try:
            prepare_tracking(config)
            tracking = log_training_run(
                config=config,
                bundle_path=bundle_path,
                metadata=saved,
                pipeline=pipeline,
                frame=frame,
                X_sample=X_train.head(100),
                promote=gate.passed,
            )
        except TrackingError as exc:
            result.tracking_error = str(exc)
            result.metadata = saved
            return result
        from mlservice.reports import render_model_card

        saved["mlflow"] = tracking
        card = render_model_card(saved, history=history)
        result.metadata = update_bundle_files(
            bundle_path, {"MODEL_CARD.md": card}, {"mlflow": tracking}
        )
        result.tracking = tracking
    return result
