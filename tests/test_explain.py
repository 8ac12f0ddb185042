"""Per-prediction explanations: additive, in the input's feature names, equal to the model's own
output, for every model type the project trains (mlservice.inference.explain)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.datasets import load_diabetes
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from mlservice.config import PreprocessingConfig
from mlservice.inference.explain import (
    Contributions,
    ExplanationUnavailable,
    build_explainer,
    source_columns,
)
from mlservice.models import build_estimator
from mlservice.pipelines import build_pipeline
from mlservice.training.frames import categorical_encodings, coerce_features
from tests.conftest import PENGUIN_ROW

pytest.importorskip("shap")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

#: Trees fed NaN directly (no imputation): the explanation must route it as the model does.
NO_IMPUTE = {"numeric": {"impute": "none", "scale": "none"}}


@dataclass(frozen=True)
class Data:
    X: pd.DataFrame
    y: np.ndarray
    types: dict[str, str]
    task: str


def _penguins(binary: bool = False) -> Data:
    """Penguins with their NaNs and categoricals, a constant column and a datetime column."""
    frame = load_penguins()
    species = frame.pop("species")
    frame["constant"] = 7.0
    days = pd.to_timedelta(np.arange(len(frame)) * 37 % 300, unit="D")
    frame["observed"] = pd.to_datetime(frame["year"].astype(str) + "-03-01") + days
    X, types = coerce_features(frame, {})  # noqa: N806 (categoricals as canonical strings)
    codes = pd.Categorical(species).codes.astype(np.int64)
    y = (codes == 0).astype(np.int64) if binary else codes
    return Data(X, y, types, "classification")


def _diabetes() -> Data:
    """Diabetes with NaNs injected, its sex as a categorical and a constant column."""
    frame = load_diabetes(as_frame=True).frame
    y = frame.pop("target").to_numpy(dtype=np.float64)
    frame.loc[frame.index % 7 == 0, "bmi"] = np.nan
    frame.loc[frame.index % 11 == 0, "s5"] = np.nan
    frame["sex"] = np.where(frame["sex"] > 0, "m", "f").astype(object)
    frame.loc[frame.index % 13 == 0, "sex"] = np.nan
    frame["constant"] = 7.0
    X, types = coerce_features(frame, {})  # noqa: N806
    return Data(X, y, types, "regression")


DATA = {"penguins": _penguins, "binary": lambda: _penguins(binary=True), "diabetes": _diabetes}


def _fit(data: Data, model: str, params: dict[str, Any], preprocessing: dict[str, Any]) -> Pipeline:
    """A pipeline built and fitted as training builds it (preprocessor, encodings, estimator)."""
    config = PreprocessingConfig.model_validate(preprocessing)
    encodings = categorical_encodings(data.X, data.types, config)
    estimator = build_estimator(model, data.task, params, seed=0)
    pipeline = build_pipeline(
        types=data.types, preprocessing=config, estimator=estimator, encodings=encodings, seed=0
    )
    return pipeline.fit(data.X, data.y)


def _reference(pipeline: Pipeline, X: pd.DataFrame, model: str, task: str) -> np.ndarray:  # noqa: N803
    """The model's own output, one column per class: what the explanation must add up to."""
    if task == "regression":
        return np.asarray(pipeline.predict(X), dtype=np.float64)[:, None]
    if model == "random_forest":
        return np.asarray(pipeline.predict_proba(X), dtype=np.float64)
    if model == "lightgbm":
        raw = pipeline.predict(X, raw_score=True)
    elif model == "xgboost":
        raw = pipeline.predict(X, output_margin=True)
    else:
        raw = pipeline.decision_function(X)
    raw = np.asarray(raw, dtype=np.float64)
    return np.column_stack([-raw, raw]) if raw.ndim == 1 else raw


CASES = [
    # (dataset, model, params, preprocessing, output)
    ("penguins", "logistic_regression", {}, {}, "raw"),
    ("binary", "logistic_regression", {}, {}, "log_odds"),
    ("diabetes", "ridge", {"alpha": 1.0}, {}, "raw"),
    ("penguins", "random_forest", {"n_estimators": 25}, NO_IMPUTE, "probability"),
    ("binary", "random_forest", {"n_estimators": 25}, NO_IMPUTE, "probability"),
    ("diabetes", "random_forest", {"n_estimators": 25}, NO_IMPUTE, "raw"),
    ("penguins", "hist_gradient_boosting", {"max_iter": 40}, NO_IMPUTE, "raw"),
    ("binary", "hist_gradient_boosting", {"max_iter": 40}, NO_IMPUTE, "log_odds"),
    ("diabetes", "hist_gradient_boosting", {"max_iter": 40}, NO_IMPUTE, "raw"),
    ("penguins", "lightgbm", {"n_estimators": 40}, NO_IMPUTE, "raw"),
    ("binary", "lightgbm", {"n_estimators": 40}, NO_IMPUTE, "log_odds"),
    ("diabetes", "lightgbm", {"n_estimators": 40}, NO_IMPUTE, "raw"),
    ("penguins", "xgboost", {"n_estimators": 40}, NO_IMPUTE, "raw"),
    ("binary", "xgboost", {"n_estimators": 40}, NO_IMPUTE, "log_odds"),
    ("diabetes", "xgboost", {"n_estimators": 40}, NO_IMPUTE, "raw"),
]


@pytest.fixture(scope="module")
def datasets() -> dict[str, Data]:
    return {name: make() for name, make in DATA.items()}


@pytest.mark.parametrize(
    ("dataset", "model", "params", "preprocessing", "output"),
    CASES,
    ids=[f"{c[1]}-{c[0]}" for c in CASES],
)
def test_contributions_add_up_to_the_models_own_output(
    datasets: dict[str, Data],
    dataset: str,
    model: str,
    params: dict[str, Any],
    preprocessing: dict[str, Any],
    output: str,
) -> None:
    data = datasets[dataset]
    pipeline = _fit(data, model, params, preprocessing)
    explainer = build_explainer(pipeline, data.X)
    result = explainer.explain_batch(data.X)

    # one entry per input feature of the request, whatever the encoders made of it
    assert result.features == tuple(data.X.columns)
    assert result.output == output
    reference = _reference(pipeline, data.X, model, data.task)
    assert result.values.shape == (len(data.X), data.X.shape[1], reference.shape[1])
    # additive and equal to the model's own output (XGBoost computes in float32: ~3e-7)
    scale = float(np.abs(reference).max())
    tolerance = 1e-6 if model == "xgboost" else 1e-9
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=tolerance * scale)
    # the constant column is never used: nothing is attributed to it
    assert np.abs(result.values[:, result.features.index("constant"), :]).max() < 1e-9 * scale
    # the prediction is the pipeline's, and the explained class is the predicted one
    predicted = pipeline.predict(data.X)
    if data.task == "classification":
        assert result.predictions == [int(c) for c in predicted]
        assert result.classes is not None
        assert [result.classes[k] for k in result.explained.tolist()] == result.predictions
    else:
        np.testing.assert_allclose(result.predictions, predicted, rtol=1e-9)


def test_nan_reaches_the_trees_and_is_routed_as_the_model_routes_it(
    datasets: dict[str, Data],
) -> None:
    data = datasets["penguins"]
    pipeline = _fit(data, "hist_gradient_boosting", {"max_iter": 30}, NO_IMPUTE)
    transformed = pipeline[0].transform(data.X)
    assert np.isnan(transformed).any(), "the fixture must feed NaN to the trees"
    rows = data.X[data.X["bill_length_mm"].isna() | data.X["sex"].isna()]
    assert len(rows) >= 5
    result = build_explainer(pipeline).explain_batch(rows)
    reference = _reference(pipeline, rows, "hist_gradient_boosting", "classification")
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=1e-9)


def test_a_feature_the_trees_never_split_on_gets_exactly_zero(datasets: dict[str, Data]) -> None:
    data = datasets["penguins"]
    pipeline = _fit(data, "hist_gradient_boosting", {"max_iter": 2, "max_depth": 1}, NO_IMPUTE)
    split_on = {
        int(node["feature_idx"])
        for iteration in pipeline[-1]._predictors
        for predictor in iteration
        for node in predictor.nodes
        if not node["is_leaf"]
    }
    names, sources = source_columns(pipeline[0])
    used = {names[sources[column]] for column in split_on}
    unused = [n for n in names if n not in used]
    assert used and unused
    result = build_explainer(pipeline).explain_batch(data.X)
    for name in unused:
        assert np.all(result.values[:, names.index(name), :] == 0.0), name
    assert all(np.abs(result.values[:, names.index(n), :]).max() > 0 for n in used)


@pytest.mark.parametrize(
    ("encodings", "widths"),
    [
        ({}, {"island": 3, "sex": 2}),  # one-hot
        ({"island": "target"}, {"island": 3, "sex": 2}),  # multiclass: one column per class
        ({"island": "ordinal", "sex": "ordinal"}, {"island": 1, "sex": 1}),
    ],
    ids=["onehot", "target", "ordinal"],
)
def test_expanded_columns_are_summed_back_to_their_source_feature(
    datasets: dict[str, Data], encodings: dict[str, str], widths: dict[str, int]
) -> None:
    """One-hot columns, a multiclass target encoder's per-class columns and a datetime's
    parts each map to their input column (checked here against the output names)."""
    data = datasets["penguins"]
    preprocessing = {"categorical": {"columns": encodings}}
    pipeline = _fit(data, "logistic_regression", {}, preprocessing)
    names, sources = source_columns(pipeline[0])
    out_names = pipeline[0].get_feature_names_out()
    counts = {n: int((sources == i).sum()) for i, n in enumerate(names)}
    assert counts == {**dict.fromkeys(names, 1), "observed": 5, **widths}  # 5 datetime parts
    for column, source in zip(out_names, sources, strict=True):
        assert column.split("__", 1)[1].startswith(names[source]), (column, names[source])
    # the linear contribution of each source is the sum over its transformed columns
    explainer = build_explainer(pipeline, data.X)
    result = explainer.explain_batch(data.X.iloc[:20])
    transformed = pipeline[0].transform(data.X.iloc[:20])
    mean = pipeline[0].transform(data.X).mean(axis=0)
    coef = pipeline[-1].coef_
    per_column = (transformed - mean)[:, :, None] * coef.T[None]
    island = [j for j, s in enumerate(sources) if names[s] == "island"]
    np.testing.assert_allclose(
        result.values[:, names.index("island"), :], per_column[:, island, :].sum(axis=1)
    )


def test_records_name_every_input_feature_and_add_up(datasets: dict[str, Data]) -> None:
    data = datasets["penguins"]
    pipeline = _fit(data, "lightgbm", {"n_estimators": 30}, NO_IMPUTE)
    labels = ["Adelie", "Chinstrap", "Gentoo"]
    explainer = build_explainer(pipeline, class_labels=labels)
    rows = data.X.iloc[[0, 3, 200, 300]]
    records = explainer.explain(rows, all_classes=True)
    predicted = [labels[int(c)] for c in pipeline.predict(rows)]
    assert [r["prediction"] for r in records] == predicted
    for record in records:
        assert record["class"] == record["prediction"] and record["output"] == "raw"
        assert list(record["contributions"]) == list(data.X.columns)
        total = record["base_value"] + sum(record["contributions"].values())
        assert total == pytest.approx(record["value"], abs=1e-9)
        assert set(record["classes"]) == set(labels)
        assert record["classes"][record["class"]]["value"] == record["value"]
        # the predicted class has the largest margin
        margins = {k: v["value"] for k, v in record["classes"].items()}
        assert max(margins, key=margins.__getitem__) == record["class"]
    json.dumps(records)  # JSON-ready: plain floats, strings


def test_linear_state_is_json_and_rebuilds_the_same_explainer(datasets: dict[str, Data]) -> None:
    data = datasets["binary"]
    pipeline = _fit(data, "logistic_regression", {}, {})
    built = build_explainer(pipeline, data.X)
    state = json.loads(json.dumps(built.state()))
    assert state["method"] == "linear" and len(state["mean"]) == pipeline[-1].coef_.shape[1]
    loaded = build_explainer(pipeline, state=state)
    rows = data.X.iloc[:50]
    np.testing.assert_array_equal(
        loaded.explain_batch(rows).values, built.explain_batch(rows).values
    )
    # the explained class's margin: log-odds of the predicted class
    record = loaded.explain(rows.iloc[:1])[0]
    margin = float(pipeline.decision_function(rows.iloc[:1])[0])
    assert record["value"] == pytest.approx(margin if record["class"] == 1 else -margin)


def test_a_linear_model_without_its_training_mean_is_unavailable(
    datasets: dict[str, Data],
) -> None:
    data = datasets["diabetes"]
    pipeline = _fit(data, "ridge", {}, {})
    with pytest.raises(ExplanationUnavailable, match="mean of its training inputs"):
        build_explainer(pipeline)
    with pytest.raises(ExplanationUnavailable, match="the mean has 3 values"):
        build_explainer(pipeline, state={"version": 1, "method": "linear", "mean": [0, 0, 0]})


def test_a_model_without_exact_attributions_is_unavailable_with_the_reason(
    datasets: dict[str, Data],
) -> None:
    data = datasets["penguins"]
    config = PreprocessingConfig()
    knn = build_pipeline(
        types=data.types, preprocessing=config, estimator=KNeighborsClassifier()
    ).fit(data.X, data.y)
    with pytest.raises(ExplanationUnavailable, match="KNeighborsClassifier") as caught:
        build_explainer(knn, data.X)
    assert "KNeighborsClassifier has no exact additive explanation" in caught.value.reason
    three_steps = Pipeline([*knn.steps[:1], ("again", "passthrough"), *knn.steps[1:]])
    with pytest.raises(ExplanationUnavailable, match="ColumnTransformer and an estimator"):
        build_explainer(three_steps, data.X)


def test_a_trained_bundle_is_explained_from_its_loaded_pipeline(trained_bundle: Path) -> None:
    """The penguins bundle of the test session (as shipped: skops-loaded, served frames)."""
    from mlservice.bundle import load_bundle
    from mlservice.inference import Predictor

    bundle = load_bundle(trained_bundle)
    predictor = Predictor.from_path(trained_bundle, runtime="sklearn")
    labels = bundle.metadata["target"]["classes"]
    explainer = build_explainer(bundle.pipeline, class_labels=labels)
    rows = [PENGUIN_ROW, {**PENGUIN_ROW, "sex": None, "bill_length_mm": 39.0, "island": "Dream"}]
    frame = predictor.to_frame(rows)
    result = explainer.explain_batch(frame)
    assert set(result.features) == set(predictor.feature_names)
    reference = _reference(bundle.pipeline, frame, "random_forest", "classification")
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=1e-9)
    answers = predictor.predict_records(rows)
    assert result.predictions == [a["prediction"] for a in answers]
    for i, answer in enumerate(answers):
        explained = result.outputs[i, result.explained[i]]
        assert explained == pytest.approx(answer["confidence"], abs=1e-9)


def test_global_summary_and_beeswarm(datasets: dict[str, Data], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from mlservice.reports.explain_plots import beeswarm_plot, global_summary

    data = datasets["penguins"]
    pipeline = _fit(data, "hist_gradient_boosting", {"max_iter": 30}, NO_IMPUTE)
    result: Contributions = build_explainer(pipeline).explain_batch(data.X)
    summary = global_summary(result)
    assert [s["feature"] for s in summary] != [] and len(summary) == data.X.shape[1]
    mean_abs = [s["mean_abs"] for s in summary]
    assert mean_abs == sorted(mean_abs, reverse=True)
    assert sum(s["share"] for s in summary) == pytest.approx(1.0)
    by_name = {s["feature"]: s for s in summary}
    assert by_name["constant"]["mean_abs"] == 0.0
    assert by_name["flipper_length_mm"]["mean_abs"] > 0.1  # it separates Gentoo
    chosen = result.selected()
    assert by_name["bill_length_mm"]["mean_abs"] == pytest.approx(
        float(np.abs(chosen[:, result.features.index("bill_length_mm")]).mean())
    )
    assert len(global_summary(result, top=3)) == 3
    path = beeswarm_plot(result, data.X, tmp_path / "plots" / "explanations.png", top=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    with pytest.raises(ValueError, match="rows in frame"):
        beeswarm_plot(result, data.X.iloc[:5], tmp_path / "bad.png")


_LAYERING = """
import json, sys
import numpy as np, pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

FORBIDDEN = ("shap", "numba", "matplotlib", "IPython", "mlflow", "optuna", "lightgbm", "xgboost")

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN
                  or m.startswith(("mlservice.training", "mlservice.reports")))

from mlservice.inference.explain import build_explainer
report = {"after_import": loaded()}
rng = np.random.default_rng(0)
X = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
pre = ColumnTransformer([("numeric", "passthrough", ["a", "b"])])
model = RandomForestClassifier(n_estimators=5, random_state=0)
pipeline = Pipeline([("preprocess", pre), ("model", model)]).fit(X, X["a"] > 0)
report["rows"] = len(build_explainer(pipeline).explain(X.iloc[:3]))
report["after_explain"] = loaded()
print(json.dumps(report))
"""


def test_explaining_a_forest_loads_no_plotting_training_or_shap_package() -> None:
    """Serving builds the explainer: it may load shap's compiled kernel only, never ``shap``
    itself (whose import takes seconds and loads matplotlib, IPython and numba)."""
    result = subprocess.run(
        [sys.executable, "-c", _LAYERING], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"after_import": [], "rows": 3, "after_explain": ["shap._cext"]}
