"""Tests of mlservice.inference.Predictor on real bundles (penguins classifier, diabetes ridge)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mlservice.bundle import Bundle
from mlservice.config import PreprocessingConfig
from mlservice.data import build_feature_specs
from mlservice.errors import SchemaError
from mlservice.inference import Predictor
from mlservice.pipelines import build_pipeline
from tests.conftest import PENGUIN_ROW

GOOD_ROW: dict[str, Any] = PENGUIN_ROW


@pytest.fixture(scope="module")
def clf(trained_bundle: Path) -> Predictor:
    return Predictor.from_path(trained_bundle)


@pytest.fixture(scope="module")
def reg(regression_bundle: Path) -> Predictor:
    return Predictor.from_path(regression_bundle)


def _records(frame: pd.DataFrame, names: tuple[str, ...]) -> list[dict[str, Any]]:
    sub = frame[list(names)].astype(object)
    return sub.where(sub.notna(), None).to_dict(orient="records")


class _CountingModel:
    """Wraps the real pipeline and counts calls (one call per request is the contract)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.calls = 0

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        self.calls += 1
        return np.asarray(self.inner.predict_proba(X))


class _NanModel:
    """Wraps the real pipeline; its first row comes out as NaN (a broken model output)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = getattr(inner, "classes_", None)

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        proba = np.asarray(self.inner.predict_proba(X), dtype=float)
        proba[0, :] = np.nan
        return proba

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        values = np.asarray(self.inner.predict(X), dtype=float)
        values[0] = np.nan
        values[1] = np.inf
        return values


def test_classifier_labels_and_probabilities(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    results = clf.predict_records(_records(penguins_frame.head(40), clf.feature_names))
    assert len(results) == 40
    classes = {"Adelie", "Chinstrap", "Gentoo"}
    for result in results:
        assert result["prediction"] in classes
        probabilities = result["probabilities"]
        assert set(probabilities) == classes
        assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-9)
        assert result["confidence"] == max(probabilities.values())
        assert result["prediction"] == max(probabilities, key=probabilities.get)
        assert result["interval"] is None


def test_predictions_match_the_pipeline(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    frame = penguins_frame.dropna().head(60)
    ours = [r["prediction"] for r in clf.predict_frame(frame)]
    codes = clf.bundle.pipeline.predict(frame[list(clf.feature_names)])
    assert ours == [clf.classes[int(c)] for c in codes]  # type: ignore[index]
    assert sum(o == t for o, t in zip(ours, frame["species"], strict=True)) >= 55


def test_one_row_equals_row_i_of_the_batch(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    rows = _records(penguins_frame, clf.feature_names)
    batch = clf.predict_records(rows)
    for i in (0, 3, 150, len(rows) - 1):  # row 3 has missing values
        single = clf.predict_one(rows[i])
        assert single["prediction"] == batch[i]["prediction"]
        assert single["probabilities"] == pytest.approx(batch[i]["probabilities"], rel=1e-12)


def test_positional_equals_named(clf: Predictor) -> None:
    positional = [GOOD_ROW[name] for name in clf.feature_names]
    assert clf.predict_one(positional) == clf.predict_one(GOOD_ROW)
    assert clf.predict_one(GOOD_ROW)["prediction"] == "Gentoo"


def test_predict_frame_equals_predict_records(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    frame = penguins_frame.head(25)
    assert clf.predict_frame(frame) == clf.predict_records(_records(frame, clf.feature_names))


def test_one_pipeline_call_per_request(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    counting = _CountingModel(clf.bundle.pipeline)
    wrapped = Predictor(Bundle(clf.bundle.path, clf.metadata, counting))
    results = wrapped.predict_records(_records(penguins_frame.head(200), clf.feature_names))
    assert len(results) == 200
    assert counting.calls == 1


def test_omitted_nullable_feature_is_missing(clf: Predictor) -> None:
    row = {k: v for k, v in GOOD_ROW.items() if k != "sex"}
    assert clf.predict_one(row) == clf.predict_one({**GOOD_ROW, "sex": None})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"island": "Biscoe2"}, r"feature 'island' is not a known category, got 'Biscoe2'; "
                                r"expected one of \['Biscoe', 'Dream', 'Torgersen'\]"),
        ({"bill_length_mm": "abc"}, r"feature 'bill_length_mm' must be a number, got 'abc'"),
        ({"bill_length_mm": "3"}, r"feature 'bill_length_mm' must be a number, got '3'"),
        ({"bill_length_mm": True}, r"feature 'bill_length_mm' must be a number, got True"),
        ({"body_mass_g": math.inf}, r"feature 'body_mass_g' must be a finite number, got inf"),
        ({"body_mass_g": 1e300}, r"feature 'body_mass_g' must be a finite number"),
        ({"island": None}, r"feature 'island' must not be null; it had no missing values"),
        ({"year": math.nan}, r"feature 'year' must not be null"),
        ({"wings": 2}, r"^request has unknown features \['wings'\]\. See GET /api/v1/model"),
        ({"islnd": "Dream"}, r"unknown features \['islnd'\] \(did you mean 'island' for 'islnd'"),
        ({"island": ["Biscoe"]}, r"feature 'island' is not a known category"),
    ],
)
def test_bad_values_name_the_field(clf: Predictor, change: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        clf.predict_one({**GOOD_ROW, **change})


def test_missing_feature_is_named(clf: Predictor) -> None:
    row = {k: v for k, v in GOOD_ROW.items() if k not in ("island", "year")}
    with pytest.raises(SchemaError, match=r"missing features \['island', 'year'\]"):
        clf.predict_one(row)


def test_wrong_positional_length_names_count_and_order(clf: Predictor) -> None:
    with pytest.raises(SchemaError, match=r"expected 7 values in the order \['island', "):
        clf.predict_one(["Biscoe", 45.1])


@pytest.mark.parametrize("rows", [[], "island", {"island": "Biscoe"}, [42]])
def test_malformed_row_lists_are_refused(clf: Predictor, rows: Any) -> None:
    with pytest.raises(SchemaError, match=r"rows?"):
        clf.predict_records(rows)


def test_batch_errors_name_the_row(clf: Predictor) -> None:
    rows = [GOOD_ROW, {**GOOD_ROW, "sex": "unknown"}]
    with pytest.raises(SchemaError, match=r"^row 1, feature 'sex' is not a known category"):
        clf.predict_records(rows)


def test_regression_interval_contains_prediction(reg: Predictor) -> None:
    halfwidth = reg.metadata["interval"]["halfwidth"]
    rows = [[0.01 * i] * len(reg.feature_names) for i in range(-5, 5)]
    results = reg.predict_records(rows)
    for result in results:
        low, high = result["interval"]
        assert isinstance(result["prediction"], float)
        assert low < result["prediction"] < high
        assert high - low == pytest.approx(2 * halfwidth)
        assert result["probabilities"] is None and result["confidence"] is None


def test_nan_model_output_becomes_none(clf: Predictor, penguins_frame: pd.DataFrame) -> None:
    broken = Predictor(Bundle(clf.bundle.path, clf.metadata, _NanModel(clf.bundle.pipeline)))
    results = broken.predict_records(_records(penguins_frame.head(3), clf.feature_names))
    assert results[0] == {
        "prediction": None,
        "confidence": None,
        "probabilities": {"Adelie": None, "Chinstrap": None, "Gentoo": None},
        "interval": None,
    }
    assert results[1]["prediction"] == "Adelie"
    json.dumps(results, allow_nan=False)  # raises ValueError on any NaN/inf left


def test_nan_regression_output_becomes_none(reg: Predictor) -> None:
    broken = Predictor(Bundle(reg.bundle.path, reg.metadata, _NanModel(reg.bundle.pipeline)))
    results = broken.predict_records([[0.0] * len(reg.feature_names)] * 3)
    assert [r["prediction"] for r in results[:2]] == [None, None]
    assert [r["interval"] for r in results[:2]] == [None, None]
    assert isinstance(results[2]["prediction"], float)
    json.dumps(results, allow_nan=False)


@pytest.fixture(scope="module")
def mixed_types() -> Predictor:
    """A real fitted pipeline over every column type (datetime, boolean, text too)."""
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
            "flag": rng.integers(0, 2, n).astype(bool),
            "note": [f"a long free text note about item number {i} and more" for i in range(n)],
            "size": rng.normal(size=n),
            "color": rng.choice(["red", "blue"], n).astype(object),
        }
    )
    frame.loc[3, "size"] = np.nan
    types = {"when": "datetime", "flag": "boolean", "note": "text", "size": "numeric",
             "color": "categorical"}
    y = (frame["flag"]).astype(int).to_numpy()
    pipeline = build_pipeline(types=types, preprocessing=PreprocessingConfig(),
                              estimator=LogisticRegression(max_iter=2000))
    pipeline.fit(frame, y)
    specs = [s.to_dict() for s in build_feature_specs(frame, types)]
    metadata = {"name": "mixed", "version": "0.1.0", "task": "classification",
                "target": {"name": "y", "classes": ["no", "yes"]}, "features": specs,
                "feature_names": list(frame.columns)}
    return Predictor(Bundle(Path("mixed"), metadata, pipeline))


def test_every_column_type_is_coerced(mixed_types: Predictor) -> None:
    row = {"when": "2024-02-03T10:00:00+02:00", "flag": True, "note": "hello there",
           "size": None, "color": "red"}
    frame = mixed_types.to_frame([row])
    assert frame.loc[0, "when"] == pd.Timestamp("2024-02-03T08:00:00")
    assert frame["flag"].dtype == bool
    assert math.isnan(frame.loc[0, "size"])
    result = mixed_types.predict_one(row)
    assert result["prediction"] == "yes"
    assert result["probabilities"]["yes"] > 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"when": "not a date"}, r"feature 'when' is not a valid date/time, got 'not a date'"),
        ({"when": 5}, r"feature 'when' must be a date/time, got 5"),
        ({"flag": "yes"}, r"feature 'flag' must be true or false, got 'yes'"),
        ({"note": 3.5}, r"feature 'note' must be a string, got 3.5"),
    ],
)
def test_mixed_types_refuse_bad_values(
    mixed_types: Predictor, change: dict[str, Any], message: str
) -> None:
    row = {"when": "2024-02-03", "flag": False, "note": "x", "size": 1.0, "color": "blue",
           **change}
    with pytest.raises(SchemaError, match=message):
        mixed_types.predict_one(row)


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integer_beyond_float_range_is_refused(clf: Predictor, value: int) -> None:
    with pytest.raises(SchemaError, match=r"feature 'body_mass_g' must be a finite number"):
        clf.predict_one({**GOOD_ROW, "body_mass_g": value})
