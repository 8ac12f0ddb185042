"""Per-prediction explanations: additive contributions in the request's own feature names.

Per row, ``base_value + sum(contributions) == value``, the explained output: the predicted value
(regression, ``raw``), the margin of the predicted class (``log_odds`` for binary logistic
models, whose classes get ``-margin`` and ``+margin``; ``raw`` for softmax or hinge scores) or,
for random forests, its probability (``probability``). All exact up to rounding: linear models
as ``coef × (x − mean)`` against the mean of the transformed training rows (``state()``, for
``metadata.json``); LightGBM and XGBoost by their own TreeSHAP; random forests, extra trees and
HistGradientBoosting by shap's compiled TreeSHAP over their trees given as arrays, with each
node's missing-value direction, so a NaN reaching the trees is routed as the model routes it.

Transformed columns (one-hot, a target encoder's per-class columns, a datetime's parts) are
summed back to their input column, found from the ``ColumnTransformer``'s column lists and each
step's output width, never from names. Nothing is pickled: the explainer is rebuilt from the
pipeline at load. LightGBM, XGBoost and shap's kernel are loaded only when needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, TargetEncoder

from mlservice.errors import MlserviceError
from mlservice.pipelines.features import DatetimeFeatures

__all__ = ["OUTPUTS", "STATE_VERSION", "Contributions", "Explainer", "ExplanationUnavailable",
           "build_explainer", "source_columns"]  # fmt: skip

#: What ``value`` (``base_value`` + contributions) is, per explanation.
OUTPUTS = ("raw", "log_odds", "probability")
#: Version of ``Explainer.state()``.
STATE_VERSION = 1
#: transformed ``(rows, cols)`` -> contributions ``(rows, cols, outputs)``, base ``(rows, outputs)``
_Engine = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: Binary classifiers whose margin is a log-odds, with the objectives (or losses) that make it.
_LOGISTIC: dict[str, tuple[str, ...]] = {
    "LogisticRegression": ("",), "LogisticRegressionCV": ("",), "SGDClassifier": ("log_loss",),
    "HistGradientBoostingClassifier": ("log_loss", ""), "XGBClassifier": ("binary:logistic", ""),
    "LGBMClassifier": ("binary", "cross_entropy", ""),
}  # fmt: skip


class ExplanationUnavailable(MlserviceError):  # noqa: N818 (the name the API answers 501 with)
    """This model cannot be explained; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"explanations are not available for this model: {reason}")


@dataclass(frozen=True)
class Contributions:
    """Explanations of a batch: ``base[i, k] + values[i, :, k].sum() == outputs[i, k]`` for
    row ``i`` and output ``k`` (a class of a classifier, the one output of a regressor)."""

    features: tuple[str, ...]
    output: str  # one of OUTPUTS
    values: np.ndarray  # (rows, features, outputs)
    base: np.ndarray  # (rows, outputs)
    classes: tuple[Any, ...] | None  # the label of each output; None for regression
    predictions: list[Any]  # the model's prediction per row (a label or a value)
    explained: np.ndarray  # (rows,) the output explained per row: the predicted class

    @property
    def outputs(self) -> np.ndarray:
        """The explained outputs ``(rows, outputs)``."""
        return np.asarray(self.base + self.values.sum(axis=1))

    def selected(self) -> np.ndarray:
        """The contributions to each row's explained output ``(rows, features)``."""
        return np.asarray(self.values[np.arange(len(self.explained)), :, self.explained])

    def records(self, *, all_classes: bool = False) -> list[dict[str, Any]]:
        """One JSON-ready dict per row; ``all_classes`` adds every class's explanation."""
        outputs, base = self.outputs.tolist(), self.base.tolist()
        values = self.values.transpose(0, 2, 1).tolist()  # (rows, outputs, features)

        def one(i: int, k: int) -> dict[str, Any]:
            named = dict(zip(self.features, values[i][k], strict=True))
            return {"base_value": base[i][k], "value": outputs[i][k], "contributions": named}

        results = []
        for i, k in enumerate(self.explained.tolist()):
            record = {"prediction": self.predictions[i], "output": self.output, **one(i, k)}
            if self.classes is not None:
                record["class"] = self.classes[k]
                if all_classes:
                    labels = enumerate(self.classes)
                    record["classes"] = {str(label): one(i, j) for j, label in labels}
            results.append(record)
        return results


class Explainer:
    """Explains a fitted ``Pipeline([(name, ColumnTransformer), (name, estimator)])``; build
    it once (``build_explainer``) and reuse it for every request."""

    def __init__(
        self, preprocess: ColumnTransformer, model: Any, engine: _Engine, *, output: str,
        method: str, class_labels: Sequence[Any] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self._preprocess, self._model, self._engine = preprocess, model, engine
        self.output = output
        self.method = method  #: ``linear``, ``lightgbm``, ``xgboost`` or ``treeshap``
        self._state = {"version": STATE_VERSION, "method": method, **(state or {})}
        self.features, sources = source_columns(preprocess)
        self._gather = np.zeros((len(sources), len(self.features)))
        self._gather[np.arange(len(sources)), sources] = 1.0
        codes = getattr(model, "classes_", None) if is_classifier(model) else None
        self._codes = None if codes is None else np.asarray(codes)
        labels = None if codes is None else [_label(c, class_labels) for c in codes.tolist()]
        self.classes: tuple[Any, ...] | None = None if labels is None else tuple(labels)
        self._binary_margin = self._identity = False
        self._calibrate(len(sources))

    def _calibrate(self, columns: int) -> None:
        """Learn the engine's layout on two probe rows; check they give the model's answers."""
        probe = np.vstack([np.zeros(columns), np.ones(columns)])
        phi, base = self._engine(probe)
        if phi.shape != (2, columns, base.shape[1]):
            raise ExplanationUnavailable(f"unexpected contributions of shape {phi.shape}")
        predicted = np.asarray(self._model.predict(probe)).reshape(-1)
        if self._codes is None:
            if base.shape[1] != 1:
                raise ExplanationUnavailable("models with several outputs per row")
            explained = base[:, 0] + phi.sum(axis=(1, 2))  # float32 models differ: ~1e-7
            self._identity = bool(np.allclose(explained, predicted, rtol=1e-10, atol=1e-12))
            return
        self._binary_margin = base.shape[1] == 1 and len(self._codes) == 2
        if base.shape[1] != len(self._codes) and not self._binary_margin:
            raise ExplanationUnavailable(f"{base.shape[1]} outputs for {len(self._codes)} classes")
        base, phi = self._expand(base, phi)
        outputs = np.sort(base + phi.sum(axis=1), axis=1)
        clear = outputs[:, -1] - outputs[:, -2] > 1e-6 * (1.0 + np.abs(outputs[:, -1]))
        chosen = self._codes[np.argmax(base + phi.sum(axis=1), axis=1)]
        if not np.array_equal(chosen[clear], predicted[clear]):  # near-ties may round apart
            raise ExplanationUnavailable("the explained outputs do not give the model's classes")

    def _expand(self, base: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(base, phi)`` with one output per class (a binary margin ``m`` gives ``-m, m``)."""
        if self._binary_margin:
            return np.concatenate([-base, base], axis=1), np.concatenate([-phi, phi], axis=2)
        return base, phi

    def state(self) -> dict[str, Any]:
        """What to store (JSON, in ``metadata.json``) to rebuild this explainer at load."""
        return dict(self._state)

    def explain_batch(self, X: pd.DataFrame) -> Contributions:  # noqa: N803
        """Explain the rows of ``X`` (the frame the pipeline predicts from), vectorized."""
        if len(X) == 0:
            raise ValueError("no rows to explain")
        # The rows were checked against the feature schema; scikit-learn's own per-call
        # validation is most of a one-row transform's time.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            transformed = np.asarray(self._preprocess.transform(X), dtype=np.float64)
        phi, base = self._engine(transformed)
        base, phi = self._expand(base, phi)
        # (rows, outputs, columns) @ (columns, features): each column added to its source
        values = np.matmul(phi.transpose(0, 2, 1), self._gather).transpose(0, 2, 1)
        outputs = base + values.sum(axis=1)
        if self._codes is None:
            raw = outputs[:, 0] if self._identity else self._model.predict(transformed)
            predictions: list[Any] = np.asarray(raw, dtype=np.float64).reshape(-1).tolist()
            explained = np.zeros(len(X), dtype=np.intp)
        else:  # the model's own rule: the largest margin (or probability) wins
            explained = np.argmax(outputs, axis=1)
            assert self.classes is not None
            predictions = [self.classes[k] for k in explained.tolist()]
        return Contributions(
            self.features, self.output, values, base, self.classes, predictions, explained
        )

    def explain(self, X: pd.DataFrame, *, all_classes: bool = False) -> list[dict[str, Any]]:  # noqa: N803
        """Per row: ``prediction``, ``output``, ``base_value``, ``value`` (explained output),
        ``contributions``, ``class`` (classifiers) and, with ``all_classes``, ``classes``."""
        return self.explain_batch(X).records(all_classes=all_classes)


def _label(code: Any, labels: Sequence[Any] | None) -> Any:
    if labels is not None and isinstance(code, int) and 0 <= code < len(labels):
        return labels[code]
    return code.item() if isinstance(code, np.generic) else code


def source_columns(preprocess: ColumnTransformer) -> tuple[tuple[str, ...], np.ndarray]:
    """The input features of a fitted ``ColumnTransformer`` and, for each column of its
    output, the index of the input feature it comes from (in the order it concatenates)."""
    if not isinstance(preprocess, ColumnTransformer) or not hasattr(preprocess, "transformers_"):
        raise ExplanationUnavailable("the first pipeline step is not a fitted ColumnTransformer")
    n_in = int(preprocess.n_features_in_)
    default = [f"x{i}" for i in range(n_in)]
    names = tuple(str(n) for n in getattr(preprocess, "feature_names_in_", default))
    slices: Mapping[str, slice] = preprocess.output_indices_
    sources = np.full(max((s.stop for s in slices.values()), default=0), -1, dtype=np.intp)
    for name, transformer, columns in preprocess.transformers_:
        block = slices.get(name, slice(0, 0))
        if transformer == "drop" or block.stop == block.start:
            continue
        inputs = _column_indices(preprocess, name, columns, names)
        local = _branch_sources(transformer, len(inputs), block.stop - block.start, name)
        sources[block] = np.asarray(inputs, dtype=np.intp)[local]
    if (sources < 0).any():
        raise ExplanationUnavailable("some transformed columns come from no input column")
    return names, sources


def _column_indices(
    preprocess: ColumnTransformer, name: str, columns: Any, names: tuple[str, ...]
) -> list[int]:
    array = np.atleast_1d(np.asarray(columns, dtype=object if callable(columns) else None))
    if array.dtype == bool:
        return np.flatnonzero(array).tolist()
    if array.dtype.kind in "iu":
        return [int(i) % len(names) for i in array.tolist()]
    if array.dtype.kind in "OU" and all(str(c) in names for c in array.tolist()):
        return [names.index(str(c)) for c in array.tolist()]
    resolved = getattr(preprocess, "_transformer_to_input_indices", {}).get(name)
    if resolved is None:  # a slice or a callable: what the ColumnTransformer resolved at fit
        raise ExplanationUnavailable(f"cannot tell which input columns branch {name!r} takes")
    return [int(i) for i in resolved]


def _branch_sources(transformer: Any, n_in: int, width: int, name: str) -> np.ndarray:
    """For each output column of one branch, the index of its input (among the branch's)."""
    if transformer == "passthrough":
        steps: list[Any] = []
    elif isinstance(transformer, Pipeline):
        steps = [s for _, s in transformer.steps if s is not None and s != "passthrough"]
    else:
        steps = [transformer]
    sources = np.arange(n_in)
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        sources = sources[_step_sources(step, len(sources), width if last else None)]
    if len(sources) != width:
        raise ExplanationUnavailable(f"branch {name!r}: {width} columns, {len(sources)} mapped")
    return sources


def _step_sources(step: Any, n_in: int, width: int | None) -> np.ndarray:
    """For one fitted transformer, the input index of each of its output columns."""
    inputs = np.arange(n_in)
    if isinstance(step, OneHotEncoder):
        widths = getattr(step, "_n_features_outs", None)  # per input, after drop/infrequent
        return np.repeat(inputs, widths or [len(c) for c in step.categories_])
    if isinstance(step, TargetEncoder):  # feature-major: every class of feature 0 first
        return np.repeat(inputs, len(step.classes_) if step.target_type_ == "multiclass" else 1)
    if isinstance(step, DatetimeFeatures):
        return np.repeat(inputs, len(step.parts))
    if isinstance(step, SimpleImputer):
        kept = inputs
        if not step.keep_empty_features and step.strategy != "constant":
            kept = inputs[~pd.isna(pd.Series(step.statistics_, dtype=object)).to_numpy(bool)]
        if step.add_indicator and step.indicator_ is not None:
            kept = np.concatenate([kept, np.asarray(step.indicator_.features_, dtype=np.intp)])
        return kept
    try:
        n_out = width if width is not None else len(step.get_feature_names_out())
    except (AttributeError, ValueError, TypeError) as exc:
        raise ExplanationUnavailable(f"{type(step).__name__} gives no output width") from exc
    if n_out == n_in:
        return inputs
    if n_in == 1:  # a text vectorizer or embedder: every output comes from its one column
        return np.zeros(n_out, dtype=np.intp)
    what = f"the {n_out} outputs of {type(step).__name__} back to its {n_in} inputs"
    raise ExplanationUnavailable(f"cannot map {what}")


def build_explainer(
    pipeline: Any, X_background: pd.DataFrame | None = None, *,  # noqa: N803
    state: Mapping[str, Any] | None = None, class_labels: Sequence[Any] | None = None,
) -> Explainer:  # fmt: skip
    """The explainer of a fitted pipeline, or ``ExplanationUnavailable`` saying why not.

    Linear models need the mean of their transformed training inputs: from ``X_background``
    (at training) or from ``state`` (``Explainer.state()`` as stored at training). Tree models
    need neither. ``class_labels`` maps a classifier's class codes ``0..K-1`` to labels.
    """
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        raise ExplanationUnavailable("not a pipeline of a ColumnTransformer and an estimator")
    preprocess, model = steps[0][1], steps[1][1]
    columns = len(source_columns(preprocess)[1])
    engine, output, method, extra = _engine_for(model, columns, preprocess, X_background, state)
    return Explainer(
        preprocess, model, engine, output=output, method=method, class_labels=class_labels,
        state=extra,
    )  # fmt: skip


def _engine_for(
    model: Any, columns: int, preprocess: ColumnTransformer,
    background: pd.DataFrame | None, state: Mapping[str, Any] | None,
) -> tuple[_Engine, str, str, dict[str, Any]]:  # fmt: skip
    """``(engine, output, method, what state() stores)`` for ``model``."""
    from sklearn import ensemble
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel

    hgb = (ensemble.HistGradientBoostingClassifier, ensemble.HistGradientBoostingRegressor)
    forests = (ensemble.RandomForestClassifier, ensemble.RandomForestRegressor,
               ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor)  # fmt: skip
    module = type(model).__module__.split(".")[0]
    classifier = is_classifier(model)
    if module == "lightgbm":
        return _lightgbm_engine(model), _margin_output(model, classifier), "lightgbm", {}
    if module == "xgboost":
        return _xgboost_engine(model), _margin_output(model, classifier), "xgboost", {}
    if isinstance(model, hgb):
        return _hgb_engine(model), _margin_output(model, classifier), "treeshap", {}
    if isinstance(model, forests):
        output = "probability" if classifier else "raw"
        return _forest_engine(model, classifier), output, "treeshap", {}
    if isinstance(model, LinearModel | LinearClassifierMixin) and hasattr(model, "coef_"):
        mean = _background_mean(columns, preprocess, background, state)
        engine = _linear_engine(model, mean)
        return engine, _margin_output(model, classifier), "linear", {"mean": mean.tolist()}
    raise ExplanationUnavailable(
        f"{type(model).__name__} has no exact additive explanation (explained: linear models, "
        "random forests, extra trees, HistGradientBoosting, LightGBM, XGBoost)"
    )


def _margin_output(model: Any, classifier: bool) -> str:
    """``log_odds`` for binary logistic models, ``raw`` otherwise."""
    if not classifier or len(getattr(model, "classes_", ())) != 2:
        return "raw"
    setting = getattr(model, "objective_", None) or getattr(model, "objective", None)
    setting = str(setting or getattr(model, "loss", None) or "")
    logistic = _LOGISTIC.get(type(model).__name__)
    return "log_odds" if logistic is not None and setting in logistic else "raw"


def _background_mean(
    columns: int, preprocess: ColumnTransformer, background: pd.DataFrame | None,
    state: Mapping[str, Any] | None,
) -> np.ndarray:  # fmt: skip
    if background is not None:
        if len(background) == 0:
            raise ValueError("X_background has no rows")
        mean = np.asarray(preprocess.transform(background), dtype=np.float64).mean(axis=0)
    elif state is not None and state.get("mean") is not None:
        if state.get("version") != STATE_VERSION:
            raise ExplanationUnavailable(f"stored explainer state version {state.get('version')}")
        mean = np.asarray(state["mean"], dtype=np.float64)
    else:  # a linear model is explained against it
        raise ExplanationUnavailable("the mean of its training inputs is not stored (train again)")
    if mean.shape != (columns,) or not np.isfinite(mean).all():
        what = f"{mean.size} values (all finite: {bool(np.isfinite(mean).all())})"
        raise ExplanationUnavailable(f"the mean has {what}, the model takes {columns} columns")
    return mean


def _linear_engine(model: Any, mean: np.ndarray) -> _Engine:
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))  # (outputs, columns)
    intercept = np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64), (coef.shape[0],))
    if coef.shape[1] != mean.size or (not is_classifier(model) and coef.shape[0] != 1):
        raise ExplanationUnavailable(f"{type(model).__name__} with {coef.shape} coefficients")
    base = intercept + coef @ mean

    def engine(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        phi = (X - mean)[:, :, None] * coef.T[None, :, :]
        return phi, np.broadcast_to(base, (X.shape[0], base.size)).copy()

    return engine


def _split_bias(raw: np.ndarray, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, outputs * (columns + 1))`` contributions, bias last -> ``(phi, base)``."""
    raw = np.asarray(raw, dtype=np.float64).reshape(rows, -1, columns + 1)
    return raw[:, :, :columns].transpose(0, 2, 1), raw[:, :, columns]


def _lightgbm_engine(model: Any) -> _Engine:
    booster = model.booster_

    def engine(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        return _split_bias(booster.predict(X, pred_contrib=True), X.shape[0], X.shape[1])

    return engine


def _xgboost_engine(model: Any) -> _Engine:
    import xgboost

    booster = model.get_booster()
    try:  # the trees model.predict uses: up to the best iteration of early stopping
        iterations = (0, int(model.best_iteration) + 1)
    except AttributeError:
        iterations = (0, 0)
    missing = getattr(model, "missing", np.nan)

    def engine(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        matrix = xgboost.DMatrix(X, missing=missing, nthread=1)
        raw = booster.predict(matrix, pred_contribs=True, iteration_range=iterations)
        return _split_bias(raw, X.shape[0], X.shape[1])

    return engine


def _hgb_engine(model: Any) -> _Engine:
    predictors = model._predictors  # per iteration, one TreePredictor per output
    outputs = len(predictors[0])
    trees = []
    for iteration in predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ExplanationUnavailable("HistGradientBoosting with categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            values = np.zeros((len(nodes), outputs))
            values[:, k] = nodes["value"]  # tree k of an iteration adds to output k only
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            right = np.where(leaf, -1, nodes["right"].astype(np.int64))
            trees.append((left, right, nodes["missing_go_to_left"], nodes["feature_idx"],
                          nodes["num_threshold"], values, nodes["count"]))  # fmt: skip
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    return _treeshap_engine(trees, baseline, float32_inputs=False)


def _forest_engine(model: Any, classifier: bool) -> _Engine:
    if getattr(model, "n_outputs_", 1) != 1:
        raise ExplanationUnavailable("multi-output forests")
    scale = 1.0 / len(model.estimators_)  # the forest averages its trees
    trees = []
    for estimator in model.estimators_:
        tree = estimator.tree_
        values = np.asarray(tree.value[:, 0, :], dtype=np.float64)
        if classifier:  # a tree's probabilities: its leaf's class fractions
            values = values / values.sum(axis=1, keepdims=True)
        missing = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, bool))
        trees.append((tree.children_left, tree.children_right, missing, tree.feature,
                      tree.threshold, values * scale, tree.weighted_n_node_samples))  # fmt: skip
    # scikit-learn trees compare float32 inputs: explain the same float32 values
    return _treeshap_engine(trees, np.zeros(trees[0][5].shape[1]), float32_inputs=True)


def _treeshap_kernel() -> Any:
    """shap's compiled TreeSHAP (``shap._cext``), loaded on its own: ``import shap`` takes
    seconds and brings matplotlib, IPython and numba into the server."""
    import importlib.machinery
    import importlib.util
    import sys
    from pathlib import Path

    if "shap._cext" in sys.modules:
        return sys.modules["shap._cext"]
    package = importlib.util.find_spec("shap")  # found without running shap/__init__
    folders = (package.submodule_search_locations if package else None) or []
    paths = [Path(f, "_cext" + s) for f in folders for s in importlib.machinery.EXTENSION_SUFFIXES]
    found = [path for path in paths if path.is_file()]
    spec = importlib.util.spec_from_file_location("shap._cext", found[0]) if found else None
    if spec is None or spec.loader is None:
        raise ExplanationUnavailable("it needs the 'shap' package: pip install mlservice[explain]")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _treeshap_engine(trees: list[tuple[Any, ...]], baseline: np.ndarray, *,
                     float32_inputs: bool) -> _Engine:  # fmt: skip
    """Path-dependent TreeSHAP over trees given as ``(left, right, missing_go_to_left,
    features, thresholds, values (nodes, outputs), node weights)`` arrays (``-1``: no child):
    a NaN goes to each node's missing-value child, a value ``<=`` the threshold to the left."""
    kernel = _treeshap_kernel()
    shape, outputs = (len(trees), max(len(t[0]) for t in trees)), baseline.size
    left, right, default, features = (np.full(shape, -1, dtype=np.int32) for _ in range(4))
    thresholds, weights = np.zeros(shape), np.zeros(shape)
    values = np.zeros((*shape, outputs))
    depth = 0
    for i, (lo, hi, missing_left, feature, threshold, value, weight) in enumerate(trees):
        n = len(lo)
        left[i, :n], right[i, :n], features[i, :n] = lo, hi, feature
        default[i, :n] = np.where(np.asarray(missing_left, dtype=bool), lo, hi)
        thresholds[i, :n], weights[i, :n] = threshold, weight
        values[i, :n] = value
        # internal nodes get the weighted mean of their leaves (in place); returns the depth
        depth = max(depth, kernel.compute_expectations(left[i], right[i], weights[i], values[i]))
    types = np.zeros(shape, dtype=np.int32)  # numeric splits only
    offset = np.ascontiguousarray(baseline, dtype=np.float64)

    def engine(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        dtype = np.float32 if float32_inputs else np.float64
        X = np.ascontiguousarray(X.astype(dtype), dtype=np.float64)  # noqa: N806
        phi = np.zeros((X.shape[0], X.shape[1] + 1, outputs))
        kernel.dense_tree_shap(left, right, default, features, thresholds, types, values, weights,
                               depth, X, np.isnan(X), None, None, None, len(trees), offset, phi,
                               1, 0, False)  # tree_path_dependent, identity, no interactions
        return phi[:, :-1, :], phi[:, -1, :]

    return engine
