"""Folding constant (single-leaf) trees into ``base_values``: exact, conservative, verified.

Real boosted models on real data: HistGradientBoosting on penguins (3 classes; the loss goes
flat after ~60 rounds), on diabetes with monotonic constraints (splits that break them are
refused, so later rounds are single leaves) and on breast_cancer (binary: never folded). Small
hand-built ensembles cover the cases the exporters do not produce.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from mlservice.config import PreprocessingConfig
from mlservice.inference.onnx_runtime import OnnxInput, OnnxModel
from mlservice.pipelines import build_pipeline
from mlservice.training import onnx_export
from mlservice.training.onnx_export import export_onnx
from mlservice.training.onnx_optimize import fold_constant_trees
from tests.test_onnx import PENGUIN_TYPES, _penguins, _split

ENSEMBLES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


class Fitted:
    """A fitted pipeline, its held-out rows and its converted (unfolded) graph."""

    def __init__(self, estimator: Any, X: pd.DataFrame, y: np.ndarray, types: dict[str, str]):  # noqa: N803
        train, test = _split(len(X))
        self.types = types
        self.pipeline = build_pipeline(
            types=types, preprocessing=PreprocessingConfig(), estimator=estimator
        ).fit(X.iloc[train], y[train])
        self.X, self.X_train, self.X_test = X, X.iloc[train], X.iloc[test]
        data, outputs = onnx_export._convert(self.pipeline, list(types.items()))
        self.data = data
        self.meta: dict[str, Any] = {
            "inputs": [
                OnnxInput(n, "string" if k == "categorical" else "float").to_dict()
                for n, k in types.items()
            ],
            "outputs": outputs,
        }

    def graph(self) -> onnx.ModelProto:
        return onnx.load_model_from_string(self.data)

    def run(self, model: onnx.ModelProto | bytes) -> tuple[np.ndarray, np.ndarray | None]:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        session = OnnxModel.from_bytes(data, onnx_meta=self.meta)
        columns = {name: self.X[name].tolist() for name in self.types}
        return session.run(session.feeds_from_columns(columns))

    def export(self, out_dir: Path, rows: pd.DataFrame | None = None) -> dict[str, Any]:
        """``export_onnx`` verifying on ``rows`` (default: the held-out rows)."""
        metadata: dict[str, Any] = {
            "features": [{"name": n, "type": k} for n, k in self.types.items()]
        }
        rows = self.X_test if rows is None else rows
        return export_onnx(self.pipeline, rows, task=self.task, out_dir=out_dir, metadata=metadata)

    @property
    def task(self) -> str:
        return "classification" if hasattr(self.pipeline, "classes_") else "regression"


def _ensemble(model: onnx.ModelProto) -> dict[str, Any]:
    [node] = [n for n in model.graph.node if n.op_type in ENSEMBLES]
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _trees(attrs: dict[str, Any]) -> list[list[tuple[Any, ...]]]:
    """Each tree's nodes (id, mode, feature, threshold, true, false) in tree-id order."""
    trees: dict[int, list[tuple[Any, ...]]] = {}
    columns = ("nodes_nodeids", "nodes_modes", "nodes_featureids", "nodes_values",
               "nodes_truenodeids", "nodes_falsenodeids")
    for i, tree in enumerate(attrs["nodes_treeids"]):
        trees.setdefault(tree, []).append(tuple(attrs[c][i] for c in columns))
    return [trees[t] for t in sorted(trees)]


def _constant_count(attrs: dict[str, Any]) -> int:
    return sum(1 for size in Counter(attrs["nodes_treeids"]).values() if size == 1)


def _constant_weights(attrs: dict[str, Any]) -> list[float]:
    sizes = Counter(attrs["nodes_treeids"])
    return [w for t, w in zip(attrs["class_treeids"], attrs["class_weights"], strict=True)
            if sizes[t] == 1]


@pytest.fixture(scope="module")
def penguins_hgb() -> Fitted:
    X, y, _ = _penguins()  # noqa: N806
    return Fitted(HistGradientBoostingClassifier(max_iter=100, random_state=0), X, y,
                  PENGUIN_TYPES)


@pytest.fixture(scope="module")
def diabetes_hgb() -> Fitted:
    data = load_diabetes(as_frame=True)
    types = {str(c): "numeric" for c in data.data.columns}
    estimator = HistGradientBoostingRegressor(
        max_iter=200, monotonic_cst=[1] * len(types), random_state=0
    )
    return Fitted(estimator, data.data, data.target.to_numpy(), types)


@pytest.fixture(scope="module")
def breast_cancer_hgb() -> Fitted:
    data = load_breast_cancer(as_frame=True)
    X = data.data.rename(columns=lambda c: str(c).replace(" ", "_"))  # noqa: N806
    types = {str(c): "numeric" for c in X.columns}
    estimator = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.5, random_state=0)
    return Fitted(estimator, X, data.target.to_numpy(), types)


# ------------------------------------------------------------------------ real models
def test_multiclass_folds_constant_trees_without_changing_predictions(
    penguins_hgb: Fitted,
) -> None:
    original = penguins_hgb.graph()
    folded = copy.deepcopy(original)
    before = _ensemble(original)
    constants = _constant_count(before)
    assert constants > 0  # the loss is flat before the 100th round: later rounds are leaves

    assert fold_constant_trees(folded) == constants
    onnx.checker.check_model(folded, full_check=True)
    after = _ensemble(folded)
    assert _constant_count(after) == 0
    assert len(_trees(after)) == len(_trees(before)) - constants
    # a HistGradientBoosting root that cannot split keeps the value 0: nothing to add
    assert set(_constant_weights(before)) == {0.0}
    assert after["base_values"] == before["base_values"]

    labels, proba = penguins_hgb.run(original)
    folded_labels, folded_proba = penguins_hgb.run(folded)
    assert proba is not None and folded_proba is not None
    assert (folded_labels == labels).all()
    np.testing.assert_allclose(folded_proba, proba, rtol=0, atol=1e-6)
    sk_proba = penguins_hgb.pipeline.predict_proba(penguins_hgb.X)
    np.testing.assert_allclose(folded_proba, sk_proba, rtol=0, atol=1e-6)
    assert (folded_labels == penguins_hgb.pipeline.predict(penguins_hgb.X)).all()


def test_remaining_trees_are_renumbered_in_order(penguins_hgb: Fitted) -> None:
    original = penguins_hgb.graph()
    folded = copy.deepcopy(original)
    fold_constant_trees(folded)
    before, after = _ensemble(original), _ensemble(folded)
    kept = len(set(after["nodes_treeids"]))
    assert sorted(set(after["nodes_treeids"])) == list(range(kept))
    assert set(after["class_treeids"]) == set(range(kept))
    # the same trees, in the same order, with the same node ids; only the ids moved
    assert _trees(after) == [tree for tree in _trees(before) if len(tree) > 1]
    # every remaining weight still points at a leaf of its (renumbered) tree
    leaves = {
        (t, n) for t, n, m in zip(after["nodes_treeids"], after["nodes_nodeids"],
                                  after["nodes_modes"], strict=True) if m == b"LEAF"
    }
    assert set(zip(after["class_treeids"], after["class_nodeids"], strict=True)) <= leaves
    lists = [k for k in after if k.startswith(("nodes_", "class_"))]
    assert {len(after[k]) for k in lists if k.startswith("nodes_")} == {len(after["nodes_modes"])}
    assert {len(after[k]) for k in lists if k.startswith("class_")} == {len(after["class_ids"])}
    assert fold_constant_trees(folded) == 0  # idempotent


def test_non_zero_constants_move_into_base_values() -> None:
    """XGBoost's single-leaf trees carry values; compared with the unfolded graph.

    (Not with xgboost itself: its ONNX conversion is off by ~1e-2 here before any folding, so
    the export does not verify and serves it with scikit-learn either way.)
    """
    pytest.importorskip("xgboost")
    from xgboost import XGBClassifier

    X, y, _ = _penguins()  # noqa: N806
    fitted = Fitted(XGBClassifier(n_estimators=30, max_depth=2, gamma=2.0, n_jobs=1,
                                  random_state=0), X, y, PENGUIN_TYPES)
    original = fitted.graph()
    before = _ensemble(original)
    assert any(w != 0 for w in _constant_weights(before))
    folded = copy.deepcopy(original)
    assert fold_constant_trees(folded) == _constant_count(before) > 0
    shifted = np.asarray(before["base_values"], dtype=np.float64)
    sizes = Counter(before["nodes_treeids"])
    for tree, cls, w in zip(before["class_treeids"], before["class_ids"], before["class_weights"],
                            strict=True):
        if sizes[tree] == 1:
            shifted[cls] += w
    after = _ensemble(folded)
    assert after["base_values"] == pytest.approx(shifted.tolist(), rel=1e-6)
    assert after["base_values"] != pytest.approx(before["base_values"], rel=1e-4)
    labels, proba = fitted.run(original)
    folded_labels, folded_proba = fitted.run(folded)
    assert proba is not None and folded_proba is not None
    assert (folded_labels == labels).all()
    np.testing.assert_allclose(folded_proba, proba, rtol=0, atol=1e-6)


def test_regressor_folds_constant_trees(diabetes_hgb: Fitted) -> None:
    original = diabetes_hgb.graph()
    folded = copy.deepcopy(original)
    constants = _constant_count(_ensemble(original))
    assert constants > 0  # monotonic constraints refuse the later rounds' splits
    assert fold_constant_trees(folded) == constants
    onnx.checker.check_model(folded, full_check=True)
    values, _ = diabetes_hgb.run(original)
    folded_values, _ = diabetes_hgb.run(folded)
    np.testing.assert_allclose(folded_values, values, rtol=1e-5)
    # Against scikit-learn: no further from it than the unfolded graph is. (A couple of
    # diabetes rows sit exactly on a split threshold, halfway between two training values,
    # and fall on the other side in float32 either way; the export test below verifies on the
    # training rows for that reason.)
    sk_values = diabetes_hgb.pipeline.predict(diabetes_hgb.X)
    error, folded_error = (np.abs(v.reshape(-1) - sk_values) for v in (values, folded_values))
    assert (folded_error <= error + 1e-5 * np.abs(sk_values)).all()
    assert np.median(folded_error / np.abs(sk_values)) < 1e-6


def test_binary_classifier_is_not_folded_and_still_exports(
    breast_cancer_hgb: Fitted, tmp_path: Path
) -> None:
    original = breast_cancer_hgb.graph()
    assert _constant_count(_ensemble(original)) > 0  # there would be something to fold
    untouched = copy.deepcopy(original)
    assert fold_constant_trees(untouched) == 0
    assert untouched.SerializeToString() == original.SerializeToString()

    info = breast_cancer_hgb.export(tmp_path)
    assert info["verified"] is True, info.get("reason")
    assert info["optimizations"] == {"constant_trees_folded": 0}
    assert (tmp_path / "model.onnx").read_bytes() == breast_cancer_hgb.data


# ---------------------------------------------------------------------------- export
@pytest.mark.parametrize("fixture", ["penguins_hgb", "diabetes_hgb"])
def test_export_writes_the_folded_graph_and_records_the_count(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fitted: Fitted = request.getfixturevalue(fixture)
    constants = _constant_count(_ensemble(fitted.graph()))
    # diabetes is verified on its training rows: a held-out row sits on a split threshold
    info = fitted.export(tmp_path, fitted.X_train if fixture == "diabetes_hgb" else None)
    assert info["verified"] is True, info.get("reason")
    assert info["optimizations"] == {"constant_trees_folded": constants}
    written = onnx.load_model_from_string((tmp_path / "model.onnx").read_bytes())
    assert _constant_count(_ensemble(written)) == 0
    assert len(set(_ensemble(written)["nodes_treeids"])) == (
        len(set(_ensemble(fitted.graph())["nodes_treeids"])) - constants
    )


def _wrong_fold(data: bytes) -> tuple[bytes, int]:
    """A fold that gets the arithmetic wrong: class 0's base value is off by 5."""
    model = onnx.load_model_from_string(data)
    folded = fold_constant_trees(model)
    [node] = [n for n in model.graph.node if n.op_type in ENSEMBLES]
    [base] = [a for a in node.attribute if a.name == "base_values"]
    base.floats[0] += 5.0
    return model.SerializeToString(), folded


def _failing_fold(data: bytes) -> tuple[bytes, int]:
    raise RuntimeError("no such attribute")


@pytest.mark.parametrize(
    ("fold", "fallback"),
    [
        (_wrong_fold, r"the graph with \d+ constant trees folded was not used: ONNX differs "
                      r"from scikit-learn on the test rows: \d+ labels differ"),
        (_failing_fold, r"folding constant trees failed: RuntimeError: no such attribute"),
    ],
)
def test_a_bad_fold_falls_back_to_the_unfolded_graph(
    penguins_hgb: Fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fold: Any, fallback: str,
) -> None:
    monkeypatch.setattr(onnx_export, "_fold", fold)
    info = penguins_hgb.export(tmp_path)
    assert info["verified"] is True, info.get("reason")
    assert "reason" not in info and info["label_mismatches"] == 0
    assert info["optimizations"]["constant_trees_folded"] == 0
    assert list(info["optimizations"]) == ["constant_trees_folded", "fallback"]
    assert re.match(fallback, info["optimizations"]["fallback"]), info["optimizations"]
    assert (tmp_path / "model.onnx").read_bytes() == penguins_hgb.data


# ------------------------------------------------------------------- hand-built graphs
def _regressor(
    *, base: Sequence[float] | None = (10.0,), trees: str = "LSLS", opset: int = 1, **extra: Any
) -> onnx.ModelProto:
    """One input, trees given as L (a single leaf) or S (a stump on x <= 0.5)."""
    attrs: dict[str, Any] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "target_treeids", "target_nodeids",
        "target_ids", "target_weights")}

    def node(tree: int, nid: int, mode: str, true: int = 0, false: int = 0) -> None:
        for key, value in (("treeids", tree), ("nodeids", nid), ("featureids", 0),
                           ("modes", mode), ("values", 0.5 if mode != "LEAF" else 0.0),
                           ("truenodeids", true), ("falsenodeids", false)):
            attrs[f"nodes_{key}"].append(value)

    def weight(tree: int, nid: int, value: float) -> None:
        for key, v in (("treeids", tree), ("nodeids", nid), ("ids", 0), ("weights", value)):
            attrs[f"target_{key}"].append(v)

    for tree, kind in enumerate(trees):
        if kind == "L":
            node(tree, 0, "LEAF")
            weight(tree, 0, 0.25 * (tree + 1))
        else:
            node(tree, 0, "BRANCH_LEQ", 1, 2)
            node(tree, 1, "LEAF")
            node(tree, 2, "LEAF")
            weight(tree, 1, -1.0 - tree)
            weight(tree, 2, 2.0 + tree)
    if base is not None:
        extra["base_values"] = list(base)
    ensemble = helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml",
                                n_targets=1, **attrs, **extra)
    graph = helper.make_graph(
        [ensemble], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", opset)]
    )


def _predict(model: onnx.ModelProto) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[0.0], [0.5], [0.7], [np.nan]], dtype=np.float32)
    return np.asarray(session.run(None, {"x": x})[0])


def test_hand_built_regressor_folds_and_renumbers() -> None:
    original = _regressor(trees="LSLSL")
    folded = copy.deepcopy(original)
    assert fold_constant_trees(folded) == 3
    onnx.checker.check_model(folded, full_check=True)
    attrs = _ensemble(folded)
    assert attrs["base_values"] == pytest.approx([10.0 + 0.25 + 0.75 + 1.25])
    assert attrs["nodes_treeids"] == [0, 0, 0, 1, 1, 1]
    assert attrs["target_treeids"] == [0, 0, 1, 1]
    assert attrs["target_weights"] == pytest.approx([-2.0, 3.0, -4.0, 5.0])
    np.testing.assert_allclose(_predict(folded), _predict(original), rtol=1e-7)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (_regressor(aggregate_function="AVERAGE"), "averaged: a constant is not an offset"),
        (_regressor(aggregate_function="MAX"), "max of the trees"),
        (_regressor(base=None), "no base_values"),
        (_regressor(base=[1.0, 2.0]), "base_values longer than n_targets"),
        (_regressor(trees="LLL"), "every tree is constant"),
        (_regressor(trees="SS"), "nothing constant"),
        (_regressor(base=None, opset=3, base_values_as_tensor=helper.make_tensor(
            "base", TensorProto.DOUBLE, [1], [10.0])), "ML opset 3 *_as_tensor"),
    ],
)
def test_cases_it_does_not_fold(model: onnx.ModelProto, why: str) -> None:
    before = model.SerializeToString()
    assert fold_constant_trees(model) == 0, why
    assert model.SerializeToString() == before


def test_a_graph_without_ensembles_is_left_alone() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    assert fold_constant_trees(helper.make_model(graph)) == 0
