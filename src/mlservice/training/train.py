"""The training cycle: load, split, one Pipeline, CV, metrics, gate, bundle, MLflow."""

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

import mlservice.models.ranking  # noqa: F401  (registers the pointwise ranking baselines)
from mlservice.bundle import find_bundles, promote_latest, save_bundle, update_bundle_files
from mlservice.categories import CANONICAL
from mlservice.config import Config, config_hash
from mlservice.data import build_feature_specs, load_dataset, split_indices
from mlservice.data.reading import numeric_text_hint
from mlservice.errors import DataError, TrackingError
from mlservice.models import build_estimator, get_spec
from mlservice.monitoring.profile import (
    ReferenceProfile,
    build_reference_profile,
    save_reference_profile,
)
from mlservice.pipelines import build_pipeline, effective_preprocessing
from mlservice.pipelines.timeseries import DeltaRegressor
from mlservice.training.evaluate import (
    GateResult,
    compute_metrics,
    cross_validate,
    evaluate_gate,
    naive_metrics,
    predict_outputs,
)
from mlservice.training.frames import categorical_encodings, coerce_features, feature_columns
from mlservice.training.ranking import (
    check_relevance,
    ranking_approach,
    ranking_fit_params,
    ranking_scorer,
    sort_by_query,
)
from mlservice.training.timeseries import (
    NAIVE_METHOD,
    naive_comparison,
    prepare_series,
    purge_before_test,
    with_groups,
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
    features = feature_columns(frame, config)
    if not features:
        raise DataError("no feature columns left after removing target and data.drop")
    missing_target = frame[data.target].isna()
    if missing_target.any():
        notes.append(f"dropped {int(missing_target.sum())} rows with a missing target")
        frame = frame.loc[~missing_target]
    frame = frame.reset_index(drop=True)
    X, types = coerce_features(frame[features], data.column_types)  # noqa: N806
    target = frame[data.target]
    if config.task in ("classification", "ranking"):
        target = _whole_numbers_as_int(target, notes)
    return X, target, types, notes


#: Test rows explained for the card's summary (TreeSHAP costs ~0.2-0.5 ms per row).
_EXPLAIN_ROWS = 2_000


def _whole_numbers_as_int(target: pd.Series, notes: list[str]) -> pd.Series:
    """A 0/1 label column with gaps is read as float (0.0/1.0); once the gaps are dropped, the
    labels are the integers the user's data has, not ``"1.0"`` (a CSV cannot tell 1 from 1.0
    apart, so whole-number float labels are always integers)."""
    if not pd.api.types.is_float_dtype(target) or target.empty:
        return target
    values = target.to_numpy(dtype="float64")
    if not (np.isfinite(values).all() and (values == np.round(values)).all()):
        return target
    notes.append("the target holds whole numbers only: its labels are kept as integers")
    return target.astype("int64")


@dataclass
class _TaskData:
    """The model-ready rows of one task, already split (positional indices into ``X``)."""

    X: pd.DataFrame
    y: np.ndarray
    target_dtype: str
    classes: list[Any] | None
    types: dict[str, str]
    notes: list[str]
    train_idx: np.ndarray
    test_idx: np.ndarray
    reference: np.ndarray | None = None  # time_series: y at each row's forecast origin
    times: pd.Series | None = None  # time_series: timestamp of each row
    queries: np.ndarray | None = None  # ranking: query id of each row
    gap: int = 0  # time_series: time steps left out between CV fit and validation rows
    meta: dict[str, Any] = field(default_factory=dict)
    split_meta: dict[str, Any] = field(default_factory=dict)


def _prepare_tabular(frame: pd.DataFrame, config: Config) -> _TaskData:
    # drop unlabeled rows from the frame itself so time/group columns stay aligned with X
    missing = frame[config.data.target].isna()
    frame = frame.loc[~missing].reset_index(drop=True)
    X, y_raw, types, notes = prepare_frame(frame, config)  # noqa: N806
    if missing.any():
        notes.insert(0, f"dropped {int(missing.sum())} rows with a missing target")
    y, classes = _encode_target(y_raw, config.task, _csv_read_options(config))
    data = config.data
    train_idx, test_idx = split_indices(
        len(X),
        strategy=str(config.split.strategy),
        test_size=config.split.test_size,
        seed=config.split.seed,
        y=y_raw.reset_index(drop=True) if config.task == "classification" else None,
        time=frame[data.time_column] if data.time_column else None,
        groups=frame[data.group_column] if data.group_column else None,
    )
    queries = None
    if data.group_column:
        queries = frame[data.group_column].to_numpy(dtype=object)
    return _TaskData(
        X, y, str(y_raw.dtype), classes, types, notes, train_idx, test_idx, queries=queries
    )


def _prepare_time_series(frame: pd.DataFrame, config: Config) -> _TaskData:
    series = prepare_series(frame, config)
    spec = series.spec
    train_idx, test_idx = split_indices(
        len(series.X),
        strategy="time",
        test_size=config.split.test_size,
        seed=config.split.seed,
        time=series.times,
    )
    train_idx, purged = purge_before_test(train_idx, test_idx, series.times, spec.horizon)
    notes = list(series.notes)
    if purged:
        notes.append(
            f"left {purged} training rows of the last {spec.horizon - 1} time steps before the "
            "test part out of training (their targets lie after the first test forecast origins)"
        )
    if len(train_idx) < 2:
        raise DataError("too few training rows remain after the time split; use more data")
    spec = with_groups(spec, None if series.series is None else series.series.iloc[train_idx])
    n_series = 1 if series.series is None else int(series.series.nunique())
    meta = {
        **spec.to_dict(),
        "n_series": n_series,
        "forecast_method": (
            f"recursive: each step's features are rebuilt from the history plus the forecasts "
            f"of earlier steps; the model itself is direct at horizon {spec.horizon}, so steps "
            f"1..{spec.horizon} use only real history"
        ),
        "target_transform": "DeltaRegressor: the model learns y - lag_1 and adds lag_1 back",
        "naive": NAIVE_METHOD,
    }
    return _TaskData(
        series.X,
        series.y,
        "float64",
        None,
        series.types,
        notes,
        train_idx,
        test_idx,
        reference=series.reference,
        times=series.times,
        gap=spec.horizon - 1,
        meta={"time_series": meta},
        split_meta={
            "purged_rows": purged,
            "test_start": str(series.times.iloc[test_idx].min()),
            "train_end": str(series.times.iloc[train_idx].max()),
        },
    )


def _prepare_ranking(frame: pd.DataFrame, config: Config) -> _TaskData:
    frame = sort_by_query(frame, config)
    data = _prepare_tabular(frame, config)
    check_relevance(data.y, config.data.target)
    assert data.queries is not None  # sort_by_query insists on a group column
    train_q = pd.unique(data.queries[data.train_idx])
    test_q = pd.unique(data.queries[data.test_idx])
    grades = sorted({int(v) for v in np.unique(data.y)})
    data.meta = {
        "ranking": {
            "group_column": config.data.group_column,
            "k": config.ranking.k,
            "relevance": {"grades": grades, "binary": grades == [0, 1] or grades == [1]},
            "candidates_per_query": {
                "median": float(pd.Series(data.queries).value_counts().median()),
                "max": int(pd.Series(data.queries).value_counts().max()),
            },
        }
    }
    data.split_meta = {"n_train_queries": len(train_q), "n_test_queries": len(test_q)}
    return data


def _csv_read_options(config: Config) -> dict[str, Any] | None:
    """The configured CSV reader options (None for Parquet and builtin sources)."""
    if Path(config.data.source).suffix.lower() != ".csv":
        return None
    return config.data.read.model_dump() if config.data.read else {}


def _encode_target(
    y: pd.Series, task: str, read: dict[str, Any] | None = None
) -> tuple[np.ndarray, list[Any] | None]:
    if task == "classification":
        classes = sorted(y.unique().tolist(), key=lambda v: (str(type(v)), v))
        if len(classes) < 2:
            raise DataError(f"target {y.name!r} has one class {classes!r}; need at least two")
        codes = pd.Categorical(y, categories=classes).codes.astype(np.int64)
        return codes, [c.item() if isinstance(c, np.generic) else c for c in classes]
    values = pd.to_numeric(y, errors="coerce")
    if values.isna().any():
        bad = y[values.isna()].iloc[0]
        hint = numeric_text_hint(y, read) if read is not None else None
        raise DataError(
            f"target {y.name!r} must be numeric for task {task!r}, got {bad!r}"
            + (f"; {hint}" if hint else "")
        )
    return values.to_numpy(dtype=float), None


def _importance(
    pipeline: Any,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    seed: int,
    *,
    queries: np.ndarray | None = None,
    k: int = 10,
) -> list[dict[str, Any]]:
    scoring = None
    if queries is not None:
        # whole queries only: the metric is computed per query
        keep = np.cumsum(pd.Series(queries).ne(pd.Series(queries).shift()).to_numpy())
        rows = np.flatnonzero(keep <= max(int(keep[min(len(keep), _IMPORTANCE_MAX_ROWS) - 1]), 1))
        X, y, queries = X.iloc[rows], y[rows], queries[rows]  # noqa: N806
        scoring = ranking_scorer(queries, k)
    elif len(X) > _IMPORTANCE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(len(X), _IMPORTANCE_MAX_ROWS, replace=False)
        X, y = X.iloc[rows], y[rows]  # noqa: N806
    result = permutation_importance(
        pipeline, X, y, scoring=scoring, n_repeats=5, random_state=seed, n_jobs=1
    )
    items = [
        {"feature": str(name), "importance": float(mean), "std": float(std)}
        for name, mean, std in zip(
            X.columns, result.importances_mean, result.importances_std, strict=True
        )
    ]
    return sorted(items, key=lambda item: item["importance"], reverse=True)


@dataclass
class _Explanations:
    """The explainer of the fitted pipeline (``POST /api/v1/explain``), for the bundle."""

    meta: dict[str, Any]
    contributions: Any = None

    def plot(self, X_test: pd.DataFrame, plots_dir: Path) -> list[str]:  # noqa: N803
        """The card's beeswarm plot, when the model could be explained."""
        if self.contributions is None:
            return []
        from mlservice.reports.explain_plots import beeswarm_plot

        beeswarm_plot(self.contributions, X_test, plots_dir / "explanations.png")
        return ["plots/explanations.png"]


def _explanations(
    fitted: Any,
    X_train: pd.DataFrame,  # noqa: N803
    X_test: pd.DataFrame,  # noqa: N803
    *,
    task: str,
    classes: list[Any] | None,
) -> _Explanations:
    """Build the explainer the API will build at load (linear models: it stores the training
    mean) and summarise it on the test part; a model that cannot be explained says why."""
    from mlservice.inference.explain import ExplanationUnavailable, build_explainer
    from mlservice.reports.explain_plots import global_summary

    if task not in ("classification", "regression"):
        return _Explanations({"unavailable": f"{task} models are not explained"})
    try:
        explainer = build_explainer(fitted, X_train, class_labels=classes)
        contributions = explainer.explain_batch(X_test.iloc[:_EXPLAIN_ROWS])
    except ExplanationUnavailable as exc:
        return _Explanations({"unavailable": exc.reason})
    meta = {
        "method": explainer.method,
        "output": explainer.output,
        "state": explainer.state(),
        "summary": global_summary(contributions),
    }
    return _Explanations(meta, contributions)


def _reference_profile(
    config: Config,
    X_train: pd.DataFrame,  # noqa: N803
    types: dict[str, str],
    **outputs: Any,
) -> ReferenceProfile | None:
    """What served traffic is compared with (``mlservice.monitoring``): the training part's
    features and the test part's predictions. Time series and ranking models are not
    monitored (their rows are lag features and query groups)."""
    if not config.monitoring.enabled or config.task not in ("classification", "regression"):
        return None
    return build_reference_profile(X_train, types, task=config.task, **outputs)


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
    frame = dataset.frame

    progress.stage("splitting")
    prepare = {"time_series": _prepare_time_series, "ranking": _prepare_ranking}.get(
        task, _prepare_tabular
    )
    data = prepare(frame, config)
    X, y, classes, types, notes = data.X, data.y, data.classes, data.types, data.notes  # noqa: N806
    notes[:0] = dataset.notes  # how the file was read (detected separator, encoding fallback)
    n_classes = len(classes) if classes else 0
    train_idx, test_idx = data.train_idx, data.test_idx
    X_train, X_test = X.iloc[train_idx], X.iloc[test_idx]  # noqa: N806
    y_train, y_test = y[train_idx], y[test_idx]
    specs = build_feature_specs(X_train, types)
    k = config.ranking.k

    encodings = categorical_encodings(X_train, types, config.preprocessing)
    for feature in specs:
        if feature.type in ("categorical", "boolean"):
            feature.extra["canonical"] = True  # sent numbers mean the category of their digits
            feature.extra["encoding"] = encodings[feature.name]
            if encodings[feature.name] == "target":  # unseen levels get the target's mean
                feature.extra["open"] = True
    estimator = build_estimator(config.model_type, task, config.model.params, seed=seed)
    pipeline = build_pipeline(
        types=types,
        preprocessing=config.preprocessing,
        estimator=estimator,
        encodings=encodings,
        seed=seed,
    )
    # A time series model predicts the change from the last known value (see DeltaRegressor).
    model: Any = DeltaRegressor(pipeline) if task == "time_series" else pipeline
    queries = data.queries if task == "ranking" else None

    def fit_params(rows: np.ndarray) -> dict[str, Any]:
        return {} if queries is None else ranking_fit_params(pipeline, queries[rows])

    def metric_args(rows: np.ndarray) -> dict[str, Any]:
        return {
            "reference": None if data.reference is None else data.reference[rows],
            "groups": None if queries is None else queries[rows],
            "k": k,
        }

    cv_summary: dict[str, Any] = {}
    interval = None
    if config.cv.enabled:
        folds = min(config.cv.folds, len(X_train))
        if queries is not None:
            folds = min(folds, len(pd.unique(queries[train_idx])))
        progress.stage(f"cross-validation ({folds} folds)", total=folds)
        # group ids of the kept rows (for GroupKFold); time series fold by time instead
        groups = None if data.queries is None else data.queries[train_idx]
        cv = cross_validate(
            model,
            X_train,
            y_train,
            task=task,
            folds=folds,
            seed=seed,
            strategy=str(config.split.strategy),
            n_classes=n_classes,
            groups=groups,
            on_fold=lambda _i: progress.advance(),
            reference=None if data.reference is None else data.reference[train_idx],
            times=None if data.times is None else data.times.iloc[train_idx],
            gap=data.gap,
            k=k,
            fit_params=None if queries is None else lambda rows: fit_params(train_idx[rows]),
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
    model.fit(X_train, y_train, **fit_params(train_idx))
    progress.stage("evaluating")
    train_pred, train_proba = predict_outputs(model, X_train, task)
    test_pred, test_proba = predict_outputs(model, X_test, task)
    train_metrics = compute_metrics(
        task, y_train, train_pred, train_proba, n_classes=n_classes, **metric_args(train_idx)
    )
    test_metrics = compute_metrics(
        task, y_test, test_pred, test_proba, n_classes=n_classes, **metric_args(test_idx)
    )
    gate = evaluate_gate(config.parsed_targets(), test_metrics)
    if data.reference is not None:
        # after the gate: targets are about the model; naive_* sit beside it (run + card)
        test_metrics.update(naive_metrics(y_test, data.reference[test_idx]))
        data.meta["naive_comparison"] = naive_comparison(test_metrics)
    progress.stage("feature importance")
    importance = _importance(
        model, X_test, y_test, seed, queries=None if queries is None else queries[test_idx], k=k
    )

    spec = get_spec(config.model_type)
    fitted = model.regressor_ if isinstance(model, DeltaRegressor) else model
    final = fitted.named_steps["model"]
    estimator_cls = type(final)
    module_root = estimator_cls.__module__.split(".")[0]
    requirements = [module_root] if module_root in ("lightgbm", "xgboost") else []
    if config.preprocessing.text.embed == "minilm" and "text" in types.values():
        requirements.append("sentence_transformers")  # a serving install without [text] refuses
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
    description = f"{task} of {config.data.target!r} with {spec.name}"
    if task == "ranking":
        description += f", {ranking_approach(final)}"
        data.meta["ranking"]["approach"] = ranking_approach(final)
    metadata: dict[str, Any] = {
        "name": config.name,
        "version": config.version,
        "task": task,
        "description": config.description or description,
        "target": {"name": config.data.target, "classes": classes, "dtype": data.target_dtype},
        "features": [s.to_dict() for s in specs],
        "feature_names": [s.name for s in specs],
        "model": {
            "type": spec.name,
            "estimator": f"{estimator_cls.__module__}.{estimator_cls.__name__}",
            "params": {
                k: v
                for k, v in final.get_params().items()
                if isinstance(v, str | int | float | bool | type(None))
            },
            "config_params": config.model.params,
        },
        "monitoring": config.monitoring.model_dump(mode="json"),
        "preprocessing": {
            **effective_preprocessing(config.preprocessing, final).model_dump(mode="json"),
            "categories": CANONICAL,
            "encodings": encodings,
        },
        "split": {
            **config.split.model_dump(mode="json"),
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            **data.split_meta,
        },
        "data": {
            "source": config.data.source,
            "fingerprint": dataset.fingerprint,
            "read": dataset.read,
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
        **data.meta,
        "notes": notes,
        "mlflow": None,
    }

    output_dir = (
        config.output.dir if config.output.dir.is_absolute() else base_dir / config.output.dir
    )
    history = find_bundles(output_dir, name=config.name)

    explanations = _explanations(fitted, X_train, X_test, task=task, classes=classes)
    metadata["explain"] = explanations.meta

    profile = _reference_profile(
        config, X_train, types, test_pred=test_pred, y_test=y_test, test_proba=test_proba,
        classes=classes,
    )

    def write_extras(tmp: Path, meta: dict[str, Any]) -> None:
        from mlservice.reports import render_plots, write_model_card
        from mlservice.training.onnx_export import export_onnx

        if profile is not None:  # hashed with the other files by save_bundle
            save_reference_profile(profile, tmp)

        progress.stage("ONNX export")
        # Never raises: a pipeline that does not convert or verify is served by scikit-learn.
        export_onnx(model, X_test, task=task, out_dir=tmp, metadata=meta)
        progress.stage("plots and model card")
        plots_dir = tmp / "plots"
        plots_dir.mkdir()
        plots = render_plots(
            task=task,
            y_true=y_test,
            y_pred=test_pred,
            proba=test_proba,
            classes=[str(c) for c in classes] if classes else None,
            importance=importance,
            out_dir=plots_dir,
        )
        meta["plots"] = [*plots, *explanations.plot(X_test.iloc[:_EXPLAIN_ROWS], plots_dir)]
        write_model_card(tmp, meta, history=history)

    progress.stage("saving the bundle")
    bundle_path = save_bundle(
        output_dir=output_dir, pipeline=model, metadata=metadata, write_extras=write_extras
    )
    dataset.verify_unchanged()
    result = TrainResult(bundle_path, metadata, gate, promoted=False, warnings=notes)
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
                pipeline=model,
                frame=frame,
                X_sample=X_train.head(100),
                promote=gate.passed,
            )
        except TrackingError as exc:
            # An untracked model is not promoted: the bundle stays as a complete candidate and
            # model_latest keeps pointing at the last tracked champion.
            result.tracking_error = f"{exc} model_latest was not moved."
            result.metadata = saved
            return result
        from mlservice.reports import render_model_card

        saved["mlflow"] = tracking
        card = render_model_card(saved, history=history)
        # Rewritten BEFORE promotion, so a server never loads a bundle that is being edited.
        result.metadata = update_bundle_files(
            bundle_path, {"MODEL_CARD.md": card}, {"mlflow": tracking}
        )
        result.tracking = tracking
    if gate.passed:
        promote_latest(bundle_path)
        result.promoted = True
    return result
