"""task: time_series end to end on real series shipped in installed packages.

- single series: Mauna Loa CO2 (``statsmodels.datasets.co2``), weekly 1958-2001, as monthly means;
- grouped: monthly closing prices of 5 stocks (``vega_datasets.local_data.stocks``).

Features only from the past (leakage tests), the time split and its purge, metrics by hand, the
naive last-value baseline in metrics and card, and ``POST /api/v1/forecast`` through the app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits

import mlservice.bundle
from mlservice.api import create_app
from mlservice.api.routes.rank import build_rank_router
from mlservice.bundle import load_bundle
from mlservice.config import TASK_METRICS
from mlservice.errors import DataError, SchemaError
from mlservice.inference.forecast import Forecaster, example_request
from mlservice.pipelines.timeseries import DeltaRegressor, SeriesSpec, add_series_features
from mlservice.training import train
from mlservice.training.evaluate import compute_metrics, evaluate_bundle, naive_metrics
from mlservice.training.timeseries import purge_before_test, series_rows, time_folds
from tests.conftest import make_config

DELTA_TYPE = "mlservice.pipelines.timeseries.DeltaRegressor"
NAIVE_KEYS = {f"naive_{m}" for m in TASK_METRICS["time_series"]}
SYMBOLS = ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]


@pytest.fixture(scope="module", autouse=True)
def _trust_delta_regressor() -> Iterator[None]:
    """Until ``mlservice.bundle.TRUSTED_TYPES`` lists DeltaRegressor (then this does nothing)."""
    with pytest.MonkeyPatch.context() as patch:
        if DELTA_TYPE not in mlservice.bundle.TRUSTED_TYPES:
            patch.setattr(
                mlservice.bundle, "TRUSTED_TYPES", mlservice.bundle.TRUSTED_TYPES | {DELTA_TYPE}
            )
        yield


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads make small fits ~10x slower on a busy 2-core box."""
    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def co2_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monthly means of the weekly Mauna Loa CO2 record; the 3 months without any weekly
    measurement are interpolated linearly so the series is evenly spaced."""
    import statsmodels.api as sm

    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate()
    path = tmp_path_factory.mktemp("co2") / "co2.csv"
    monthly.rename_axis("month").reset_index().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def stocks_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monthly prices of AAPL, AMZN, GOOG (from 2004), IBM and MSFT, 2000-2010."""
    from vega_datasets import local_data

    path = tmp_path_factory.mktemp("stocks") / "stocks.csv"
    local_data.stocks().to_csv(path, index=False)
    return path


def _co2_config(tmp: Path, csv: Path, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "name": "co2-monthly",
        "task": "time_series",
        "data": {"source": str(csv), "target": "co2", "time_column": "month"},
        "model": {"type": "hist_gradient_boosting", "params": {"n_estimators": 60}},
        "time_series": {"lags": [1, 2, 3, 12], "rolling": [3], "horizon": 1},
        "targets": None,  # the task defaults: mape < 10%, directional_accuracy >= 60%
    }
    settings.update(overrides)
    return make_config(tmp, **settings)


@pytest.fixture(scope="module")
def co2_run(tmp_path_factory: pytest.TempPathFactory, co2_csv: Path) -> Any:
    tmp = tmp_path_factory.mktemp("co2-run")
    return train(_co2_config(tmp, co2_csv), base_dir=tmp)


@pytest.fixture(scope="module")
def stocks_run(tmp_path_factory: pytest.TempPathFactory, stocks_csv: Path) -> Any:
    tmp = tmp_path_factory.mktemp("stocks-run")
    config = make_config(
        tmp,
        name="stocks-monthly",
        task="time_series",
        data={"source": str(stocks_csv), "target": "price", "time_column": "date",
              "group_column": "symbol"},
        model={"type": "ridge", "params": {"alpha": 1.0}},
        time_series={"lags": [1, 2, 3], "rolling": [6], "horizon": 2},
        targets={"mape": "< 25%"},
    )
    return train(config, base_dir=tmp)


@pytest.fixture(scope="module")
def co2_client(co2_run: Any) -> Iterator[TestClient]:
    with TestClient(create_app(co2_run.bundle_path)) as client:
        yield client


@pytest.fixture(scope="module")
def stocks_client(stocks_run: Any) -> Iterator[TestClient]:
    with TestClient(create_app(stocks_run.bundle_path)) as client:
        yield client


def _history(frame: pd.DataFrame, time_col: str) -> list[dict[str, Any]]:
    rows = frame.to_dict(orient="records")
    return [{**row, time_col: pd.Timestamp(row[time_col]).isoformat()} for row in rows]


# ------------------------------------------------------------------------- features, leakage
def test_lags_rolling_and_calendar_by_hand() -> None:
    frame = pd.DataFrame(
        {"t": pd.date_range("2024-01-01", periods=6, freq="MS"), "y": [10.0, 11, 12, 13, 14, 15]}
    )
    spec = SeriesSpec.create(target="y", time_column="t", horizon=2, lags=[2], rolling=[2],
                             calendar=("month",))
    got = add_series_features(frame.iloc[::-1], spec).sort_index()  # any row order works
    assert spec.lags == (1, 2)  # lag 1 (the last known value) is always there
    assert spec.min_history == 3
    row = got.loc[4]  # t = 2024-05: forecast from the origin 2024-03 (horizon 2)
    assert row["lag_1"] == 12.0 and row["lag_2"] == 11.0
    assert row["rolling_mean_2"] == 11.5
    assert row["rolling_std_2"] == pytest.approx(np.std([11, 12], ddof=1))
    assert row["calendar_month"] == 5.0
    assert got.loc[:2, "lag_2"].isna().all() and got.loc[3:, "lag_2"].notna().all()


@pytest.mark.parametrize("horizon", [1, 3])
def test_features_never_see_their_own_or_future_targets(co2_csv: Path, horizon: int) -> None:
    frame = pd.read_csv(co2_csv, parse_dates=["month"])
    spec = SeriesSpec.create(target="co2", time_column="month", horizon=horizon,
                             lags=[1, 2, 12], rolling=[3, 6], calendar=("month",))
    before = add_series_features(frame, spec)
    t0 = 300
    perturbed = frame.copy()
    perturbed.loc[t0:, "co2"] = perturbed.loc[t0:, "co2"] * 10 + 1.0
    after = add_series_features(perturbed, spec)
    # row t uses targets up to t - horizon: rows before t0 + horizon cannot change
    pd.testing.assert_frame_equal(before.iloc[: t0 + horizon], after.iloc[: t0 + horizon])
    # ...and the check has teeth: the first row allowed to see the change does see it
    assert after.loc[t0 + horizon, "lag_1"] == perturbed.loc[t0, "co2"]
    assert before.loc[t0 + horizon, "lag_1"] != after.loc[t0 + horizon, "lag_1"]


def test_grouped_features_stay_within_their_series(stocks_csv: Path) -> None:
    frame = pd.read_csv(stocks_csv, parse_dates=["date"])
    spec = SeriesSpec.create(target="price", time_column="date", horizon=1, lags=[1, 3],
                             rolling=[6], group_column="symbol")
    before = add_series_features(frame, spec)
    perturbed = frame.copy()
    late_msft = (perturbed["symbol"] == "MSFT") & (perturbed["date"] >= "2008-01-01")
    perturbed.loc[late_msft, "price"] = 1e6
    after = add_series_features(perturbed, spec)
    untouched = (frame["symbol"] != "MSFT") | (frame["date"] <= "2008-01-01")
    pd.testing.assert_frame_equal(before[untouched], after[untouched])
    assert (after.loc[late_msft & (frame["date"] > "2008-01-01"), "lag_1"] == 1e6).all()
    first_goog = frame.index[frame["symbol"] == "GOOG"][0]
    assert np.isnan(before.loc[first_goog, "lag_1"])  # no lag taken across series


def test_delta_regressor_extrapolates_a_trend_a_tree_cannot() -> None:
    steps = np.arange(60, dtype=float)
    X = pd.DataFrame({"lag_1": steps[:-1]})  # noqa: N806
    y = steps[1:]  # y[t] = y[t-1] + 1
    future = pd.DataFrame({"lag_1": [200.0]})
    plain = DecisionTreeRegressor(random_state=0).fit(X, y)
    delta = DeltaRegressor(DecisionTreeRegressor(random_state=0)).fit(X, y)
    assert plain.predict(future)[0] == 59.0  # capped at the largest training target
    assert delta.predict(future)[0] == 201.0
    with pytest.raises(ValueError, match="reference column 'lag_1'"):
        delta.predict(np.array([[1.0]]))


# ----------------------------------------------------------------------------- split, CV
def test_time_split_purge_and_folds_follow_time(stocks_csv: Path) -> None:
    from mlservice.data import split_indices

    frame = pd.read_csv(stocks_csv, parse_dates=["date"])
    times = frame["date"]
    train_idx, test_idx = split_indices(len(frame), strategy="time", test_size=0.2, seed=0,
                                        time=times)
    assert times.iloc[train_idx].max() < times.iloc[test_idx].min()  # no timestamp split
    kept, purged = purge_before_test(train_idx, test_idx, times, horizon=3)
    steps = sorted(times.iloc[train_idx].unique())
    assert times.iloc[kept].max() == steps[-3]  # the last 2 = horizon - 1 steps left out
    assert purged == int((times.iloc[train_idx] > steps[-3]).sum())
    folds = time_folds(times.iloc[kept].reset_index(drop=True), 3, gap=2)
    assert len(folds) == 3
    kept_times = times.iloc[kept].reset_index(drop=True)
    for fit_rows, val_rows in folds:
        last_fit = kept_times.iloc[fit_rows].max()
        first_val = kept_times.iloc[val_rows].min()
        between = kept_times[(kept_times > last_fit) & (kept_times < first_val)].unique()
        assert len(between) == 2  # gap = horizon - 1 time steps


def test_time_series_metrics_by_hand() -> None:
    y = np.array([10.0, 12.0, 11.0, 13.0])
    pred = np.array([11.0, 11.5, 12.0, 12.5])
    origin = np.array([9.0, 10.0, 12.0, 11.0])
    got = compute_metrics("time_series", y, pred, reference=origin)
    assert list(got) == list(TASK_METRICS["time_series"])
    # changes vs origin: actual + + - +, predicted + + 0 + -> 3 of 4
    assert got["directional_accuracy"] == 0.75
    assert got["mae"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert got["rmse"] == pytest.approx(np.sqrt((1 + 0.25 + 1 + 0.25) / 4))
    assert got["mape"] == pytest.approx(np.mean([1 / 10, 0.5 / 12, 1 / 11, 0.5 / 13]))
    naive = naive_metrics(y, origin)
    assert set(naive) == NAIVE_KEYS
    assert naive["naive_mae"] == pytest.approx((1 + 2 + 1 + 2) / 4)
    assert naive["naive_directional_accuracy"] == 0.0  # no change predicted, all changed


def test_time_series_config_errors(tmp_path: Path, co2_csv: Path) -> None:
    with pytest.raises(DataError, match=r"split by time, never shuffled; set split\.strategy"):
        train(_co2_config(tmp_path, co2_csv, split={"strategy": "random"}), base_dir=tmp_path)
    frame = pd.read_csv(co2_csv)
    pd.concat([frame, frame.tail(1)]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match=r"time 2001-12-01 00:00:00 appears twice"):
        train(_co2_config(tmp_path, tmp_path / "dup.csv"), base_dir=tmp_path)


# ------------------------------------------------------------------------ training cycle
def test_co2_trains_gates_bundles_and_beats_naive(co2_run: Any) -> None:
    meta = co2_run.metadata
    assert co2_run.gate.passed and co2_run.promoted
    assert (co2_run.bundle_path.parent / "model_latest").resolve() == co2_run.bundle_path
    test = meta["metrics"]["test"]
    assert set(test) == set(TASK_METRICS["time_series"]) | NAIVE_KEYS
    assert test["mape"] < test["naive_mape"] / 2 and test["rmse"] < test["naive_rmse"]
    assert test["directional_accuracy"] > 0.8
    assert set(meta["metrics"]["cv"]) == set(TASK_METRICS["time_series"])
    assert meta["naive_comparison"]["beats_naive"] is True
    ts = meta["time_series"]
    assert (ts["freq"], ts["lags"], ts["rolling"], ts["min_history"]) == ("MS", [1, 2, 3, 12],
                                                                          [3], 12)
    assert ts["calendar"] == ["month", "quarter"] and ts["group_column"] is None
    assert meta["feature_names"] == ts["engineered_features"]
    assert meta["split"]["train_end"] < meta["split"]["test_start"]
    bundle = load_bundle(co2_run.bundle_path)
    assert type(bundle.pipeline).__name__ == "DeltaRegressor"
    card = (co2_run.bundle_path / "MODEL_CARD.md").read_text()
    assert "### Comparación con el pronóstico ingenuo" in card
    assert "✅ El modelo supera al pronóstico ingenuo en mape, rmse, mae." in card
    assert re.search(r"\| mape \| [^|]+ \| [^|]+ \| modelo \|", card)  # model | naive
    assert "| naive_mape |" not in card  # naive metrics sit in their own table
    assert (co2_run.bundle_path / "plots" / "residuals.png").stat().st_size > 1000


def test_grouped_stocks_train_with_purge_and_naive(stocks_run: Any) -> None:
    meta = stocks_run.metadata
    assert stocks_run.gate.passed
    ts = meta["time_series"]
    assert ts["groups"] == SYMBOLS and ts["n_series"] == 5 and ts["horizon"] == 2
    assert meta["split"]["purged_rows"] == 5  # 1 time step x 5 series before the test part
    kinds = {f["name"]: f["type"] for f in meta["features"]}
    assert kinds["symbol"] == "categorical" and kinds["lag_1"] == "numeric"
    test = meta["metrics"]["test"]
    comparison = meta["naive_comparison"]
    beats = all(test[m] < test[f"naive_{m}"] for m in ("mape", "rmse", "mae"))
    assert comparison["beats_naive"] is beats
    card = (stocks_run.bundle_path / "MODEL_CARD.md").read_text()
    verdict = "✅ El modelo supera" if beats else "❌ El modelo no supera"
    assert verdict in card
    # the gate ignores the naive_* metrics: only the targets count
    assert [row["metric"] for row in meta["targets"]] == ["mape"]


def test_evaluate_bundle_rebuilds_the_features(co2_run: Any, co2_csv: Path) -> None:
    report = evaluate_bundle(co2_run.bundle_path, co2_csv)
    test = report["metrics"]["test"]
    assert report["n_rows"] == 526 - 12  # every month but the 12 without full lag history
    assert set(test) == set(TASK_METRICS["time_series"]) | NAIVE_KEYS
    assert test["mape"] < test["naive_mape"]
    assert report["gate"]["passed"] is True


# ------------------------------------------------------------------------------ forecast
def test_forecast_equals_the_training_features_and_is_recursive(
    co2_client: TestClient, co2_run: Any, co2_csv: Path
) -> None:
    frame = pd.read_csv(co2_csv, parse_dates=["month"])
    history = _history(frame.iloc[-13:-1], "month")  # 12 rows: exactly min_history
    response = co2_client.post("/api/v1/forecast", json={"history": history, "horizon": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "recursive" and body["horizon"] == 3
    assert body["model_version"] == "1.0.0"
    assert [(p["step"], p["time"], p["series"]) for p in body["forecasts"]] == [
        (1, "2001-12-01T00:00:00", None),
        (2, "2002-01-01T00:00:00", None),
        (3, "2002-02-01T00:00:00", None),
    ]
    # step 1 is exactly the model's prediction for the last month built by the training code
    X, _y, _ref = series_rows(frame, co2_run.metadata["time_series"])  # noqa: N806
    expected = load_bundle(co2_run.bundle_path).pipeline.predict(X.tail(1))[0]
    assert body["forecasts"][0]["forecast"] == pytest.approx(expected, rel=1e-9)
    assert abs(body["forecasts"][0]["forecast"] - frame["co2"].iloc[-1]) < 2.0
    # recursion: step 2 equals a one-step forecast from history + the step-1 forecast
    extended = [*history[1:], {"month": "2001-12-01T00:00:00",
                               "co2": body["forecasts"][0]["forecast"]}]
    again = co2_client.post("/api/v1/forecast", json={"history": extended, "horizon": 1})
    assert again.json()["forecasts"][0]["forecast"] == pytest.approx(
        body["forecasts"][1]["forecast"], rel=1e-9
    )


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda h: h[1:], "the series has 11 history rows; this model needs at least 12 "
         "consecutive rows (largest lag/rolling window 12 + trained horizon 1 - 1)"),
        (lambda h: h[:5] + h[6:] + [{"month": "2002-01-01", "co2": 370.0}],
         "the series: history is not evenly spaced; expected 2001-06-01T00:00:00 after "
         "2001-05-01T00:00:00, got 2001-07-01T00:00:00. Send the last 12 consecutive rows "
         "without gaps"),
        (lambda h: [{**h[0], "co2": "high"}, *h[1:]],
         "history row 0: 'co2' must be a finite number, got 'high'"),
        (lambda h: [{**h[0], "month": "someday"}, *h[1:]],
         "history row 0: 'month' must be an ISO 8601 date/time, got 'someday'"),
        (lambda h: [{**h[0], "symbol": "MSFT"}, *h[1:]],
         "history row 0 has unknown fields ['symbol']; expected ['co2', 'month']"),
    ],
)
def test_forecast_input_errors_are_422(
    co2_client: TestClient, co2_csv: Path, change: Any, detail: str
) -> None:
    frame = pd.read_csv(co2_csv, parse_dates=["month"])
    history = change(_history(frame.iloc[-12:], "month"))
    response = co2_client.post("/api/v1/forecast", json={"history": history})
    assert response.status_code == 422
    assert response.json()["detail"] == detail


def test_forecast_body_errors_are_422(co2_client: TestClient) -> None:
    empty = co2_client.post("/api/v1/forecast", json={"history": []})
    assert empty.status_code == 422 and "history" in empty.json()["detail"]
    huge = co2_client.post("/api/v1/forecast", json={"history": [{}], "horizon": 5000})
    assert huge.status_code == 422 and "horizon" in huge.json()["detail"]
    future = co2_client.post(
        "/api/v1/forecast", json={"history": [{"month": "2001-01-01", "co2": 1.0}] * 12,
                                  "future": [{"x": 1}]}
    )
    assert future.status_code == 422


def test_grouped_forecast_per_series(stocks_client: TestClient, stocks_csv: Path) -> None:
    frame = pd.read_csv(stocks_csv, parse_dates=["date"])
    recent = frame[frame["symbol"].isin(["IBM", "AAPL"])].groupby("symbol").tail(7)
    body = {"history": _history(recent, "date"), "horizon": 3}
    response = stocks_client.post("/api/v1/forecast", json=body)
    assert response.status_code == 200, response.text
    forecasts = response.json()["forecasts"]
    assert [(p["series"], p["step"]) for p in forecasts] == [
        ("IBM", 1), ("IBM", 2), ("IBM", 3), ("AAPL", 1), ("AAPL", 2), ("AAPL", 3)
    ]
    assert forecasts[0]["time"] == "2010-04-01T00:00:00"
    last = recent.groupby("symbol")["price"].last()
    for point in forecasts:
        assert point["forecast"] == pytest.approx(last[point["series"]], rel=0.5)


@pytest.mark.parametrize(
    ("symbol", "rows", "detail"),
    [
        ("TSLA", 7, "history row 0: unknown series 'TSLA' in 'symbol'; the model knows "
         "['AAPL', 'AMZN', 'GOOG', 'IBM', 'MSFT']"),
        ("IBM", 6, "series 'IBM' has 6 history rows; this model needs at least 7 consecutive "
         "rows (largest lag/rolling window 6 + trained horizon 2 - 1)"),
    ],
)
def test_grouped_forecast_errors(
    stocks_client: TestClient, stocks_csv: Path, symbol: str, rows: int, detail: str
) -> None:
    frame = pd.read_csv(stocks_csv, parse_dates=["date"])
    history = _history(frame[frame["symbol"] == "IBM"].tail(rows), "date")
    history = [{**row, "symbol": symbol} for row in history]
    response = stocks_client.post("/api/v1/forecast", json={"history": history})
    assert response.status_code == 422
    assert response.json()["detail"] == detail
    missing = stocks_client.post(
        "/api/v1/forecast", json={"history": [{"date": "2010-01-01", "price": 1.0}]}
    )
    assert missing.json()["detail"] == "history row 0 is missing the series id 'symbol'"


def test_rank_is_only_served_for_ranking_models(
    stocks_client: TestClient, stocks_run: Any
) -> None:
    assert stocks_client.post("/api/v1/rank", json={"candidates": [{}]}).status_code == 404
    # mounted anyway, the rank router refuses a time-series model with a 400
    app = create_app(stocks_run.bundle_path)
    app.include_router(build_rank_router())
    with TestClient(app) as client:
        response = client.post("/api/v1/rank", json={"candidates": [{"lag_1": 1.0}]})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "model 'stocks-monthly' is a 'time_series' model; ranking needs a ranking model. "
        "Use POST /api/v1/predict"
    )


def test_forecaster_and_docs_example(co2_run: Any) -> None:
    bundle = load_bundle(co2_run.bundle_path)
    example = example_request(bundle.metadata)
    assert len(example["history"]) == 12 and example["horizon"] == 1
    points = Forecaster(bundle).forecast(example["history"], horizon=2)  # the example is valid
    assert [p.step for p in points] == [1, 2]
    with pytest.raises(SchemaError, match="horizon must be >= 1"):
        Forecaster(bundle).forecast(example["history"], horizon=0)


def test_exogenous_features_need_future_values(tmp_path: Path) -> None:
    """US real GDP (statsmodels macrodata, quarterly) with unemployment as a known covariate."""
    import statsmodels.api as sm

    macro = sm.datasets.macrodata.load_pandas().data
    macro["quarter"] = pd.PeriodIndex.from_fields(
        year=macro["year"].astype(int), quarter=macro["quarter"].astype(int), freq="Q"
    ).to_timestamp()
    macro[["quarter", "realgdp", "unemp"]].to_csv(tmp_path / "macro.csv", index=False)
    config = make_config(
        tmp_path, name="gdp", task="time_series",
        data={"source": str(tmp_path / "macro.csv"), "target": "realgdp",
              "time_column": "quarter"},
        model={"type": "ridge", "params": {}}, time_series={"lags": [1, 2, 4]},
        targets={"mape": "< 5%"}, cv={"enabled": False},
    )
    result = train(config, base_dir=tmp_path)
    assert result.metadata["time_series"]["exogenous"] == ["unemp"]
    assert "unemp" in result.metadata["feature_names"]
    forecaster = Forecaster(load_bundle(result.bundle_path))
    history = _history(pd.read_csv(tmp_path / "macro.csv").tail(4), "quarter")
    points = forecaster.forecast(history, horizon=2, future=[{"unemp": 9.0}, {"unemp": 9.5}])
    assert [p.time for p in points] == ["2009-10-01T00:00:00", "2010-01-01T00:00:00"]
    with pytest.raises(SchemaError, match=r"exogenous features \['unemp'\]: send 'future'"):
        forecaster.forecast(history, horizon=2)
    with pytest.raises(SchemaError, match="has 1 future rows; send exactly 2"):
        forecaster.forecast(history, horizon=2, future=[{"unemp": 9.0}])
