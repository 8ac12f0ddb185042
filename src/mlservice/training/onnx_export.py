"""Export the fitted pipeline to ONNX at training time, verified against scikit-learn.

``export_onnx`` converts the pipeline (skl2onnx; onnxmltools for LightGBM and XGBoost), runs the
result with the serving code (``mlservice.inference.onnx_runtime``) on the test rows, and writes
``model.onnx`` only when the labels are equal and the probabilities / values agree within the
stated tolerance. ``metadata["onnx"]`` records the outcome either way; a pipeline that does not
convert or verify is served by scikit-learn and the model card says why.

Tree ensembles get their constant (single-leaf) trees folded into ``base_values`` first
(``onnx_optimize.fold_constant_trees``). It is the folded graph that is verified and written;
when it does not verify (or onnxruntime refuses it) the unfolded graph is verified and written
instead, so the optimization never costs a servable export.

Two skl2onnx 1.20 traps are handled here:

* a ``SimpleImputer`` on string columns with ``missing_values=nan`` does not convert. The graph
  gets an equivalent imputer with ``missing_values=""`` and the same fitted ``statistics_``, and
  serving sends a missing category as ``""`` (``MISSING_CATEGORY``); the pipeline that trains and
  is saved in ``model.skops`` is untouched.
* its HistGradientBoosting converter writes Python ``bool`` values into the INTS attribute
  ``nodes_missing_value_tracks_true``, which onnx 1.23 / protobuf 7 refuse. The converter is
  re-registered behind ``_IntAttributes``, which casts such lists to ``int`` before the node is
  built (the values are 0/1 either way).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlservice.inference.onnx_runtime import (
    MISSING_CATEGORY,
    ONNX_FILE,
    UNKNOWN_CATEGORY,
    OnnxInput,
    OnnxModel,
)
from mlservice.training.onnx_target_encoder import (
    register_float32_values,
    register_target_encoder,
)

__all__ = [
    "ML_OPSET",
    "ONNX_OPSET",
    "PROBA_ATOL",
    "REGRESSION_RTOL",
    "VERIFY_MAX_ROWS",
    "export_onnx",
    "register_converters",
]

ONNX_OPSET = 18
ML_OPSET = 3
#: Largest absolute difference allowed between ONNX and scikit-learn class probabilities.
PROBA_ATOL = 1e-4
#: Regression: |onnx - sklearn| <= REGRESSION_RTOL * max(|sklearn|, mean |sklearn| on the rows).
REGRESSION_RTOL = 1e-4
VERIFY_MAX_ROWS = 10_000
_MAX_REASON = 300

_CONVERTED_TASKS = ("classification", "regression")
_INPUT_TYPES = {"numeric": "float", "categorical": "string"}
_FIXED_MARK = "_mlservice_int_attributes"


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


class _UnsupportedError(Exception):
    """The pipeline has a part the ONNX export does not handle; the message says which."""


# --------------------------------------------------------------------------- converters
class _IntAttributes:
    """A converter container whose ``add_node`` turns bool lists into int lists (INTS attrs)."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list | tuple) and any(
                isinstance(v, bool | np.bool_) for v in value
            ):
                attrs[key] = [int(v) for v in value]
        return self._container.add_node(*args, **attrs)


def _with_int_attributes(convert: Callable[..., Any]) -> Callable[..., Any]:
    # skl2onnx checks that a converter's parameters are exactly (scope, operator, container).
    def converter(scope: Any, operator: Any, container: Any) -> Any:
        return convert(scope, operator, _IntAttributes(container))

    setattr(converter, _FIXED_MARK, True)
    return converter


def _fix_registered(alias: str) -> None:
    from skl2onnx.common._registration import get_converter, register_converter

    registered = get_converter(alias)
    convert = registered._fct
    if getattr(convert, _FIXED_MARK, False):
        return
    register_converter(
        alias,
        _with_int_attributes(convert),
        overwrite=True,
        options=registered.get_allowed_options(),
    )


def register_converters(estimator: Any) -> None:
    """Make skl2onnx able to convert ``estimator`` (idempotent, process-wide)."""
    from skl2onnx import update_registered_converter
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    for model in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        _fix_registered(sklearn_operator_name_map[model])
    register_target_encoder()
    register_float32_values()
    module = type(estimator).__module__.split(".")[0]
    if module not in ("lightgbm", "xgboost"):
        return
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if module == "lightgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        pairs: list[tuple[Any, str, Any, Any, Any]] = [
            (LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
             convert_lightgbm, classifier_options),
            (LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
             convert_lightgbm, None),
        ]
    else:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        pairs = [
            (XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
             convert_xgboost, classifier_options),
            (XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
             convert_xgboost, None),
        ]
    for model, alias, shapes, convert, options in pairs:
        if sklearn_operator_name_map.get(model) != alias:
            update_registered_converter(
                model, alias, shapes, _with_int_attributes(convert), options=options
            )


# ------------------------------------------------------------------ pipeline preparation
def _feature_kinds(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each feature's kind as the graph takes it: a boolean of a canonical bundle is a
    category ("True"/"False" strings, like every categorical value)."""
    specs = {}
    for spec in metadata.get("features") or []:
        kind = str(spec.get("type", "numeric"))
        if kind == "boolean" and spec.get("canonical"):
            kind = "categorical"
        specs[str(spec["name"])] = kind
    names = [str(n) for n in metadata.get("feature_names") or specs]
    return [(name, specs.get(name, "numeric")) for name in names]


def _check_categories(encoder: Any, where: str) -> None:
    for column in getattr(encoder, "categories_", []):
        bad = [c for c in column if not isinstance(c, str) or c in (MISSING_CATEGORY,
                                                                     UNKNOWN_CATEGORY)]
        if bad:
            raise _UnsupportedError(
                f"{where} has categories that are not non-empty strings ({bad[:3]!r}); "
                "the ONNX graph takes categories as strings"
            )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _onnx_ready(pipeline: Any, categorical: set[str]) -> Any:
    """A copy of ``pipeline`` whose categorical imputers treat ``""`` as missing."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        kind = type(pipeline).__name__
        raise _UnsupportedError(f"the model is a {kind}, not a scikit-learn Pipeline")
    converted = copy.deepcopy(pipeline)
    preprocess = converted.steps[0][1]
    if not isinstance(preprocess, ColumnTransformer):
        return converted
    for name, branch, columns in preprocess.transformers_:
        cols = [columns] if isinstance(columns, str) else list(columns)
        if not cols or not set(cols) <= categorical:
            continue
        steps = branch.steps if isinstance(branch, Pipeline) else None
        for i, (step_name, step) in enumerate(steps or [(name, branch)]):
            where = f"preprocess branch {name!r} step {step_name!r}"
            if isinstance(step, SimpleImputer) and _is_nan(step.missing_values):
                stats = list(getattr(step, "statistics_", []))
                if any(not isinstance(s, str) or s == MISSING_CATEGORY for s in stats):
                    raise _UnsupportedError(f"{where} imputes non-string values {stats[:3]!r}")
                same = copy.deepcopy(step)
                same.missing_values = MISSING_CATEGORY  # same statistics_, "" is missing
                assert steps is not None
                steps[i] = (step_name, same)
            _check_categories(step, where)
    return converted


def _initial_types(kinds: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    unsupported = sorted({kind for _, kind in kinds if kind not in _INPUT_TYPES})
    if unsupported:
        raise _UnsupportedError(
            f"features of type {unsupported} are not exported (numeric and categorical are)"
        )
    tensor = {"float": FloatTensorType, "string": StringTensorType}
    return [(name, tensor[_INPUT_TYPES[kind]]([None, 1])) for name, kind in kinds]


# ------------------------------------------------------------------------------ export
def _convert(pipeline: Any, kinds: list[tuple[str, str]]) -> tuple[bytes, dict[str, Any]]:
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier

    categorical = {name for name, kind in kinds if kind == "categorical"}
    converted = _onnx_ready(pipeline, categorical)
    final = converted.steps[-1][1]
    register_converters(final)
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    model = to_onnx(
        converted,
        initial_types=_initial_types(kinds),
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET},
        options=options,
    )
    names = [o.name for o in model.graph.output]
    if is_classifier(final):
        if len(names) != 2:
            raise _UnsupportedError(f"the classifier graph has outputs {names}, expected 2")
        # Served like the pipeline: probabilities only when it has predict_proba (a
        # RidgeClassifier's second output holds decision scores).
        proba = names[1] if hasattr(pipeline, "predict_proba") else None
        outputs: dict[str, Any] = {"label": names[0], "probabilities": proba}
    else:
        outputs = {"label": names[0], "probabilities": None}
    return model.SerializeToString(), outputs


def _fold(data: bytes) -> tuple[bytes, int]:
    """``data`` with its constant trees folded, and how many were (``data`` itself when none)."""
    import onnx

    from mlservice.training.onnx_optimize import fold_constant_trees

    model = onnx.load_model_from_string(data)
    folded = fold_constant_trees(model)
    return (model.SerializeToString(), folded) if folded else (data, 0)


def _regression_check(onnx_values: np.ndarray, sk_values: np.ndarray) -> tuple[float, float]:
    diff = np.abs(onnx_values - sk_values)
    scale = np.maximum(np.abs(sk_values), float(np.mean(np.abs(sk_values))) or 1.0)
    return float(diff.max(initial=0.0)), float((diff / scale).max(initial=0.0))


def _verify(
    pipeline: Any, model: OnnxModel, X: pd.DataFrame, task: str  # noqa: N803
) -> dict[str, Any]:
    columns = {spec.name: X[spec.name].tolist() for spec in model.inputs}
    labels, proba = model.run(model.feeds_from_columns(columns))
    sk_labels = np.asarray(pipeline.predict(X))
    result: dict[str, Any] = {"verified_rows": len(X)}
    if task == "classification":
        classes = np.asarray(getattr(pipeline, "classes_", np.unique(sk_labels)))
        if proba is not None and hasattr(pipeline, "predict_proba"):
            ours = np.asarray(proba, dtype=np.float64)
            ours = ours / ours.sum(axis=1, keepdims=True)
            sk_proba = np.asarray(pipeline.predict_proba(X), dtype=np.float64)
            diff = float(np.abs(ours - sk_proba).max(initial=0.0))
            served = classes[np.argmax(ours, axis=1)]
            result["tolerance"] = {"probabilities_atol": PROBA_ATOL, "labels": "equal"}
            ok = diff <= PROBA_ATOL
        else:
            diff, served = 0.0, labels.reshape(-1)
            result["tolerance"] = {"labels": "equal"}
            ok = True
        mismatches = int(np.sum(served.astype(sk_labels.dtype) != sk_labels))
        result.update(max_abs_diff=diff, label_mismatches=mismatches)
        ok = ok and mismatches == 0
        if not ok:
            result["reason"] = (
                f"ONNX differs from scikit-learn on the test rows: {mismatches} labels differ, "
                f"max probability difference {diff:.3g} (tolerance {PROBA_ATOL:g})"
            )
    else:
        values = np.asarray(labels, dtype=np.float64).reshape(-1)
        diff, rel = _regression_check(values, sk_labels.astype(np.float64).reshape(-1))
        result.update(
            max_abs_diff=diff,
            max_rel_diff=rel,
            tolerance={"rtol": REGRESSION_RTOL, "relative_to": "max(|y|, mean |y|)"},
        )
        ok = bool(np.isfinite(values).all()) and rel <= REGRESSION_RTOL
        if not ok:
            result["reason"] = (
                f"ONNX differs from scikit-learn on the test rows: max relative difference "
                f"{rel:.3g} (tolerance {REGRESSION_RTOL:g})"
            )
    result["verified"] = ok
    return result


def _verify_bytes(
    pipeline: Any, data: bytes, sample: pd.DataFrame, task: str, info: dict[str, Any]
) -> dict[str, Any]:
    """``_verify`` on the graph ``data``; a graph onnxruntime refuses is not verified."""
    try:
        model = OnnxModel.from_bytes(data, onnx_meta=info)
        return _verify(pipeline, model, sample, task)
    except Exception as exc:  # a graph onnxruntime refuses is an unverified export
        return {"verified": False, "reason": f"verification failed: {_short(exc)}"}


def _short(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {text}" if not isinstance(exc, _UnsupportedError) else text
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def export_onnx(
    pipeline: Any,
    X: pd.DataFrame,  # noqa: N803
    *,
    task: str,
    out_dir: Path,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Convert ``pipeline``, verify it on ``X`` (the test rows), write ``out_dir/model.onnx``.

    The file is written only when verified. ``metadata["onnx"]`` gets ``converted``,
    ``verified``, ``max_abs_diff``, ``tolerance``, ``opset``, ``inputs``, ``outputs`` and a
    ``reason`` when it is not served by ONNX. Conversion problems never raise: the bundle is
    then served by scikit-learn.

    Once converted, ``optimizations`` records ``constant_trees_folded``: the number of
    single-leaf trees folded out of the verified (and written) graph; ``0`` when there was
    nothing to fold, when the folded graph was not used, or when nothing verified. The
    verification fields always describe the graph that was written (or the unfolded one when
    none was). ``optimizations["fallback"]`` says why the fold was not used when folding raised,
    or when the folded graph failed verification but the unfolded one passed.
    """
    info: dict[str, Any] = {
        "converted": False,
        "verified": False,
        "opset": ONNX_OPSET,
        "ml_opset": ML_OPSET,
        "file": None,
        "versions": {d: _version(d) for d in ("skl2onnx", "onnx", "onnxruntime", "onnxmltools")},
    }
    metadata["onnx"] = info
    if task not in _CONVERTED_TASKS:
        info["reason"] = f"{task} models are served by scikit-learn (not exported)"
        return info
    kinds = _feature_kinds(metadata)
    try:
        data, outputs = _convert(pipeline, kinds)
    except Exception as exc:  # skl2onnx raises many types for one unsupported part
        info["reason"] = f"conversion failed: {_short(exc)}"
        return info
    inputs = [OnnxInput(name, _INPUT_TYPES[kind]).to_dict() for name, kind in kinds]
    info.update(converted=True, inputs=inputs, outputs=outputs)
    codes = getattr(pipeline, "classes_", None)
    if task == "classification" and codes is not None:
        # the probability columns' class codes, so serving never needs the pipeline itself
        info["class_codes"] = [c.item() if isinstance(c, np.generic) else c for c in codes]
    sample = X[[name for name, _ in kinds]]
    if len(sample) > VERIFY_MAX_ROWS:
        sample = sample.sample(VERIFY_MAX_ROWS, random_state=0)
    if sample.empty:
        info["reason"] = "no test rows to verify the ONNX model on"
        return info
    optimizations: dict[str, Any] = {"constant_trees_folded": 0}
    info["optimizations"] = optimizations
    candidates = [(data, 0)]
    try:
        folded_data, folded = _fold(data)
    except Exception as exc:  # an optimization problem never costs the export
        optimizations["fallback"] = f"folding constant trees failed: {_short(exc)}"
    else:
        if folded:
            candidates.insert(0, (folded_data, folded))
    rejected = None  # why the folded graph did not verify
    for payload, folded in candidates:
        result = _verify_bytes(pipeline, payload, sample, task, info)
        if result["verified"] or not folded:
            break
        rejected = f"the graph with {folded} constant trees folded was not used: {result['reason']}"
    info.update(result)
    if info["verified"]:
        (out_dir / ONNX_FILE).write_bytes(payload)
        info["file"] = ONNX_FILE
        info.pop("reason", None)
        optimizations["constant_trees_folded"] = folded
        if rejected is not None:  # the unfolded graph verified: the fold was the problem
            optimizations["fallback"] = rejected
    return info
