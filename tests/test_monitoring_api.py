"""Drift monitoring end to end: a trained bundle's profile, the served API and the CLI.

Real data shipped in a package (palmerpenguins, with its gaps), sent as users send it. A
resample of the training data must flag nothing; a shifted numeric feature and a shifted
categorical feature must be flagged and named, the other features not.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins
from typer.testing import CliRunner

from mlservice.api.main import create_app
from mlservice.api.settings import ApiSettings
from mlservice.bundle import load_metadata
from mlservice.cli import app as cli_app
from mlservice.monitoring import PROFILE_FILE
from mlservice.training import train
from tests.conftest import make_config
from tests.test_docs_browser import _chromium, _run_chromium

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g",
            "sex", "year"]
SHIFTED = {"bill_length_mm", "island"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    tmp = tmp_path_factory.mktemp("monitored")
    config = make_config(
        tmp, **{"data.source": str(penguins_csv), "model": {"type": "logistic_regression"}}
    )
    result = train(config, base_dir=tmp)
    meta = load_metadata(result.bundle_path)
    assert meta["onnx"]["verified"] is True
    assert PROFILE_FILE in meta["files"]  # hashed like every other file
    return result.bundle_path


def _healthy(seed: int, rows: int = 700) -> pd.DataFrame:
    frame = load_penguins()[FEATURES]
    return frame.sample(rows, replace=True, random_state=seed).reset_index(drop=True)


def _shifted(seed: int, rows: int = 700) -> pd.DataFrame:
    frame = _healthy(seed, rows)
    rng = np.random.default_rng(seed)
    frame["bill_length_mm"] = frame["bill_length_mm"] + 1.5 * frame["bill_length_mm"].std()
    moved = rng.random(rows) < 0.6  # Torgersen from ~15 % of the rows to ~65 %
    frame.loc[moved, "island"] = "Torgersen"
    return frame


def _instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{k: (int(v) if k == "year" and v is not None else v) for k, v in r.items()}
            for r in rows]


def _serve(bundle: Path, frame: pd.DataFrame, fast_path: bool) -> tuple[dict[str, Any], str, int]:
    settings = ApiSettings(bundle_path=bundle, fast_path=fast_path)
    with TestClient(create_app(bundle, settings)) as client:
        rows = _instances(frame)
        batched = rows[:-20]  # batches of 50: under SAMPLE_ROWS, every row is recorded
        for start in range(0, len(batched), 50):
            body = {"instances": batched[start:start + 50]}
            reply = client.post("/api/v1/predict/batch", json=body)
            assert reply.status_code == 200, reply.text
        for row in rows[-20:]:  # single rows too (micro-batched on the fast path)
            assert client.post("/api/v1/predict", json={"features": row}).status_code == 200
        bad = {**rows[0], "island": "Atlantis"}
        assert client.post("/api/v1/predict", json={"features": bad}).status_code == 422
        report = client.get("/api/v1/monitoring").json()
        metrics = client.get("/metrics").text
        answered = client.app.state.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
            "mlservice_fast_path_total", {"outcome": "answered"}
        )
    return report, metrics, int(answered or 0)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_healthy_traffic_flags_nothing(bundle: Path, fast_path: bool) -> None:
    report, metrics, answered = _serve(bundle, _healthy(seed=3), fast_path)
    assert report["window"]["rows"] == 700 and report["window"]["judged"] is True
    assert report["drift"] is False, {n: f["score"] for n, f in report["features"].items()}
    assert not [n for n, f in report["features"].items() if f["drift"]]
    assert report["features"]["island"]["rejected"] == 1  # the 422 counts, by feature
    assert (answered > 0) is fast_path
    assert 'mlservice_drift_detected 0.0' in metrics
    assert 'mlservice_drift_score{feature="bill_length_mm"}' in metrics
    estimate = report["estimated_accuracy"]
    assert abs(estimate["value"] - estimate["test_accuracy"]) < 0.05


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_shifted_features_are_flagged_and_named(bundle: Path, fast_path: bool) -> None:
    report, metrics, _ = _serve(bundle, _shifted(seed=5), fast_path)
    drifted = {n for n, f in report["features"].items() if f["drift"]}
    assert report["drift"] is True
    assert drifted == SHIFTED
    assert set(report["drifted_features"]) >= SHIFTED
    assert report["features"]["bill_length_mm"]["out_of_range_rate"] > 0.03
    assert 'mlservice_drift{feature="island"} 1.0' in metrics
    assert 'mlservice_drift{feature="body_mass_g"} 0.0' in metrics


def test_below_min_rows_nothing_is_judged(bundle: Path) -> None:
    report, _, _ = _serve(bundle, _shifted(seed=7, rows=120), fast_path=True)
    assert report["window"]["judged"] is False
    assert report["drift"] is False
    assert "500" in report["window"]["note"]


def test_monitoring_can_be_turned_off(bundle: Path) -> None:
    settings = ApiSettings(bundle_path=bundle, monitoring=False)
    with TestClient(create_app(bundle, settings)) as client:
        client.post("/api/v1/predict", json={"features": _instances(_healthy(1, 1))[0]})
        report = client.get("/api/v1/monitoring").json()
    assert report["enabled"] is False and report["drift"] is False


def _write(frame: pd.DataFrame, path: Path, target: bool = False) -> Path:
    out = frame.copy()
    if target:
        labels = load_penguins()["species"].sample(len(out), replace=True, random_state=1)
        out["species"] = labels.to_numpy()
    out.to_csv(path, index=False)
    return path


def test_monitor_command_exit_codes_and_report(bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    healthy = _write(_healthy(seed=11), tmp_path / "healthy.csv")
    ok = runner.invoke(cli_app, ["monitor", str(bundle), str(healthy)])
    assert ok.exit_code == 0, ok.output
    assert "no drift" in ok.output
    shifted = _write(_shifted(seed=13), tmp_path / "shifted.csv")
    report = tmp_path / "drift.html"
    bad = runner.invoke(cli_app, ["monitor", str(bundle), str(shifted), "--report", str(report)])
    assert bad.exit_code == 3, bad.output
    assert "bill_length_mm" in bad.output and "island" in bad.output
    html = report.read_text(encoding="utf-8")
    assert html.count('class="drift-plot"') >= 2
    assert "http://" not in html and "https://" not in html


def test_monitor_command_checks_targets_on_labelled_data(bundle: Path, tmp_path: Path) -> None:
    # labels drawn at random: the features are healthy, the live accuracy collapses
    labelled = _write(_healthy(seed=17), tmp_path / "labelled.csv", target=True)
    result = CliRunner().invoke(cli_app, ["monitor", str(bundle), str(labelled)])
    assert result.exit_code == 3, result.output
    assert "targets not met on this data" in result.output
    assert "accuracy" in result.output


def test_drift_report_renders_in_chromium(bundle: Path, tmp_path: Path) -> None:
    from mlservice.monitoring import monitor_file
    from mlservice.reports.drift_report import write_drift_report

    shifted = _write(_shifted(seed=19), tmp_path / "shifted.csv")
    page = write_drift_report(monitor_file(bundle, shifted), tmp_path / "drift.html")
    binary = _chromium()
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="drift-plot"') >= 2
    shot = tmp_path / "drift.png"
    done = _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}",
                         "--window-size=1280,2400", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.2  # bars and lines, not text
    assert coloured.mean() > 0.01, "the plots did not render"
    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "drift-report.png")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path-on", "fast-path-off"])
def test_large_batches_feed_a_sample(bundle: Path, fast_path: bool) -> None:
    from mlservice.api.monitoring import SAMPLE_ROWS

    settings = ApiSettings(bundle_path=bundle, fast_path=fast_path, monitoring_min_rows=100)
    rows = _instances(_healthy(seed=23, rows=1000))
    with TestClient(create_app(bundle, settings)) as client:
        for _ in range(4):
            assert client.post("/api/v1/predict/batch", json={"instances": rows}).status_code == 200
        report = client.get("/api/v1/monitoring").json()
    assert report["window"]["rows"] == 4 * SAMPLE_ROWS
    assert report["window"]["judged"] is True and report["drift"] is False
