"""Real tables: categories coded as numbers, thousands of levels, 0/1 labels with gaps.

The data is what users have: a CSV with a zip code of integer codes, a store number, a 0/1
column with gaps (read as 0.0/1.0), a 0/1 target with gaps. Nothing is cast into the shape the
code expects before it reaches ``train``, the API or ``mlservice predict``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bench.real_tables import make_table
from fastapi.testclient import TestClient

from mlservice.api.main import create_app
from mlservice.api.settings import ApiSettings
from mlservice.bundle import load_metadata
from mlservice.categories import canonical_category, canonical_series
from mlservice.config import parse_config
from mlservice.inference import Predictor
from mlservice.inference.batch import score_file
from mlservice.training import train
from tests.conftest import make_config

ROWS = 6_000
LEVELS = 600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Biscoe", "Biscoe"),
        ("007", "007"),  # a string is never re-read as a number
        (123, "123"),
        (np.int64(123), "123"),
        (123.0, "123"),
        (np.float32(123.0), "123"),
        (1.5, "1.5"),
        (True, "True"),
        (np.bool_(False), "False"),
        (None, None),
        (math.nan, None),
    ],
)
def test_canonical_category(value: Any, expected: Any) -> None:
    assert canonical_category(value) == expected


def test_canonical_series_matches_the_scalar_form() -> None:
    columns = [
        pd.Series([1, 2, 3]),
        pd.Series([1.0, np.nan, 3.0]),
        pd.Series([1, None, 3], dtype="Int64"),
        pd.Series([True, False, None], dtype=object),
        pd.Series([True, False]),
        pd.Series(["a", None, "b"]),
        pd.Series([0.5, 2.0, np.nan]),
    ]
    for column in columns:
        out = canonical_series(column)
        expected = [canonical_category(v) for v in column.astype(object)]
        assert [None if pd.isna(v) else v for v in out] == [
            None if (v is None or v is pd.NA) else v for v in expected
        ], column.tolist()


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = make_table(ROWS, levels=LEVELS)
    frame.loc[frame.index[::97], "sold"] = np.nan  # gaps in the target: read as float
    path = tmp_path_factory.mktemp("table") / "table.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def table_bundle(table_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("table-train")
    config = make_config(
        tmp,
        name="real-table",
        **{
            "data": {
                "source": str(table_csv),
                "target": "sold",
                "column_types": {
                    "zip": "categorical",
                    "store": "categorical",
                    "garage": "categorical",
                },
            },
            "model": {"type": "hist_gradient_boosting", "params": {"max_iter": 60}},
            "targets": {"roc_auc": ">= 0.6"},
            "preprocessing": {"categorical": {"max_onehot_levels": 20}},
        },
    )
    result = train(config, base_dir=tmp)
    assert result.gate.passed, result.gate
    return result.bundle_path


def test_encoding_is_chosen_by_cardinality_and_recorded(table_bundle: Path) -> None:
    meta = load_metadata(table_bundle)
    assert meta["preprocessing"]["categories"] == "canonical"
    assert meta["preprocessing"]["encodings"] == {
        "zip": "target", "store": "onehot", "garage": "onehot",
    }
    features = {f["name"]: f for f in meta["features"]}
    assert features["zip"]["open"] is True
    assert features["store"].get("open", False) is False
    assert all(isinstance(c, str) for c in features["store"]["categories"])
    assert features["garage"]["categories"] == ["0", "1"]
    card = (table_bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "zip" in card and "target" in card.lower()


def test_high_cardinality_model_is_served_by_onnx(table_bundle: Path) -> None:
    meta = load_metadata(table_bundle)
    assert meta["onnx"]["verified"] is True, meta["onnx"]
    assert Predictor.from_path(table_bundle).runtime == "onnx"


def test_integer_labels_stay_integers(table_bundle: Path) -> None:
    meta = load_metadata(table_bundle)
    assert meta["target"]["classes"] == [0, 1]
    with TestClient(create_app(table_bundle)) as client:
        row = {"zip": 1003, "store": 4, "garage": 1, "area_m2": 80.5, "age": 30}
        answer = client.post("/api/v1/predict", json={"features": row}).json()
    assert answer["prediction"] in (0, 1) and type(answer["prediction"]) is int
    assert set(answer["probabilities"]) == {"0", "1"}


def _rows(csv: Path, count: int) -> pd.DataFrame:
    frame = pd.read_csv(csv).drop(columns=["sold"]).head(count)
    return frame


def _json_row(row: pd.Series, as_string: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if pd.isna(value):
            out[str(name)] = None
        elif name in ("zip", "store", "garage"):
            number = int(value)
            out[str(name)] = str(number) if as_string else number
        else:
            out[str(name)] = float(value)
    return out


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_api_and_offline_agree_with_codes_as_numbers_and_strings(
    table_bundle: Path, table_csv: Path, tmp_path: Path, fast_path: bool
) -> None:
    rows = _rows(table_csv, 200)
    source = tmp_path / "in.csv"
    rows.to_csv(source, index=False)
    score_file(Predictor.from_path(table_bundle), source, tmp_path / "out.csv")
    offline = pd.read_csv(tmp_path / "out.csv")
    settings = ApiSettings(bundle_path=table_bundle, fast_path=fast_path)
    with TestClient(create_app(table_bundle, settings)) as client:
        answers = {}
        for as_string in (False, True):
            body = {"instances": [_json_row(r, as_string) for _, r in rows.iterrows()]}
            reply = client.post("/api/v1/predict/batch", json=body)
            assert reply.status_code == 200, reply.text
            answers[as_string] = reply.json()["predictions"]
        single = client.post(
            "/api/v1/predict", json={"features": _json_row(rows.iloc[0], False)}
        ).json()
    proba = {k: np.array([a["probabilities"]["1"] for a in v]) for k, v in answers.items()}
    np.testing.assert_allclose(proba[False], proba[True], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(proba[False], offline["proba_1"], rtol=1e-6, atol=1e-6)
    assert math.isclose(single["probabilities"]["1"], proba[False][0], rel_tol=1e-6)
    assert len(set(np.round(proba[False], 6))) > 20, "the zip must change the answer"


def test_unknown_zip_is_the_encoders_answer_unknown_store_is_422(table_bundle: Path) -> None:
    row = {"zip": 99_999_999, "store": 4, "garage": 0, "area_m2": 80.0, "age": 30.0}
    with TestClient(create_app(table_bundle)) as client:
        unseen = client.post("/api/v1/predict", json={"features": row})
        bad_store = client.post("/api/v1/predict", json={"features": {**row, "store": 99}})
        schema = client.get("/openapi.json").json()
    assert unseen.status_code == 200
    assert bad_store.status_code == 422
    assert "store" in bad_store.json()["detail"]
    zip_schema = schema["components"]["schemas"]["Features"]["properties"]["zip"]
    assert "enum" not in str(zip_schema)  # no enum of hundreds of values in /docs
    store_schema = str(schema["components"]["schemas"]["Features"]["properties"]["store"])
    assert "'4'" in store_schema and " 4," in store_schema  # both forms listed


def test_multiclass_target_encoding_exports(
    penguins_csv: Path, tmp_path: Path
) -> None:
    config = make_config(
        tmp_path,
        **{
            "data.source": str(penguins_csv),
            "model": {"type": "hist_gradient_boosting", "params": {"max_iter": 40}},
            "preprocessing": {"categorical": {"columns": {"island": "target"}}},
        },
    )
    result = train(config, base_dir=tmp_path)
    meta = load_metadata(result.bundle_path)
    assert meta["preprocessing"]["encodings"] == {"island": "target", "sex": "onehot"}
    assert meta["onnx"]["verified"] is True, meta["onnx"]


def test_encode_choices_are_validated() -> None:
    raw = {
        "name": "t", "task": "classification",
        "data": {"source": "builtin:iris", "target": "target"},
        "preprocessing": {"categorical": {"encode": "hashing", "columns": {"a": "onehto"}}},
    }
    with pytest.raises(Exception) as caught:
        parse_config(raw)
    text = str(caught.value)
    assert "preprocessing.categorical.encode" in text
    assert "preprocessing.categorical.columns.a" in text


def test_eda_names_the_encoding_training_will_choose() -> None:
    from mlservice.config import PreprocessingConfig
    from mlservice.reports.eda import build_eda_report

    frame = make_table(3_000, levels=400)
    types = {"zip": "categorical", "store": "categorical", "garage": "categorical"}
    report = build_eda_report(frame, target="sold", task="classification", types=types)
    (warning,) = report.warnings_of("high_cardinality")
    assert warning.column == "zip"
    assert "training will target-encode it" in warning.message
    forced = PreprocessingConfig.model_validate({"categorical": {"columns": {"zip": "onehot"}}})
    report = build_eda_report(
        frame, target="sold", task="classification", types=types, preprocessing=forced
    )
    (warning,) = report.warnings_of("high_cardinality")
    assert "is set to one-hot" in warning.message
