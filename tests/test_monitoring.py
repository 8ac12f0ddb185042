"""Drift monitoring on real data sets: reference profile, online window, monitor_file, HTML report.

Models are fitted here with scikit-learn directly (logistic regression / ridge on an 80/20
split); ``monitor_file`` runs on a copy of the session's penguins bundle, given a profile with
``update_bundle_files`` (which records its sha256 as training will).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from vega_datasets import local_data

from mlservice.bundle import update_bundle_files
from mlservice.categories import canonical_series
from mlservice.errors import BundleError
from mlservice.inference import Predictor
from mlservice.monitoring import (
    PREDICTION_KEY,
    PROFILE_FILE,
    DriftWindow,
    ReferenceProfile,
    build_reference_profile,
    load_reference_profile,
    monitor_file,
    profile_json,
    save_reference_profile,
)
from mlservice.monitoring.profile import CategoricalReference, NumericReference
from mlservice.monitoring.window import PSI_THRESHOLD, _numeric_code, _NumericBlock
from mlservice.reports.drift_report import write_drift_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Fitted:
    """A model fitted on the training part of a real data set, and the profile of that part."""

    train: pd.DataFrame
    test: pd.DataFrame
    types: dict[str, str]
    model: Pipeline
    classes: list[Any] | None
    profile: ReferenceProfile


def _fit(frame: pd.DataFrame, target: str, task: str, estimator: Any = None) -> Fitted:
    """Logistic regression or ridge (``estimator`` replaces it) on 80% of ``frame``."""
    frame = frame.loc[frame[target].notna()].reset_index(drop=True)
    X, y = frame.drop(columns=target), frame[target]  # noqa: N806
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    types = {c: "numeric" if c in numeric else "categorical" for c in X.columns}
    onehot = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    pre = make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), numeric), (onehot, categorical)
    )
    classes: list[Any] | None = sorted(y.unique().tolist()) if task == "classification" else None
    if classes is not None:
        codes = pd.Categorical(y, categories=classes).codes.astype(np.int64)
        model = make_pipeline(pre, estimator or LogisticRegression(max_iter=2000))
    else:
        codes = y.to_numpy(dtype=float)
        model = make_pipeline(pre, estimator or Ridge())
    X_train, X_test, y_train, y_test = train_test_split(X, codes, test_size=0.2, random_state=0)  # noqa: N806
    model.fit(X_train, y_train)
    extra = {}
    if classes is not None:
        extra = {"y_test": y_test, "test_proba": model.predict_proba(X_test), "classes": classes}
    profile = build_reference_profile(
        X_train, types, task=task, test_pred=model.predict(X_test), **extra
    )
    return Fitted(X_train, X_test, types, model, classes, profile)


def _columns(frame: pd.DataFrame, types: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays the API gives the window: float64, or canonical strings with None."""
    out: dict[str, np.ndarray] = {}
    for name, kind in types.items():
        if kind == "numeric":
            out[name] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = canonical_series(frame[name])
            out[name] = np.array([None if pd.isna(v) else v for v in values], dtype=object)
    return out


def _feed(window: DriftWindow, fitted: Fitted, frame: pd.DataFrame, *, batch: int = 0) -> None:
    """Predict ``frame`` and give it to the window (in batches of ``batch`` rows; 0: one)."""
    if fitted.classes is not None:
        proba = fitted.model.predict_proba(frame)
        predictions: list[Any] = [fitted.classes[i] for i in proba.argmax(axis=1)]
        confidence: np.ndarray | None = proba.max(axis=1)
    else:
        predictions, confidence = fitted.model.predict(frame).tolist(), None
    columns = _columns(frame, fitted.types)
    step = batch or len(frame)
    for part in (slice(start, start + step) for start in range(0, len(frame), step)):
        conf = None if confidence is None else confidence[part]
        window.update({k: v[part] for k, v in columns.items()}, predictions[part], conf)


def _scores(report: dict[str, Any]) -> dict[str, float]:
    return {name: item["score"] for name, item in report["features"].items()}


DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "penguins": (load_penguins, "species", "classification"),
    "breast_cancer": (lambda: load_breast_cancer(as_frame=True).frame, "target", "classification"),
    "wine": (lambda: load_wine(as_frame=True).frame, "target", "classification"),
    "diabetes": (lambda: load_diabetes(as_frame=True).frame, "target", "regression"),
    # local_data: the copy shipped with vega_datasets (``data.cars`` could download)
    "cars": (lambda: local_data.cars().drop(columns=["Name", "Year"]), "Miles_per_Gallon",
             "regression"),
}


@pytest.fixture(scope="module")
def penguins() -> Fitted:
    return _fit(load_penguins(), "species", "classification")


def _shift_island(frame: pd.DataFrame, seed: int, share: float = 0.7) -> pd.DataFrame:
    """``frame`` with the island column alone redrawn: Torgersen at ``share``, the other islands
    in their training proportions (every other column keeps its joint distribution)."""
    rng = np.random.default_rng(seed)
    others = frame["island"][frame["island"] != "Torgersen"].value_counts(normalize=True)
    levels = ["Torgersen", *others.index]
    weights = [share, *(others.to_numpy() * (1 - share))]
    return frame.assign(island=rng.choice(levels, size=len(frame), p=weights))


def _shift_bill(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    bill = frame["bill_length_mm"]
    return frame.assign(bill_length_mm=bill + 1.5 * bill.std())


_SHIFTS = {"bill_length_mm": _shift_bill, "island": _shift_island}


# ------------------------------------------------------------------------------ profile
def test_profile_describes_the_training_part(penguins: Fitted, tmp_path: Path) -> None:
    profile = penguins.profile
    by_name = {f.name: f for f in profile.features}
    assert profile.rows == len(penguins.train) and profile.task == "classification"
    island = by_name["island"]
    assert isinstance(island, CategoricalReference)
    assert island.levels == ("Biscoe", "Dream", "Torgersen")  # most frequent first
    expected = penguins.train["island"].value_counts(normalize=True)
    assert np.allclose(island.shares[:3], expected[list(island.levels)].to_numpy())
    bill = by_name["bill_length_mm"]
    assert isinstance(bill, NumericReference) and bill.n_bins == 10
    assert bill.low == penguins.train["bill_length_mm"].min()
    expected_missing = penguins.train["bill_length_mm"].isna().mean()
    assert bill.missing_rate == pytest.approx(expected_missing, abs=1e-6)  # stored rounded
    for ref in (*profile.features, profile.prediction):
        assert ref.shares.sum() == pytest.approx(1.0) and ref.noise_quantile > 0
    year = by_name["year"]  # three values: one bin each (duplicate deciles dropped)
    assert isinstance(year, NumericReference) and year.edges.tolist() == [2007.0, 2008.0, 2009.0]
    assert year.shares[0] == 0.0 and min(year.shares[1:4]) > 0.25
    assert profile.prediction.levels == ("Adelie", "Chinstrap", "Gentoo")  # type: ignore[union-attr]
    assert profile.classifier is not None and 0 < profile.classifier.ece < 0.2  # type: ignore[operator]
    path = save_reference_profile(profile, tmp_path)
    again = ReferenceProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert profile_json(again) == profile_json(profile)


def test_loading_checks_the_recorded_hash(penguins: Fitted, tmp_path: Path) -> None:
    assert load_reference_profile(tmp_path) is None  # an old bundle: no profile
    path = save_reference_profile(penguins.profile, tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_reference_profile(tmp_path, {"files": {PROFILE_FILE: digest}})
    assert loaded is not None and loaded.rows == penguins.profile.rows
    # a profile the metadata does not list was not written by training: ignored
    assert load_reference_profile(tmp_path, {"files": {}}) is None
    path.write_text(path.read_text(encoding="utf-8").replace('"rows": 275', '"rows": 9'))
    with pytest.raises(BundleError, match="sha256"):
        load_reference_profile(tmp_path, {"files": {PROFILE_FILE: digest}})
    path.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(BundleError, match="not a valid reference profile"):
        load_reference_profile(tmp_path)


def test_window_encodes_numerics_as_the_profile_does(penguins: Fitted) -> None:
    refs = [f for f in penguins.profile.features if isinstance(f, NumericReference)]
    rng, columns = np.random.default_rng(0), {}
    for ref in refs:
        values = rng.normal((ref.low + ref.high) / 2, (ref.high - ref.low), size=400)
        values[:len(ref.edges)] = ref.edges  # exactly on a cut point
        values[-4:] = [np.nan, np.inf, -np.inf, ref.high]
        columns[ref.name] = values
    block = _NumericBlock(list(range(len(refs))), refs).encode(columns)
    for i, ref in enumerate(refs):  # the batch path, the one-row path and the profile's own
        assert np.array_equal(block[i], expected := ref.encode(columns[ref.name])), ref.name
        plan = (ref.edges.tolist(), ref.low, ref.high, ref.n_bins)
        assert [_numeric_code(v, *plan) for v in columns[ref.name]] == expected.tolist()


# ------------------------------------------------------------------------ no false alarms
@pytest.mark.filterwarnings("ignore:.*convert_dates")  # vega_datasets' call into pandas
@pytest.mark.parametrize("name", list(DATASETS))
def test_a_resample_of_the_training_data_flags_nothing(name: str) -> None:
    load, target, task = DATASETS[name]
    fitted = _fit(load(), target, task)
    for seed in range(5):
        window = DriftWindow(fitted.profile)
        _feed(window, fitted, fitted.train.sample(800, replace=True, random_state=seed))
        report = window.report()
        assert report["window"]["judged"] is True
        assert report["drift"] is False, (seed, report["drifted_features"], report["prediction"])
        assert max(_scores(report).values()) < PSI_THRESHOLD / 2
        assert all(not drift for _, _, drift in window.prometheus_values())


def test_measured_false_alarm_level(penguins: Fitted) -> None:
    """The figure in the window's docstring: 200 samples of 500 training rows."""
    largest = 0.0
    for seed in range(200):
        window = DriftWindow(penguins.profile)
        _feed(window, penguins, penguins.train.sample(500, replace=True, random_state=seed))
        report = window.report()
        assert not report["drift"]
        largest = max(largest, *_scores(report).values())
    assert 0.02 < largest < 0.1


# --------------------------------------------------------------------------------- drift
@pytest.mark.parametrize("feature", ["bill_length_mm", "island"])
def test_a_shifted_feature_is_flagged_and_named(penguins: Fitted, feature: str) -> None:
    """bill_length_mm + 1.5 std; island: Torgersen from 15% to 70% of the rows."""
    assert penguins.train["island"].eq("Torgersen").mean() == pytest.approx(0.15, abs=0.02)
    for seed in range(3):
        rows = penguins.train.sample(800, replace=True, random_state=seed)
        window = DriftWindow(penguins.profile)
        _feed(window, penguins, _SHIFTS[feature](rows, seed))
        report = window.report()
        assert report["drift"] is True and report["drifted_features"] == [feature]
        assert report["features"][feature]["score"] > 1.0
        assert max(s for n, s in _scores(report).items() if n != feature) < PSI_THRESHOLD / 2
        flags = {name: drift for name, _, drift in window.prometheus_values()}
        assert [n for n, d in flags.items() if d and n != PREDICTION_KEY] == [feature]
    if feature == "bill_length_mm":
        assert report["features"][feature]["out_of_range_rate"] > 0.02
    else:
        assert report["features"][feature]["unseen_rate"] == 0.0


def test_a_shifted_regression_input_moves_the_prediction() -> None:
    fitted = _fit(load_diabetes(as_frame=True).frame, "target", "regression")
    rows = fitted.train.sample(800, replace=True, random_state=0)
    window = DriftWindow(fitted.profile)
    _feed(window, fitted, rows.assign(bmi=rows["bmi"] + 1.5 * fitted.train["bmi"].std()))
    report = window.report()
    assert report["drifted_features"] == ["bmi"]
    assert report["prediction"]["drift"] is True  # bmi is the strongest predictor
    assert "estimated_accuracy" not in report


def test_unseen_and_missing_values_are_reported(penguins: Fitted) -> None:
    rows = penguins.train.sample(600, replace=True, random_state=1).reset_index(drop=True)
    rows["island"] = rows["island"].astype(object)
    rows.loc[:59, "island"] = "Atlantis"  # 10% unseen
    rows.loc[60:179, "flipper_length_mm"] = np.nan  # 20% missing, 0.4% in training
    window = DriftWindow(penguins.profile)
    _feed(window, penguins, rows)
    for count in (1, 2):
        window.record_rejected("body_mass_g", count)
    report = window.report()
    assert report["features"]["island"]["unseen_rate"] == pytest.approx(0.1)
    flipper = report["features"]["flipper_length_mm"]
    assert flipper["missing_rate"] == pytest.approx(0.2, abs=0.01)
    assert flipper["reference_missing_rate"] < 0.01
    assert set(report["drifted_features"]) == {"island", "flipper_length_mm"}
    assert report["features"]["body_mass_g"]["rejected"] == 3
    assert report["features"]["island"]["rejected"] == 0


# ------------------------------------------------------------------------------- window
def test_below_min_rows_nothing_is_judged(penguins: Fitted) -> None:
    shifted = _shift_bill(penguins.train.sample(500, replace=True, random_state=2), 0)
    window = DriftWindow(penguins.profile, min_rows=500)
    _feed(window, penguins, shifted.iloc[:499])
    report = window.report()
    assert report["window"]["rows"] == 499 and report["window"]["judged"] is False
    assert "not judged" in report["window"]["note"]
    assert report["drift"] is False and report["drifted_features"] == []
    assert report["features"]["bill_length_mm"]["score"] > 1.0  # measured, but not judged
    assert all(math.isnan(score) for _, score, _ in window.prometheus_values())
    _feed(window, penguins, shifted.iloc[499:])
    report = window.report()
    assert report["window"]["judged"] is True and report["drifted_features"] == ["bill_length_mm"]


def test_rows_one_at_a_time_give_the_batch_report(penguins: Fitted) -> None:
    rows = penguins.train.sample(700, replace=True, random_state=3)
    one, batch = DriftWindow(penguins.profile), DriftWindow(penguins.profile)
    _feed(one, penguins, rows, batch=1)
    _feed(batch, penguins, rows)
    assert one.report(detail=True) == batch.report(detail=True)
    # past the ring's size, in uneven batches: only the newest rows count
    small = [DriftWindow(penguins.profile, size=600) for _ in range(3)]
    _feed(small[0], penguins, rows, batch=1)
    _feed(small[1], penguins, rows, batch=97)
    _feed(small[2], penguins, rows.iloc[-600:])
    first = small[0].report()
    assert first["window"]["seen"] == 700 and first["window"]["rows"] == 600
    for other in small[1:]:
        got = other.report()
        assert got["features"] == first["features"] and got["prediction"] == first["prediction"]
        assert got["estimated_accuracy"]["value"] == pytest.approx(
            first["estimated_accuracy"]["value"], abs=1e-6
        )


def test_the_ring_forgets_old_traffic(penguins: Fitted) -> None:
    old = penguins.train.sample(600, replace=True, random_state=4)
    window = DriftWindow(penguins.profile, size=600)
    _feed(window, penguins, _shift_bill(old, 0))
    assert window.report()["drifted_features"] == ["bill_length_mm"]
    _feed(window, penguins, penguins.train.sample(600, replace=True, random_state=5), batch=50)
    report = window.report()
    assert report["drift"] is False and report["window"]["rows"] == 600


def test_update_refuses_misaligned_columns_and_a_missing_profile_is_said(penguins: Fitted) -> None:
    window = DriftWindow(penguins.profile)
    columns = _columns(penguins.train.iloc[:3], penguins.types)
    with pytest.raises(ValueError, match="'island'"):
        window.update({k: v for k, v in columns.items() if k != "island"}, ["Adelie"] * 3)
    with pytest.raises(ValueError, match="2 values for 3 predictions"):
        window.update({**columns, "sex": columns["sex"][:2]}, ["Adelie"] * 3)
    assert window.rows == 0
    # a bundle without a profile: rows are counted, nothing is judged
    window = DriftWindow(None)
    window.update({}, ["Adelie", "Gentoo"])
    report = window.report()
    assert report["drift"] is False and report["reference"] is None
    assert report["note"].startswith("no reference profile in this bundle")
    assert report["window"]["rows"] == 2 and report["window"]["judged"] is False
    assert window.prometheus_values() == []


def test_serving_import_loads_numpy_only() -> None:
    code = (
        "import sys, mlservice.monitoring, mlservice.monitoring.window\n"
        "heavy = ('pandas', 'scipy', 'sklearn', 'matplotlib', 'mlflow', 'optuna')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------- estimated accuracy
def _estimate(estimator: Any, seed: int) -> dict[str, Any]:
    """The estimated accuracy of a window of 600 rows drawn from the breast_cancer test part."""
    fitted = _fit(load_breast_cancer(as_frame=True).frame, "target", "classification", estimator)
    window = DriftWindow(fitted.profile)
    _feed(window, fitted, fitted.test.sample(600, replace=True, random_state=seed))
    estimate: dict[str, Any] = window.report()["estimated_accuracy"]
    assert fitted.profile.classifier is not None
    assert estimate["test_accuracy"] == pytest.approx(fitted.profile.classifier.test_accuracy)
    return estimate


def test_estimated_accuracy_of_a_calibrated_model_matches_the_test_accuracy() -> None:
    for seed in range(5):
        estimate = _estimate(None, seed)  # logistic regression
        assert abs(estimate["value"] - estimate["test_accuracy"]) < 0.03
        assert estimate["trustworthy"] is True and estimate["ece"] < 0.05
        assert estimate["rows"] == 600 and "calibrated" in estimate["assumption"]


def test_an_uncalibrated_model_is_called_untrustworthy() -> None:
    estimate = _estimate(GaussianNB(), 0)  # naive Bayes: probabilities near 0 and 1
    assert estimate["ece"] > 0.05 and estimate["trustworthy"] is False
    assert "not calibrated" in estimate["note"]


# --------------------------------------------------------------------------- monitor_file
@pytest.fixture(scope="module")
def profiled_bundle(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's penguins bundle with a profile of the penguins data."""
    copy = Path(shutil.copytree(trained_bundle, tmp_path_factory.mktemp("mon") / "bundle"))
    predictor = Predictor.from_path(copy)
    meta = predictor.metadata
    frame = load_penguins()
    answers = predictor.predict_frame(X := frame[meta["feature_names"]])  # noqa: N806
    classes = [str(c) for c in meta["target"]["classes"]]
    codes = np.array([classes.index(str(a["prediction"])) for a in answers])
    proba = np.array([[a["probabilities"][c] for c in classes] for a in answers])
    truth = np.array([classes.index(s) for s in frame["species"]])
    types = {f["name"]: f["type"] for f in meta["features"]}
    profile = build_reference_profile(
        X, types, task="classification", test_pred=codes, y_test=truth, test_proba=proba,
        classes=classes,
    )
    update_bundle_files(copy, {PROFILE_FILE: profile_json(profile)})
    return copy


def test_monitor_file_flags_nothing_on_a_resample(profiled_bundle: Path, tmp_path: Path) -> None:
    for seed in range(3):
        load_penguins().sample(900, replace=True, random_state=seed).to_csv(tmp_path / "r.csv")
        result = monitor_file(profiled_bundle, tmp_path / "r.csv", chunksize=250)
        assert result.rows == 900 and result.report["window"]["rows"] == 900
        assert result.drift is False and result.drifted_features == []
        assert result.metrics is not None and result.metrics["rows"] == 900
        assert result.metrics["live"]["accuracy"] > 0.9 and result.metrics["gate"]["passed"]


def _shifted_penguins(seed: int) -> pd.DataFrame:
    frame = load_penguins().sample(900, replace=True, random_state=seed).reset_index(drop=True)
    return _shift_bill(_shift_island(frame, seed), seed)


@pytest.fixture(scope="module")
def shifted_result(profiled_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("shifted") / "shifted.parquet"
    _shifted_penguins(7).drop(columns="species").to_parquet(path, row_group_size=200)
    return monitor_file(profiled_bundle, path, chunksize=128)


def test_monitor_file_names_the_shifted_features(
    shifted_result: Any, profiled_bundle: Path, tmp_path: Path
) -> None:
    assert set(shifted_result.drifted_features) == {"bill_length_mm", "island"}
    assert shifted_result.metrics is None  # no species column in this file
    assert shifted_result.report["features"]["bill_length_mm"]["distribution"]["current"]
    # the same file in one chunk, as CSV: the same statistics
    path = tmp_path / "shifted.csv"
    _shifted_penguins(7).drop(columns="species").to_csv(path, index=False)
    whole = monitor_file(profiled_bundle, path, chunksize=10_000)
    assert whole.report["features"] == shifted_result.report["features"]
    assert whole.report["prediction"] == shifted_result.report["prediction"]


def test_monitor_file_counts_what_the_api_refuses(profiled_bundle: Path, tmp_path: Path) -> None:
    frame = load_penguins().sample(600, replace=True, random_state=8).reset_index(drop=True)
    frame["island"] = frame["island"].astype(object)
    frame.loc[:9, "island"] = "Atlantis"  # a closed categorical: the API answers 422
    frame.to_csv(tmp_path / "refused.csv", index=False)
    result = monitor_file(profiled_bundle, tmp_path / "refused.csv")
    assert result.report["features"]["island"]["rejected"] == 10
    assert result.report["window"]["rows"] == 590


def test_monitor_file_of_a_bundle_without_profile(trained_bundle: Path, tmp_path: Path) -> None:
    # a bundle trained before profiles existed: no file, none listed in its metadata
    old = tmp_path / "old-bundle"
    shutil.copytree(trained_bundle, old)
    (old / PROFILE_FILE).unlink()
    meta = json.loads((old / "metadata.json").read_text())
    del meta["files"][PROFILE_FILE]
    (old / "metadata.json").write_text(json.dumps(meta))
    path = tmp_path / "plain.csv"
    load_penguins().to_csv(path, index=False)
    result = monitor_file(old, path)
    assert result.report["reference"] is None and result.drift is False
    assert "no reference profile" in " ".join(result.notes)
    assert result.metrics is not None and result.metrics["live"]["accuracy"] > 0.9
    page = write_drift_report(result, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "no reference profile in this bundle" in page and "<img" not in page


# ------------------------------------------------------------------------------- HTML
def test_drift_report_is_one_self_contained_page(shifted_result: Any, tmp_path: Path) -> None:
    path = write_drift_report(shifted_result, tmp_path / "out" / "drift.html")
    text = path.read_text(encoding="utf-8")
    images = re.findall(r'<img class="([^"]+)" data-feature="([^"]+)"[^>]* src="([^"]+)"', text)
    assert len(images) == text.count("<img")
    plotted = [name for css, name, _ in images if css == "drift-plot"]
    assert sorted(plotted) == sorted(shifted_result.drifted_features)
    for _, _, src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    rows = re.findall(r'<tr class="feature( drift)?" data-feature="([^"]+)"', text)
    assert [name for _, name in rows] == list(shifted_result.report["features"])
    assert sorted(n for drift, n in rows if drift) == sorted(shifted_result.drifted_features)
    lowered = text.lower()
    assert not any(s in lowered for s in ("http://", "https://", "<link", "<script"))
