"""Hyperparameter search (``mlservice tune``): Optuna over the config's search space.

Objective: the mean K-fold CV score of the task's primary metric on the TRAINING part only (the
data is prepared and split exactly as ``train`` does), so the test part stays unseen until
``--train-best`` trains the winner through the normal gate. Primary metrics (``PRIMARY_METRIC``):
classification ``f1`` (weighted; defined in every fold for binary and multiclass targets, unlike
``roc_auc``, which is undefined when a fold lacks a class), regression ``r2``, time_series ``mape``
(minimised), ranking ``ndcg_at_k``. Every trial uses the same ``cv.folds`` folds (also when
``cv.enabled`` is false: tuning has no other honest score).

Pruning: each fold reports the running mean; a ``MedianPruner`` stops a trial whose running mean
is worse than the median of earlier trials at the same fold (after 5 trials and 2 folds).

Defaults: the config's params are evaluated too, as trial 0 when they lie in the space
(``enqueue_trial``), else by one separate CV, so the result says whether tuning beat them.

Distributed: ``storage`` is an Optuna RDB URL (``sqlite:///tune.db``, ``postgresql://...``);
every process started with the same config joins one study and ``trials`` is the study's total:
a worker stops once finished plus in-flight trials reach it, and a trial that still finds
``trials`` trials ahead of it (a race between workers) is dropped as FAIL before it runs.

Tracking: one parent MLflow run per study (its id is kept in the study so later workers nest
under it), each trial a nested run with its params and CV score; the parent gets the best params
(tags ``best.<param>``, overwritable as workers finish) and the best and default scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from sklearn.base import clone

import mlservice.models.ranking  # noqa: F401  (registers the pointwise ranking baselines)
from mlservice.config import Config, SearchParam, parse_config
from mlservice.data import load_dataset
from mlservice.errors import ConfigError, DataError, TrackingError
from mlservice.models import build_estimator, check_params, get_spec
from mlservice.pipelines import build_pipeline
from mlservice.pipelines.timeseries import DeltaRegressor
from mlservice.training.evaluate import HIGHER_IS_BETTER, compute_metrics, make_cv, predict_outputs
from mlservice.training.frames import categorical_encodings
from mlservice.training.ranking import ranking_fit_params
from mlservice.training.timeseries import time_folds
from mlservice.training.train import _prepare_ranking, _prepare_tabular, _prepare_time_series

__all__ = [
    "PRIMARY_METRIC",
    "TrialReport",
    "TuneResult",
    "config_with_params",
    "default_study_name",
    "overlay_path",
    "search_space",
    "tune",
    "write_overlay",
]

log = logging.getLogger(__name__)

PRIMARY_METRIC: dict[str, str] = {
    "classification": "f1",
    "regression": "r2",
    "time_series": "mape",
    "ranking": "ndcg_at_k",
}
_PARENT_ATTR = "mlservice.mlflow_parent_run_id"
_BASELINE_ATTR = "mlservice.baseline"
_PARENT_WAIT_S = 60.0


@dataclass(frozen=True)
class TrialReport:
    """One finished trial of this process, for progress displays."""

    number: int
    state: str
    value: float | None
    finished: int  # complete + pruned trials in the whole study
    n_trials: int
    best_value: float | None


@dataclass
class TuneResult:
    """Outcome of a search: the best params, and whether they beat the config's defaults."""

    study_name: str
    storage: str | None  # password hidden
    metric: str
    direction: str
    n_trials: int
    best_params: dict[str, Any]
    model_params: dict[str, Any]  # config.model.params with best_params merged in
    best_score: float
    best_trial: int
    baseline_params: dict[str, Any]
    baseline_score: float | None
    baseline_source: str
    improved: bool
    counts: dict[str, int] = field(default_factory=dict)
    trials_run: int = 0  # by this process
    parent_run_id: str | None = None

    def summary(self) -> str:
        """One sentence: did tuning beat the defaults, with both scores."""
        best = f"{self.metric} {self.best_score:.4f} (trial {self.best_trial})"
        if self.baseline_score is None:
            return f"best CV {best}; the defaults' score is not known yet"
        base = f"{self.metric} {self.baseline_score:.4f} with the default params"
        if self.improved:
            return f"tuning improved the CV score: {best} vs {base}"
        return f"tuning did not improve on the defaults: best CV {best} vs {base}"


def search_space(config: Config) -> dict[str, SearchParam]:
    """``config.search``, or the estimator's default space when the config has none."""
    if config.search:
        return dict(config.search)
    spec = get_spec(config.model_type)
    return {name: SearchParam.model_validate(raw) for name, raw in spec.search_space.items()}


def default_study_name(config: Config) -> str:
    """Same config → same name, so workers started alike join one study."""
    space = {k: v.model_dump(mode="json", by_alias=True) for k, v in search_space(config).items()}
    key = json.dumps(
        [space, config.data.model_dump(mode="json"), config.cv.folds, config.split.seed],
        sort_keys=True,
        default=str,
    )
    return f"{config.name}-{config.model_type}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def config_with_params(config: Config, params: dict[str, Any]) -> Config:
    """A re-validated copy of ``config`` with ``params`` merged into ``model.params``."""
    raw = config.model_dump(mode="json", by_alias=True)
    raw["model"]["params"] = {**raw["model"]["params"], **params}
    return parse_config(raw, source=f"{config.name} with tuned params")


def overlay_path(config_path: Path) -> Path:
    """``configs/x.yaml`` → ``configs/x.best.yaml``."""
    return config_path.with_name(f"{config_path.stem}.best.yaml")


def write_overlay(result: TuneResult, config_path: Path, model_type: str) -> Path:
    """Write the best params as a config overlay next to the config; return its path."""
    path = overlay_path(config_path)
    sets = " ".join(f"--set model.params.{k}={v!r}" for k, v in result.best_params.items())
    header = (
        f"# Tuned by `mlservice tune` (study {result.study_name!r}): {result.summary()}.\n"
        f"# Merge into {config_path.name}, or: mlservice train {config_path.name} {sets}\n"
    )
    body = {"model": {"type": model_type, "params": result.model_params}}
    path.write_text(header + yaml.safe_dump(body, sort_keys=True), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- search space
def _suggest(trial: Any, name: str, param: SearchParam) -> Any:
    if param.categorical is not None:
        return trial.suggest_categorical(name, param.categorical)
    if param.int_ is not None:
        return trial.suggest_int(name, param.int_[0], param.int_[1], log=param.log)
    assert param.float_ is not None
    return trial.suggest_float(name, param.float_[0], param.float_[1], log=param.log)


def _candidates(param: SearchParam) -> list[Any]:
    if param.categorical is not None:
        return list(param.categorical)
    return list(param.int_ if param.int_ is not None else param.float_ or [])


def _check_space(config: Config, space: dict[str, SearchParam]) -> None:
    problems: list[tuple[str, str]] = []
    for name, param in space.items():
        for value in _candidates(param):
            if param.categorical is not None and not isinstance(
                value, str | int | float | bool | type(None)
            ):
                problems.append((f"search.{name}", f"choices must be scalars, got {value!r}"))
                break
            found = check_params(
                config.model_type, config.task, {**config.model.params, name: value}
            )
            if found:
                problems.extend((f"search.{name}", msg) for _path, msg in found)
                break
    if problems:
        raise ConfigError("invalid search space", list(dict.fromkeys(problems)))


def _in_space(value: Any, param: SearchParam) -> bool:
    if param.categorical is not None:
        return any(value == c and type(value) is type(c) for c in param.categorical)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if param.int_ is not None:
        return isinstance(value, int) and param.int_[0] <= value <= param.int_[1]
    assert param.float_ is not None
    return param.float_[0] <= value <= param.float_[1]


def _default_params(config: Config, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The values the untuned config would use for every searched param."""
    spec = get_spec(config.model_type)
    estimator = build_estimator(
        config.model_type, config.task, config.model.params, seed=config.split.seed
    )
    current = estimator.get_params()
    out = {}
    for name, param in space.items():
        value = current.get(spec.aliases.get(name, name))
        out[name] = float(value) if param.float_ is not None and _in_space(value, param) else value
    return out


# ---------------------------------------------------------------------------------- CV data
@dataclass
class _Setup:
    config: Config
    X: Any
    y: np.ndarray
    types: dict[str, str]
    splits: list[tuple[np.ndarray, np.ndarray]]
    n_classes: int
    reference: np.ndarray | None
    queries: np.ndarray | None
    metric: str

    def model(self, params: dict[str, Any]) -> Any:
        cfg = self.config
        merged = {**cfg.model.params, **params}
        estimator = build_estimator(cfg.model_type, cfg.task, merged, seed=cfg.split.seed)
        pipeline = build_pipeline(
            types=self.types,
            preprocessing=cfg.preprocessing,
            estimator=estimator,
            encodings=categorical_encodings(self.X, self.types, cfg.preprocessing),
            seed=cfg.split.seed,
        )
        return DeltaRegressor(pipeline) if cfg.task == "time_series" else pipeline

    def fold_score(self, model: Any, rows: tuple[np.ndarray, np.ndarray]) -> float | None:
        tr, va = rows
        extra = {}
        if self.queries is not None and self.config.task == "ranking":
            extra = ranking_fit_params(model, self.queries[tr])
        fitted = clone(model).fit(self.X.iloc[tr], self.y[tr], **extra)
        y_pred, proba = predict_outputs(fitted, self.X.iloc[va], self.config.task)
        metrics = compute_metrics(
            self.config.task,
            self.y[va],
            y_pred,
            proba,
            n_classes=self.n_classes,
            reference=None if self.reference is None else self.reference[va],
            groups=None if self.queries is None else self.queries[va],
            k=self.config.ranking.k,
        )
        return metrics.get(self.metric)


def _setup(config: Config, base_dir: Path) -> _Setup:
    dataset = load_dataset(config.data, base_dir=base_dir)
    prepare = {"time_series": _prepare_time_series, "ranking": _prepare_ranking}.get(
        config.task, _prepare_tabular
    )
    data = prepare(dataset.frame, config)
    rows = data.train_idx
    X, y = data.X.iloc[rows].reset_index(drop=True), data.y[rows]  # noqa: N806
    queries = None if data.queries is None else np.asarray(data.queries)[rows]
    folds = min(config.cv.folds, len(rows))
    if config.task == "ranking" and queries is not None:
        folds = min(folds, len(set(queries.tolist())))
    if folds < 2:
        raise DataError(f"{len(rows)} training rows are too few for {folds}-fold CV tuning")
    if config.task == "time_series" and data.times is not None:
        splits = time_folds(data.times.iloc[rows], folds, data.gap)
    else:
        cv = make_cv(
            config.task, folds, seed=config.split.seed, strategy=str(config.split.strategy)
        )
        splits = list(cv.split(X, y, queries))
    return _Setup(
        config=config,
        X=X,
        y=y,
        types=data.types,
        splits=[(np.asarray(tr), np.asarray(va)) for tr, va in splits],
        n_classes=len(data.classes or []),
        reference=None if data.reference is None else np.asarray(data.reference)[rows],
        queries=queries if config.task != "time_series" else None,
        metric=PRIMARY_METRIC[config.task],
    )


def _cross_validate(
    setup: _Setup, params: dict[str, Any], report: Callable[[int, float, float], None]
) -> tuple[float, float]:
    """Mean and std of the primary metric; ``report(fold, value, running_mean)`` per fold."""
    model = setup.model(params)
    values: list[float] = []
    for step, rows in enumerate(setup.splits):
        value = setup.fold_score(model, rows)
        if value is None:
            continue
        values.append(value)
        report(step, value, float(np.mean(values)))
    if not values:
        raise ValueError(f"{setup.metric} could not be computed in any CV fold")
    return float(np.mean(values)), float(np.std(values))


# ------------------------------------------------------------------------------- tracking
class _Tracker:
    """MLflow runs of one search; every method is a no-op when tracking is disabled."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.enabled = config.tracking.enabled
        self.parent_id: str | None = None
        self.experiment_id: str | None = None

    def _fail(self, exc: Exception) -> TrackingError:
        return TrackingError(f"logging to MLflow at {self.config.tracking.uri!r} failed: {exc}")

    def open_parent(self, study: Any, *, created: bool, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        from mlservice.training.tracking import _experiment_id, prepare_tracking

        prepare_tracking(self.config)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        if not created:  # the creator of the study opens the parent run; wait for its id
            from optuna.trial import TrialState

            started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            deadline = time.monotonic() + _PARENT_WAIT_S
            while time.monotonic() < deadline and self.parent_id is None:
                self.parent_id = study.user_attrs.get(_PARENT_ATTR)
                if self.parent_id is None:
                    if study.get_trials(deepcopy=False, states=started):
                        break  # trials ran without a parent: the creator tracked nothing
                    time.sleep(0.5)
            if self.parent_id is None:
                log.warning("study %r records no parent MLflow run; opening one for this worker",
                            study.study_name)
        try:
            self.experiment_id = _experiment_id(self.config)
            if self.parent_id is not None:
                mlflow.start_run(run_id=self.parent_id)
                return
            run = mlflow.start_run(
                experiment_id=self.experiment_id, run_name=f"tune-{study.study_name}"
            )
            self.parent_id = run.info.run_id
            mlflow.set_tags({"mlservice.kind": "tune", "optuna.study": study.study_name})
            mlflow.log_params({k: str(v)[:6000] for k, v in info.items()})
        except Exception as exc:  # MLflow raises many unrelated types for one failure
            with suppress(Exception):
                mlflow.end_run(status="FAILED")
            raise self._fail(exc) from exc
        if created:
            study.set_user_attr(_PARENT_ATTR, self.parent_id)

    @contextmanager
    def trial_run(self, name: str, params: dict[str, Any], tags: dict[str, Any]) -> Iterator[Any]:
        """A nested run; yields ``log(metrics, step=None)``; status follows the outcome."""
        if not self.enabled:
            yield lambda metrics, step=None: None
            return
        import mlflow
        from optuna import TrialPruned

        try:
            # nested runs land in the Default experiment unless told the parent's
            mlflow.start_run(experiment_id=self.experiment_id, run_name=name, nested=True)
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.set_tags({k: str(v) for k, v in tags.items()})
        except Exception as exc:
            raise self._fail(exc) from exc
        status = "FINISHED"
        try:
            yield lambda metrics, step=None: mlflow.log_metrics(metrics, step=step)
        except TrialPruned:
            status = "KILLED"
            mlflow.set_tag("optuna.state", "PRUNED")
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            with suppress(Exception):
                mlflow.end_run(status=status)

    def close_parent(self, result: TuneResult) -> None:
        if not self.enabled or self.parent_id is None:
            return
        import mlflow

        try:
            # tags, not params: each worker overwrites them with the study's best when it ends
            mlflow.set_tags({f"best.{k}": str(v) for k, v in result.best_params.items()})
            mlflow.set_tags(
                {"improved": str(result.improved).lower(), "best_trial": str(result.best_trial)}
            )
            metrics = {f"best_cv_mean_{result.metric}": result.best_score}
            if result.baseline_score is not None:
                metrics[f"baseline_cv_mean_{result.metric}"] = result.baseline_score
            mlflow.log_metrics(metrics)
        except Exception as exc:
            raise self._fail(exc) from exc
        finally:
            with suppress(Exception):
                mlflow.end_run()


# ---------------------------------------------------------------------------------- study
class _Surplus(Exception):  # noqa: N818 - a signal to Optuna's catch=, not an error
    """The study already has its trials finished or running ahead of this one."""


def _storage(url: str | None) -> Any:
    if url is None:
        return None
    import optuna
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    last: Exception | None = None
    for attempt in range(5):  # workers starting together race to create the schema
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120
                )
        except ArgumentError as exc:
            raise ConfigError("invalid --storage", [("--storage", f"{exc}")]) from exc
        except ImportError as exc:
            raise ConfigError(
                "invalid --storage",
                [("--storage", f"{exc}; for postgresql:// pip install psycopg2-binary")],
            ) from exc
        except SQLAlchemyError as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    raise TrackingError(f"Optuna storage {_redact(url)!r} is unusable: {last}") from last


def _redact(url: str | None) -> str | None:
    if url is None:
        return None
    from sqlalchemy.engine import make_url

    with suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return "<storage url>"


def _open_study(
    name: str, storage: Any, direction: Literal["maximize", "minimize"], seed: int | None
) -> tuple[Any, bool]:
    """Load or create the study; True when this process created it (the race has one winner)."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if storage is not None:
        with suppress(KeyError):
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
            if study.direction.name.lower() != direction:
                raise ConfigError(
                    f"study {name!r} in the storage maximises/minimises another metric; "
                    "pass a new --study name"
                )
            return study, False
    try:
        return optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction=direction
        ), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner
        ), False


def tune(
    config: Config,
    *,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    progress: Callable[[TrialReport], None] | None = None,
    base_dir: Path | None = None,
) -> TuneResult:
    """Search ``config``'s space with Optuna; ``trials`` is the study's total across workers."""
    import optuna
    from optuna.trial import TrialState

    if trials < 1:
        raise ConfigError("invalid --trials", [("--trials", f"must be >= 1, got {trials!r}")])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(config)
    if not space:
        raise ConfigError(
            "nothing to tune",
            [("search", f"empty, and {config.model_type!r} has no default search space")],
        )
    _check_space(config, space)
    metric = PRIMARY_METRIC[config.task]
    direction: Literal["maximize", "minimize"] = (
        "maximize" if metric in HIGHER_IS_BETTER else "minimize"
    )
    setup = _setup(config, (base_dir or Path.cwd()).resolve())
    name = study_name or default_study_name(config)
    study, created = _open_study(
        name, _storage(storage), direction, config.split.seed if storage is None else None
    )
    defaults = _default_params(config, space)
    in_space = all(_in_space(defaults[k], p) for k, p in space.items())
    if in_space and created:
        study.enqueue_trial(defaults, user_attrs={"baseline": True}, skip_if_exists=True)
    tracker = _Tracker(config)
    space_text = {
        f"search.{k}": json.dumps(p.model_dump(by_alias=True, exclude_none=True))
        for k, p in space.items()
    }
    info = {
        "model.type": config.model_type,
        "metric": metric,
        "n_trials": trials,
        "storage": _redact(storage) or "in-memory",
        **space_text,
    }
    tracker.open_parent(study, created=created, info=info)
    claimed = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal ran
        ahead = [
            t for t in study.get_trials(deepcopy=False, states=claimed) if t.number < trial.number
        ]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"the study already has {trials} trials ahead of trial {trial.number}")
        ran += 1
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("pid", os.getpid())
        params = {k: _suggest(trial, k, p) for k, p in space.items()}
        baseline = bool(trial.user_attrs.get("baseline"))
        tags = {
            "mlservice.kind": "tune-trial",
            "optuna.study": name,
            "optuna.trial_number": trial.number,
            "baseline": str(baseline).lower(),
        }
        with tracker.trial_run(f"trial-{trial.number}", params, tags) as log_metrics:

            def report(step: int, value: float, running: float) -> None:
                log_metrics({f"cv_{metric}": value}, step=step)
                trial.report(running, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"fold {step}: running {metric} {running:.4f}")

            try:
                mean, std = _cross_validate(setup, params, report)
            except ValueError as exc:
                trial.set_user_attr("error", str(exc)[:500])
                raise
            log_metrics({f"cv_mean_{metric}": mean, f"cv_std_{metric}": std})
        trial.set_user_attr("cv_std", std)
        return mean

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        # MaxTrialsCallback over finished AND in-flight trials: counting only finished ones
        # lets every worker start one more trial while the others' last trials still run.
        optuna.study.MaxTrialsCallback(trials, states=claimed)(study, frozen)
        if progress is not None and not frozen.user_attrs.get("surplus"):
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            values = [t.value for t in done if t.value is not None]
            best = None if not values else (max if direction == "maximize" else min)(values)
            progress(
                TrialReport(frozen.number, frozen.state.name, frozen.value, len(done), trials, best)
            )

    try:
        while len(study.get_trials(deepcopy=False, states=claimed)) < trials:
            try:
                study.optimize(
                    objective,
                    n_trials=trials,
                    timeout=timeout,
                    catch=(_Surplus, ValueError),
                    callbacks=[after_trial],
                )
                break
            except ValueError as exc:
                # Two workers on one SQLite storage can both pop the same enqueued trial (the
                # read of its WAITING state is not locked there); the one that finishes second
                # cannot record it. The other worker has: go on with the next trials.
                if "Cannot tell a COMPLETE trial" not in str(exc):
                    raise
                log.info("trial already recorded by another worker; continuing: %s", exc)
        result = _result(
            study,
            config,
            space,
            defaults,
            in_space,
            setup,
            tracker,
            trials=trials,
            storage=storage,
            ran=ran,
        )
    except BaseException:
        if tracker.enabled and tracker.parent_id is not None:
            import mlflow

            with suppress(Exception):
                mlflow.end_run(status="FAILED")
        raise
    tracker.close_parent(result)
    return result


def _baseline(
    study: Any, setup: _Setup, defaults: dict[str, Any], in_space: bool, tracker: _Tracker
) -> tuple[float | None, str]:
    from optuna.trial import TrialState

    if in_space:
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("baseline"):
                return float(t.value), f"trial {t.number} (the defaults, enqueued)"
    cached = study.user_attrs.get(_BASELINE_ATTR)
    if cached is not None:
        return float(cached), "separate CV of the defaults"
    tags = {"mlservice.kind": "tune-baseline", "baseline": "true"}
    with tracker.trial_run("baseline-defaults", defaults, tags) as log_metrics:
        mean, std = _cross_validate(
            setup,
            {},
            lambda step, value, _running: log_metrics({f"cv_{setup.metric}": value}, step=step),
        )
        log_metrics({f"cv_mean_{setup.metric}": mean, f"cv_std_{setup.metric}": std})
    study.set_user_attr(_BASELINE_ATTR, mean)
    return mean, "separate CV of the defaults"


def _result(
    study: Any,
    config: Config,
    space: dict[str, SearchParam],
    defaults: dict[str, Any],
    in_space: bool,
    setup: _Setup,
    tracker: _Tracker,
    *,
    trials: int,
    storage: str | None,
    ran: int,
) -> TuneResult:
    from optuna.trial import TrialState

    counts = {
        state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        why = f"; first error: {errors[0]}" if errors else ""
        raise DataError(f"no trial of study {study.study_name!r} completed{why}")
    best = study.best_trial
    baseline, source = _baseline(study, setup, defaults, in_space, tracker)
    maximize = study.direction.name == "MAXIMIZE"
    improved = (
        baseline is not None
        and not math.isclose(best.value, baseline)
        and (best.value > baseline if maximize else best.value < baseline)
    )
    best_params = {k: best.params[k] for k in space if k in best.params}
    return TuneResult(
        study_name=study.study_name,
        storage=_redact(storage),
        metric=PRIMARY_METRIC[config.task],
        direction=study.direction.name.lower(),
        n_trials=trials,
        best_params=best_params,
        model_params={**config.model.params, **best_params},
        best_score=float(best.value),
        best_trial=best.number,
        baseline_params=defaults,
        baseline_score=baseline,
        baseline_source=source,
        improved=bool(improved),
        counts=counts,
        trials_run=ran,
        parent_run_id=tracker.parent_id,
    )
