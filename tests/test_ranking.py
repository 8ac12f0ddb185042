"""task: ranking end to end on real grouped data shipped in installed packages.

- ``statsmodels.datasets.modechoice`` (Greene): 210 travellers (the query) each choosing one of
  4 travel modes (the candidates: air, train, bus, car); relevance = chosen (binary).
- ``vega_datasets.local_data.cars``: cars of each model year (the query); graded relevance 0..3
  = quartile of the car's fuel economy (Miles_per_Gallon) within its year; MPG itself is dropped.

Metrics against hand-computed ndcg/map, query-aware split and folds, LGBMRanker / XGBRanker /
pointwise baseline, and ``POST /api/v1/rank`` through the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import ndcg_score
from threadpoolctl import threadpool_limits

from mlservice.api import create_app
from mlservice.api.routes.forecast import build_forecast_router
from mlservice.bundle import load_bundle
from mlservice.errors import DataError
from mlservice.models import build_estimator, config_checks
from mlservice.training import train
from mlservice.training.evaluate import evaluate_bundle, make_cv
from mlservice.training.ranking import (
    map_at_k,
    ndcg_at_k,
    query_ids,
    query_sizes,
    ranking_fit_params,
)
from mlservice.training.train import _prepare_ranking
from tests.conftest import make_config

FEATURES = ["mode", "ttme", "invc", "invt", "gc", "hinc", "psize"]


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads make small fits ~10x slower on a busy 2-core box."""
    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def modechoice_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import statsmodels.api as sm

    frame = sm.datasets.modechoice.load_pandas().data
    frame["mode"] = frame["mode"].map({1.0: "air", 2.0: "train", 3.0: "bus", 4.0: "car"})
    frame = frame.astype({"individual": int, "choice": int})
    path = tmp_path_factory.mktemp("modechoice") / "modechoice.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vega_datasets import local_data

    cars = local_data.cars().dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)
    within_year = cars.groupby("Year")["Miles_per_Gallon"].rank(pct=True, method="first")
    cars["relevance"] = np.ceil(within_year * 4).astype(int) - 1  # quartile 0..3, 3 = best
    path = tmp_path_factory.mktemp("cars") / "cars.csv"
    cars.to_csv(path, index=False)
    return path


def _modechoice_config(tmp: Path, csv: Path, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "name": "travel-mode",
        "task": "ranking",
        "data": {"source": str(csv), "target": "choice", "group_column": "individual"},
        "model": {"type": "lightgbm", "params": {"n_estimators": 60, "min_child_samples": 5}},
        "ranking": {"k": 3},
        "targets": None,  # the task defaults: ndcg_at_k >= 0.7, map_at_k >= 0.5
    }
    settings.update(overrides)
    return make_config(tmp, **settings)


@pytest.fixture(scope="module")
def lgbm_run(tmp_path_factory: pytest.TempPathFactory, modechoice_csv: Path) -> Any:
    tmp = tmp_path_factory.mktemp("rank-lgbm")
    return train(_modechoice_config(tmp, modechoice_csv), base_dir=tmp)


@pytest.fixture(scope="module")
def client(lgbm_run: Any) -> Iterator[TestClient]:
    with TestClient(create_app(lgbm_run.bundle_path)) as test_client:
        yield test_client


def _candidates(csv: Path, individual: int) -> tuple[list[dict[str, Any]], list[int]]:
    frame = pd.read_csv(csv)
    rows = frame[frame["individual"] == individual]
    return rows[FEATURES].to_dict(orient="records"), rows["choice"].tolist()


# ------------------------------------------------------------------------------- metrics
def test_ndcg_and_map_match_a_hand_computed_case() -> None:
    # query a: grades [3, 2, 0, 1] scored [.1, .9, .8, .3] -> order: grade 2, 0, 1 (then 3)
    # query b: grades [0, 1] scored [.2, .7] -> the relevant one first: perfect
    # query c: no relevant candidate -> left out of both means
    y = [3, 2, 0, 1, 0, 1, 0, 0]
    scores = [0.1, 0.9, 0.8, 0.3, 0.2, 0.7, 0.5, 0.4]
    groups = ["a", "a", "a", "a", "b", "b", "c", "c"]
    dcg_a = 3 / np.log2(2) + 0 / np.log2(3) + 1 / np.log2(4)  # gains 2**g - 1 = 3, 0, 1
    idcg_a = 7 / np.log2(2) + 3 / np.log2(3) + 1 / np.log2(4)  # ideal order 3, 2, 1
    assert ndcg_at_k(y, scores, groups, k=3) == pytest.approx((dcg_a / idcg_a + 1.0) / 2)
    ap_a = (1 / 1 + 2 / 3) / 3  # hits at ranks 1 and 3; 3 relevant candidates
    assert map_at_k(y, scores, groups, k=3) == pytest.approx((ap_a + 1.0) / 2)
    # k = 1: query a's top is relevant (grade 2 of an ideal 3)
    assert ndcg_at_k(y, scores, groups, k=1) == pytest.approx((3 / 7 + 1.0) / 2)
    assert map_at_k(y, scores, groups, k=1) == pytest.approx(1.0)
    assert ndcg_at_k([0, 0], [1.0, 2.0], k=3) is None  # no relevant candidate anywhere


def test_binary_ndcg_equals_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((20, 6)) > 0.6).astype(int)
    y[:, 0] = 1  # every query has a relevant candidate
    scores = rng.random((20, 6))
    groups = np.repeat(np.arange(20), 6)
    ours = ndcg_at_k(y.ravel(), scores.ravel(), groups, k=4)
    assert ours == pytest.approx(ndcg_score(y, scores, k=4))  # 2**1 - 1 == 1: same gains


# ----------------------------------------------------------------------- queries, models
def test_query_ids_sizes_and_fit_params() -> None:
    groups = ["q2", "q2", "q1", "q1", "q1", "q3"]
    assert query_ids(groups).tolist() == [0, 0, 1, 1, 1, 2]
    assert query_sizes(groups).tolist() == [2, 3, 1]
    with pytest.raises(DataError, match="rows of query 'q2' are not contiguous"):
        query_sizes(["q2", "q1", "q2"])
    lgbm = build_estimator("lightgbm", "ranking", {}, seed=0)
    xgb = build_estimator("xgboost", "ranking", {}, seed=0)
    pointwise = build_estimator("hist_gradient_boosting", "ranking", {}, seed=0)
    assert type(pointwise).__name__ == "HistGradientBoostingRegressor"
    from sklearn.pipeline import Pipeline

    def params(model: Any) -> dict[str, Any]:
        return ranking_fit_params(Pipeline([("model", model)]), groups)

    assert params(lgbm)["model__group"].tolist() == [2, 3, 1]
    assert params(xgb)["model__qid"].tolist() == [0, 0, 1, 1, 1, 2]
    assert params(pointwise) == {}
    raw = {"task": "ranking", "model": {"type": "hist_gradient_boosting"}}
    assert config_checks(raw) == []


def test_no_query_is_in_both_train_and_test_nor_split_by_a_fold(
    tmp_path: Path, modechoice_csv: Path
) -> None:
    config = _modechoice_config(tmp_path, modechoice_csv)
    frame = pd.read_csv(modechoice_csv).sample(frac=1.0, random_state=0)  # shuffled rows
    data = _prepare_ranking(frame, config)
    assert data.queries is not None
    train_q, test_q = set(data.queries[data.train_idx]), set(data.queries[data.test_idx])
    assert not train_q & test_q
    assert len(test_q) == 42 and len(train_q) == 168  # 20% of 210 travellers
    assert query_sizes(data.queries[data.train_idx]).tolist() == [4] * 168  # contiguous
    splitter = make_cv("ranking", 3, seed=0, strategy="group")
    rows = data.train_idx
    for fit_rows, val_rows in splitter.split(rows, groups=data.queries[rows]):
        assert not set(data.queries[rows][fit_rows]) & set(data.queries[rows][val_rows])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"strategy": "random"}}, "task ranking is split by query"),
        ({"data": {"source": "X", "target": "invc", "group_column": "individual"}},
         "ranking target 'invc' must hold relevance grades 0..30"),
    ],
)
def test_ranking_data_errors(
    tmp_path: Path, modechoice_csv: Path, change: dict[str, Any], message: str
) -> None:
    if "data" in change:
        change["data"]["source"] = str(modechoice_csv)
    config = _modechoice_config(tmp_path, modechoice_csv, **change)
    with pytest.raises(DataError, match=message):
        train(config, base_dir=tmp_path)


# ------------------------------------------------------------------------ training cycle
def test_lambdarank_trains_gates_bundles_and_documents(lgbm_run: Any) -> None:
    meta = lgbm_run.metadata
    assert lgbm_run.gate.passed and lgbm_run.promoted
    test = meta["metrics"]["test"]
    assert set(test) == {"ndcg_at_k", "map_at_k"} == set(meta["metrics"]["cv"])
    assert test["ndcg_at_k"] >= 0.7 and test["map_at_k"] >= 0.5
    assert meta["ranking"]["approach"] == "listwise (LightGBM lambdarank)"
    assert meta["ranking"]["k"] == 3 and meta["ranking"]["relevance"]["binary"] is True
    assert (meta["split"]["n_train_queries"], meta["split"]["n_test_queries"]) == (168, 42)
    bundle = load_bundle(lgbm_run.bundle_path)
    ranker = bundle.pipeline.named_steps["model"]
    assert type(ranker).__name__ == "LGBMRanker" and ranker.objective_ == "lambdarank"
    assert bundle.metadata["feature_names"] == FEATURES
    card = (lgbm_run.bundle_path / "MODEL_CARD.md").read_text()
    assert f"| ndcg_at_k | {meta['metrics']['train']['ndcg_at_k']:.4f} |" in card
    assert "plots/feature_importance.png" in card
    importance = {row["feature"]: row["importance"] for row in meta["feature_importance"]}
    assert max(importance, key=lambda name: importance[name]) in {"ttme", "invt", "gc"}
    report = evaluate_bundle(lgbm_run.bundle_path, Path(meta["data"]["source"]))
    assert report["metrics"]["test"]["ndcg_at_k"] >= test["ndcg_at_k"] - 0.1


def test_xgb_ranker_on_graded_relevance(tmp_path: Path, cars_csv: Path) -> None:
    config = make_config(
        tmp_path,
        name="cars-by-year",
        task="ranking",
        data={"source": str(cars_csv), "target": "relevance", "group_column": "Year",
              "drop": ["Name", "Miles_per_Gallon"]},
        model={"type": "xgboost", "params": {"n_estimators": 40, "max_depth": 3}},
        ranking={"k": 10},
        targets={"ndcg_at_k": ">= 0.6"},
    )
    result = train(config, base_dir=tmp_path)
    meta = result.metadata
    assert result.gate.passed
    assert meta["ranking"]["relevance"] == {"grades": [0, 1, 2, 3], "binary": False}
    assert meta["ranking"]["approach"] == "listwise (XGBoost rank:ndcg)"
    assert meta["model"]["estimator"] == "xgboost.sklearn.XGBRanker"
    assert "Miles_per_Gallon" not in meta["feature_names"]  # the relevance source is not a feature
    assert meta["split"]["n_train_queries"] + meta["split"]["n_test_queries"] == 12


def test_pointwise_baseline(tmp_path: Path, modechoice_csv: Path) -> None:
    config = _modechoice_config(
        tmp_path, modechoice_csv, name="travel-mode-pointwise",
        model={"type": "hist_gradient_boosting", "params": {"n_estimators": 40}},
    )
    result = train(config, base_dir=tmp_path)
    meta = result.metadata
    assert meta["ranking"]["approach"] == "pointwise (regression on the relevance grade)"
    assert meta["model"]["estimator"] == (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor"
    )
    assert 0.3 < meta["metrics"]["test"]["ndcg_at_k"] <= 1.0


# ---------------------------------------------------------------------------------- API
def test_rank_one_query_orders_by_score(
    client: TestClient, lgbm_run: Any, modechoice_csv: Path
) -> None:
    candidates, chosen = _candidates(modechoice_csv, 7)
    response = client.post("/api/v1/rank", json={"candidates": candidates})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1.0.0"
    ranked = body["candidates"]
    assert sorted(c["index"] for c in ranked) == [0, 1, 2, 3]
    assert [c["rank"] for c in ranked] == [1, 2, 3, 4]
    scores = [c["score"] for c in ranked]
    assert scores == sorted(scores, reverse=True)
    pipeline = load_bundle(lgbm_run.bundle_path).pipeline
    expected = pipeline.predict(pd.DataFrame(candidates)[FEATURES])
    assert [c["score"] for c in sorted(ranked, key=lambda c: c["index"])] == pytest.approx(
        expected.tolist(), rel=1e-9
    )
    assert chosen[ranked[0]["index"]] == 1  # the mode this traveller took ranks first


def test_rank_a_batch_of_queries(client: TestClient, modechoice_csv: Path) -> None:
    first, _ = _candidates(modechoice_csv, 7)
    second, _ = _candidates(modechoice_csv, 200)
    single = client.post("/api/v1/rank", json={"candidates": second}).json()
    response = client.post("/api/v1/rank", json={"queries": [first, second[:2], second]})
    assert response.status_code == 200
    body = response.json()
    assert body["total_queries"] == 3
    assert [len(q["candidates"]) for q in body["queries"]] == [4, 2, 4]
    assert body["queries"][2]["candidates"] == single["candidates"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"candidates": []}, 422, "candidates: List should have at least 1 item"),
        ({"queries": [[]]}, 422, "queries.0: List should have at least 1 item"),
        ({}, 422, "send exactly one of 'candidates' (one query) or 'queries' (a batch)"),
        ({"candidates": [{"mode": "air"}]}, 422, "request is missing features"),
        ({"queries": [[{**dict.fromkeys(FEATURES, 1.0), "mode": "air"}],
                      [{**dict.fromkeys(FEATURES, 1.0), "mode": "ship"}]]},
         422, "query 1: feature 'mode' is not a known category, got 'ship'"),
    ],
)
def test_rank_errors(client: TestClient, body: Any, status: int, detail: str) -> None:
    response = client.post("/api/v1/rank", json=body)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_forecast_is_only_served_for_time_series_models(
    client: TestClient, lgbm_run: Any
) -> None:
    assert client.post("/api/v1/forecast", json={"history": [{}]}).status_code == 404
    # mounted anyway, the forecast router refuses a ranking model with a 400
    app = create_app(lgbm_run.bundle_path)
    app.include_router(build_forecast_router())
    with TestClient(app) as other:
        response = other.post("/api/v1/forecast", json={"history": [{"t": 1}]})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "model 'travel-mode' is a 'ranking' model; forecasts need a time_series model. "
        "Use POST /api/v1/predict"
    )


def test_rank_openapi_example_comes_from_the_bundle(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    examples = schema["paths"]["/api/v1/rank"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]
    row = examples["one_query"]["value"]["candidates"][0]
    assert list(row) == FEATURES
    assert client.post("/api/v1/rank", json=examples["batch"]["value"]).status_code == 200
