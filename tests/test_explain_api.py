"""Explanations served: ``POST /api/v1/explain`` (and ``/batch``), ``predict --explain``, the card.

Bundles trained as users train them (the demo's HistGradientBoosting on penguins with its gaps,
served by ONNX; a ridge regressor); requests sent as users send them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins
from typer.testing import CliRunner

from mlservice.api.main import create_app
from mlservice.bundle import load_bundle, load_metadata
from mlservice.cli import app as cli_app
from mlservice.training import train
from tests.conftest import PENGUIN_ROW, make_config

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
            "sex", "year"]


@pytest.fixture(scope="module")
def hgb_bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    tmp = tmp_path_factory.mktemp("explain-hgb")
    config = make_config(
        tmp,
        **{
            "data.source": str(penguins_csv),
            "model": {"type": "hist_gradient_boosting", "params": {"max_iter": 60}},
        },
    )
    result = train(config, base_dir=tmp)
    assert load_metadata(result.bundle_path)["onnx"]["verified"] is True
    return result.bundle_path


def _rows(count: int) -> list[dict[str, Any]]:
    frame = load_penguins()[FEATURES].head(count)
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{**r, "year": int(r["year"])} for r in rows]


def _additive(answer: dict[str, Any]) -> None:
    total = answer["base_value"] + sum(answer["contributions"].values())
    assert math.isclose(total, answer["value"], rel_tol=1e-6, abs_tol=1e-9), answer
    assert set(answer["contributions"]) == set(FEATURES)


def test_explain_is_additive_and_matches_the_prediction(hgb_bundle: Path) -> None:
    rows = _rows(40)  # row 3 has every measurement missing
    with TestClient(create_app(hgb_bundle)) as client:
        single = client.post("/api/v1/explain", json={"features": PENGUIN_ROW})
        batch = client.post("/api/v1/explain/batch", json={"instances": rows})
        predicted = client.post("/api/v1/predict/batch", json={"instances": rows})
        every = client.post("/api/v1/explain?all_classes=true", json={"features": PENGUIN_ROW})
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["output"] == "raw" and body["model_version"] == "1.0.0"
    assert body["class"] == body["prediction"] == "Gentoo"
    _additive(body)
    assert batch.status_code == 200, batch.text
    explanations = batch.json()["explanations"]
    assert len(explanations) == 40
    for answer in explanations:
        _additive(answer)
    labels = [p["prediction"] for p in predicted.json()["predictions"]]
    assert [e["prediction"] for e in explanations] == labels
    classes = every.json()["classes"]
    assert set(classes) == {"Adelie", "Chinstrap", "Gentoo"}
    for one in classes.values():
        total = one["base_value"] + sum(one["contributions"].values())
        assert math.isclose(total, one["value"], rel_tol=1e-6, abs_tol=1e-9)


def test_explained_value_is_the_models_margin(hgb_bundle: Path) -> None:
    pipeline = load_bundle(hgb_bundle).pipeline
    rows = _rows(10)
    with TestClient(create_app(hgb_bundle)) as client:
        answers = client.post("/api/v1/explain/batch", json={"instances": rows}).json()
    frame = pd.DataFrame(rows).astype({"bill_length_mm": float})
    from mlservice.training.frames import coerce_features

    X, _ = coerce_features(frame[FEATURES], {})  # noqa: N806
    margins = pipeline.decision_function(X)
    classes = load_metadata(hgb_bundle)["target"]["classes"]  # class code k is classes[k]
    for answer, margin in zip(answers["explanations"], margins, strict=True):
        k = classes.index(answer["class"])
        assert math.isclose(answer["value"], float(margin[k]), rel_tol=1e-6, abs_tol=1e-9)


def test_explain_checks_the_body_like_predict(hgb_bundle: Path) -> None:
    with TestClient(create_app(hgb_bundle)) as client:
        bad = client.post("/api/v1/explain", json={"features": {**PENGUIN_ROW, "island": "Mars"}})
        missing = client.post("/api/v1/explain", json={"features": {"island": "Biscoe"}})
    assert bad.status_code == 422 and "island" in bad.json()["detail"]
    assert missing.status_code == 422 and "features.year: Field required" in missing.text


def test_regressor_is_explained(regression_bundle: Path) -> None:
    with TestClient(create_app(regression_bundle)) as client:
        features = client.get("/api/v1/model").json()["features"]
        row = {f["name"]: f["example"] for f in features}
        answer = client.post("/api/v1/explain", json={"features": row})
        predicted = client.post("/api/v1/predict", json={"features": row})
    body = answer.json()
    assert answer.status_code == 200, answer.text
    assert body["output"] == "raw"
    total = body["base_value"] + sum(body["contributions"].values())
    assert math.isclose(total, body["value"], rel_tol=1e-6)
    assert math.isclose(body["value"], predicted.json()["prediction"], rel_tol=1e-6)


def test_a_model_that_cannot_be_explained_is_501(tmp_path: Path) -> None:
    days = pd.date_range("2024-01-01", periods=300, freq="D")
    values = 50 + 0.1 * np.arange(300) + 5 * np.sin(np.arange(300) / 7.0)
    csv = tmp_path / "series.csv"
    pd.DataFrame({"day": days, "sales": values}).to_csv(csv, index=False)
    config = make_config(
        tmp_path,
        name="series",
        task="time_series",
        **{
            "data": {"source": str(csv), "target": "sales", "time_column": "day"},
            "model": {"type": "ridge", "params": {}},
            "time_series": {"lags": [1, 2, 7], "horizon": 1},
            "targets": {"mape": "< 50%"},
        },
    )
    bundle = train(config, base_dir=tmp_path).bundle_path
    with TestClient(create_app(bundle)) as client:
        row = {f["name"]: f["example"] for f in client.get("/api/v1/model").json()["features"]}
        answer = client.post("/api/v1/explain", json={"features": row})
    assert answer.status_code == 501
    assert "time_series models are not explained" in answer.json()["detail"]


def test_predict_explain_adds_contribution_columns(hgb_bundle: Path, tmp_path: Path) -> None:
    frame = load_penguins()[FEATURES].head(60)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli_app, ["predict", str(hgb_bundle), str(source), str(out),
                                          "--explain"])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    contrib = [f"contrib_{name}" for name in FEATURES]
    assert set(contrib) <= set(scored.columns)
    with TestClient(create_app(hgb_bundle)) as client:
        api = client.post("/api/v1/explain/batch", json={"instances": _rows(60)}).json()
    for i, answer in enumerate(api["explanations"]):
        for name in FEATURES:
            assert math.isclose(scored.loc[i, f"contrib_{name}"], answer["contributions"][name],
                                rel_tol=1e-6, abs_tol=1e-9)
        assert math.isclose(scored.loc[i, "contrib_base_value"], answer["base_value"],
                            rel_tol=1e-6, abs_tol=1e-9)


def test_card_has_the_global_summary(hgb_bundle: Path) -> None:
    meta = load_metadata(hgb_bundle)
    summary = meta["explain"]["summary"]
    assert {item["feature"] for item in summary} == set(FEATURES)
    assert summary[0]["mean_abs"] >= summary[-1]["mean_abs"]
    card = (hgb_bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Explicaciones (contribuciones aditivas)" in card
    assert "plots/explanations.png" in card
    assert (hgb_bundle / "plots" / "explanations.png").read_bytes()[:4] == b"\x89PNG"
