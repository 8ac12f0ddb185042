"""Tests of the EDA report (mlservice.reports.eda) and the ``mlservice eda`` command."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from palmerpenguins import load_penguins
from typer.testing import CliRunner

from mlservice.commands.eda import eda
from mlservice.errors import ConfigError
from mlservice.reports.eda import EdaReport, build_eda_report, write_eda_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PENGUIN_MISSING = {"sex", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"}


@pytest.fixture(scope="module")
def penguins_report() -> EdaReport:
    return build_eda_report(load_penguins(), target="species", task="classification")


@pytest.fixture(scope="module")
def penguins_files(
    penguins_report: EdaReport, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    return write_eda_report(penguins_report, tmp_path_factory.mktemp("eda") / "reports")


# --------------------------------------------------------------------------- penguins


def test_penguins_missing_values_are_flagged_by_column(penguins_report: EdaReport) -> None:
    flagged = {w.column for w in penguins_report.warnings_of("missing")}
    assert flagged == PENGUIN_MISSING
    assert penguins_report.missing["sex"] == 11
    assert next(iter(penguins_report.missing)) == "sex"  # most missing first
    assert "missing_values" in penguins_report.plots


def test_penguins_class_balance(penguins_report: EdaReport) -> None:
    assert penguins_report.class_counts == {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}
    shares = penguins_report.class_shares
    assert shares is not None
    assert shares["Adelie"] == pytest.approx(152 / 344)
    assert shares["Chinstrap"] == pytest.approx(68 / 344)


def test_penguins_has_no_false_alarms(penguins_report: EdaReport) -> None:
    kinds = {w.kind for w in penguins_report.warnings}
    assert kinds == {"missing"}
    assert penguins_report.n_duplicates == 0
    assert penguins_report.types["island"] == "categorical"
    assert penguins_report.types["flipper_length_mm"] == "numeric"
    top = penguins_report.associations[0]
    assert (top.feature, top.measure) == ("flipper_length_mm", "eta")
    assert 0.8 < top.value < 0.95


def test_html_is_self_contained(penguins_files: tuple[Path, Path]) -> None:
    html = penguins_files[0].read_text(encoding="utf-8")
    assert 'src="http' not in html and "<script" not in html and "<link" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for name in ("Adelie", "44.2%", "Chinstrap", "19.8%", "sex", "11 (3.2%)"):
        assert name in html


def test_markdown_links_png_files_beside_it(penguins_files: tuple[Path, Path]) -> None:
    md_path = penguins_files[1]
    text = md_path.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == [
        "eda_associations.png",
        "eda_distributions.png",
        "eda_missing_values.png",
        "eda_target.png",
    ]
    for link in links:
        assert (md_path.parent / link).read_bytes().startswith(PNG_SIGNATURE)
    assert "| Adelie | 152 | 44.2% |" in text
    assert "| `sex` | 11 | 3.2% |" in text


# --------------------------------------------------------------------------- planted problems


def test_regression_leak_and_identifier_are_named() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"customer_id": np.arange(n), "x": rng.normal(size=n)})
    frame["price"] = frame["x"] + rng.normal(size=n)  # a real but imperfect link: r ≈ 0.7
    frame["leak"] = frame["price"] * 2 + rng.normal(scale=1e-3, size=n)
    report = build_eda_report(frame, target="price", task="regression")
    assert [w.column for w in report.warnings_of("leakage")] == ["leak"]
    assert [w.column for w in report.warnings_of("identifier")] == ["customer_id"]
    leak = next(a for a in report.associations if a.feature == "leak")
    assert leak.pearson == pytest.approx(1.0, abs=1e-4)
    assert report.target_stats is not None and "mean" in report.target_stats


@pytest.fixture(scope="module")
def planted() -> EdaReport:
    rng = np.random.default_rng(1)
    n = 600
    label = rng.choice(["churn", "stay"], size=n, p=[0.3, 0.7])
    frame = pd.DataFrame(
        {
            "label_copy": label,
            "label_code": np.where(label == "churn", 1.0, 0.0),
            "ticket": [f"T{i:05d}" for i in range(n)],
            "refund_after": rng.normal(size=n),
            "survey_score": rng.normal(size=n),
            "country": "NL",
            "zip": rng.integers(1000, 1400, size=n).astype(str),
            "age": rng.integers(18, 80, size=n),
            "outcome": label,
        }
    )
    frame["outcome"] = frame["outcome"].astype(object)
    frame.loc[:19, "outcome"] = None
    frame["survey_score"] = frame["survey_score"].where(frame["outcome"].notna())
    return build_eda_report(frame, target="outcome", task="classification")


@pytest.mark.parametrize(
    ("kind", "column"),
    [
        ("leakage", "label_copy"),
        ("leakage", "label_code"),
        ("identifier", "ticket"),
        ("post_outcome", "refund_after"),
        ("post_outcome", "survey_score"),
        ("constant", "country"),
        ("high_cardinality", "zip"),
        ("target_missing", "outcome"),
    ],
)
def test_planted_problem_is_named(planted: EdaReport, kind: str, column: str) -> None:
    assert column in {w.column for w in planted.warnings_of(kind)}, planted.warnings


def test_planted_clean_column_is_not_flagged(planted: EdaReport) -> None:
    assert not [w for w in planted.warnings if w.column == "age"]
    assert planted.warnings[0].kind == "leakage"  # most serious first


def test_large_frame_is_sampled_for_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 100_000
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.choice(["x", "y", "z"], size=n),
            "y": rng.choice(["p", "q"], size=n),
        }
    )
    report = build_eda_report(frame, target="y", task="classification")
    assert report.sample_rows == 10_000 and report.n_rows == n
    note = "random sample of 10,000 of 100,000 rows"
    assert note in report.sampling_note
    html, md = write_eda_report(report, tmp_path)
    assert note in html.read_text(encoding="utf-8")
    assert note in md.read_text(encoding="utf-8")


def test_missing_target_column_is_refused() -> None:
    with pytest.raises(ValueError, match="target 'nope' is not a column"):
        build_eda_report(load_penguins(), target="nope", task="classification")


# --------------------------------------------------------------------------- command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command(name="eda")(eda)
    app.command(name="noop")(lambda: None)  # two commands: `eda` stays a subcommand
    return app


def _config(tmp_path: Path, penguins_csv: Path, tracking_uri: str) -> Path:
    raw = {
        "name": "penguins-eda",
        "task": "classification",
        "data": {"source": str(penguins_csv), "target": "species"},
        "tracking": {"uri": tracking_uri, "timeout_s": 2},
    }
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_eda_command_writes_report_and_logs_to_mlflow(
    tmp_path: Path, penguins_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow" / "mlflow.db"
    config = _config(tmp_path, penguins_csv, f"sqlite:///{db}")
    result = CliRunner().invoke(_app(), ["eda", str(config), "--output", "out"])
    assert result.exit_code == 0, result.output
    assert "logged to MLflow run" in result.output
    assert (tmp_path / "out" / "eda.html").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("penguins-eda")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "eda"
    assert run.data.metrics["eda_rows"] == 344
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eda")} >= {
        "eda/eda.html",
        "eda/eda.md",
        "eda/eda_target.png",
    }


def test_unreachable_tracking_server_warns_and_still_writes(
    tmp_path: Path, penguins_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, penguins_csv, f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(_app(), ["eda", str(config), "--sample-rows", "100"])
    assert result.exit_code == 0, result.output
    assert "report not logged to MLflow" in result.output
    assert "unreachable" in result.output
    assert (tmp_path / "reports" / "eda.md").is_file()


def test_eda_command_rejects_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        eda(tmp_path / "absent.yaml", output=tmp_path, sample=10, set_=None)


# --------------------------------------------------------------------------- browser


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (we are root), else the test fails."""
    found = shutil.which("chromium")
    if found is None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=900, check=False, env=env
            )
            assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-2000:]}"
        found = shutil.which("chromium")
    assert found is not None, "chromium is not on PATH after apt-get install chromium"
    return found


def test_eda_page_renders_in_chromium(penguins_report: EdaReport, tmp_path: Path) -> None:
    """Screenshot of the penguins report, kept as test-artifacts/eda.png (with the page)."""
    from PIL import Image

    out = ARTIFACTS / "eda"
    html, _ = write_eda_report(penguins_report, out)
    shot = ARTIFACTS / "eda.png"
    shot.unlink(missing_ok=True)
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,4200",
        html.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 4200)
        rgb = image.convert("RGB")
        # The class-balance and association bar charts are drawn in blue/green: a page whose
        # inline images failed to decode would have none of those pixels.
        colors = rgb.resize((320, 1050)).getcolors(maxcolors=1_000_000) or []
    blue = sum(n for n, (r, g, b) in colors if b > 150 and r < 110 and g < 140)
    assert blue > 2_000, "no plot pixels in the screenshot: inline images did not render"
