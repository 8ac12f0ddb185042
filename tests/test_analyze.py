"""``mlservice analyze``: facts from a real bundle, the prompt, dry runs, and a full run.

The full runs use the real langchain-openai client against the local stand-in server of
``tests.test_llm_chains``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mlservice.bundle import load_bundle, load_metadata, update_bundle_files
from mlservice.cli import _handle_errors
from mlservice.commands.analyze import analyze
from mlservice.config import LLMConfig
from mlservice.llm.analyze import (
    CARD_SECTION,
    analyze_bundle,
    build_facts,
    render_prompt,
    update_card_text,
)
from mlservice.llm.chains import AnalysisResult
from mlservice.llm.prompts import PROMPTS
from tests.conftest import make_config, write_config
from tests.test_llm_chains import ANALYSIS, KEY_ENV, SECRET, StandIn

runner = CliRunner()


def _app() -> typer.Typer:
    """The command registered the way ``mlservice.cli`` registers it."""
    app = typer.Typer(add_completion=False)

    @app.callback()
    def _root() -> None:
        """mlservice (test app)."""

    app.command(name="analyze")(_handle_errors(analyze))
    return app


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def bundle_copy(trained_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / trained_bundle.name
    shutil.copytree(trained_bundle, dst, symlinks=True)
    return dst


@pytest.fixture()
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = StandIn().start()
    yield server
    server.stop()


def _llm(standin: StandIn) -> LLMConfig:
    return LLMConfig(model="stand-in", base_url=standin.url, api_key_env=KEY_ENV, max_retries=0)


def test_build_facts_from_real_bundle(trained_bundle: Path) -> None:
    metadata = load_metadata(trained_bundle)
    facts = build_facts(metadata)
    accuracy = facts["metrics"]["accuracy"]
    assert accuracy["test"] == metadata["metrics"]["test"]["accuracy"]
    assert accuracy["cv_std"] == metadata["metrics"]["cv"]["accuracy"]["std"]
    assert accuracy["gap"] == pytest.approx(
        metadata["metrics"]["train"]["accuracy"] - metadata["metrics"]["test"]["accuracy"]
    )
    assert facts["targets"] == [
        {"metric": "accuracy", "target": ">= 0.8", "observed": accuracy["test"], "met": True}
    ]
    importances = [row["importance"] for row in facts["feature_importance"]]
    assert 0 < len(importances) <= 10 and importances == sorted(importances, reverse=True)
    data = facts["data"]
    assert data["rows"] == 344
    assert set(data["class_balance"]) == {"Adelie", "Chinstrap", "Gentoo"}
    # penguins: 'sex' misses 11 of 344 values, the four measurements 2 each.
    assert data["missing"][0]["feature"] == "sex"
    assert {m["feature"] for m in data["missing"]} >= {"sex", "bill_length_mm"}
    assert "sample_rows" not in facts


def test_render_prompt_has_the_real_metrics(trained_bundle: Path) -> None:
    metadata = load_metadata(trained_bundle)
    prompt = render_prompt(build_facts(metadata))
    test_accuracy = metadata["metrics"]["test"]["accuracy"]
    cv = metadata["metrics"]["cv"]["accuracy"]
    assert f"test {test_accuracy:.4f}" in prompt
    assert f"CV {cv['mean']:.4f} ± {cv['std']:.4f}" in prompt
    assert f"accuracy >= 0.8: observado {test_accuracy:.4f} → cumplido" in prompt
    assert prompt.startswith("[system]\n" + PROMPTS["run_analysis"].system)


def test_dry_run_prints_prompt_and_writes_nothing(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key needed for a dry run
    before = _snapshot(bundle_copy)
    result = runner.invoke(_app(), ["analyze", str(bundle_copy), "--dry-run"])
    assert result.exit_code == 0, result.output
    accuracy = load_metadata(bundle_copy)["metrics"]["test"]["accuracy"]
    assert f"accuracy: train 1.0000 | test {accuracy:.4f}" in result.output
    assert result.output.strip() == render_prompt(build_facts(load_metadata(bundle_copy)))
    assert _snapshot(bundle_copy) == before


def test_raw_rows_only_with_include_sample(bundle_copy: Path) -> None:
    plain = analyze_bundle(bundle_copy, LLMConfig(), dry_run=True)
    assert isinstance(plain, str)
    assert "Torgersen" not in plain and "Muestra de filas" not in plain
    sampled = analyze_bundle(bundle_copy, LLMConfig(), dry_run=True, include_sample=True)
    assert isinstance(sampled, str)
    assert "Muestra de filas de entrenamiento (5)" in sampled
    # The first penguin of the CSV, as sent: the sample is read from the training data.
    assert '"island": "Torgersen", "bill_length_mm": 39.1' in sampled
    assert '"sex": null' in sampled  # row 4 misses its sex: NaN goes out as null


def test_full_analyze_writes_card_and_metadata(bundle_copy: Path, standin: StandIn) -> None:
    llm = _llm(standin)
    result = analyze_bundle(bundle_copy, llm)
    assert isinstance(result, AnalysisResult) and result.summary == ANALYSIS["summary"]

    card = (bundle_copy / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.count(CARD_SECTION) == 1
    assert card.index(CARD_SECTION) < card.index("## Changelog")
    assert ANALYSIS["summary"] in card and "- Vigilar la clase minoritaria Chinstrap." in card
    saved = load_metadata(bundle_copy)["llm_analysis"]
    assert saved["prompt"] == "run_analysis" and saved["prompt_version"] == "1"
    assert saved["model"] == "stand-in" and saved["confidence"] == pytest.approx(0.8)
    assert load_bundle(bundle_copy).metadata["llm_analysis"] == saved  # hashes still verify

    # What was sent is exactly the dry-run prompt's user message.
    sent = standin.requests[0]["json"]["messages"][1]["content"]
    dry = analyze_bundle(bundle_copy, llm, dry_run=True)
    assert isinstance(dry, str) and dry.endswith(sent)

    # A second analysis replaces the section instead of adding another one.
    standin.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = json.dumps(
        {**ANALYSIS, "summary": "Segundo análisis."}
    )
    analyze_bundle(bundle_copy, llm)
    card = (bundle_copy / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.count(CARD_SECTION) == 1 and "Segundo análisis." in card
    assert ANALYSIS["summary"] not in card
    load_bundle(bundle_copy)


def test_cli_uses_config_llm_section(bundle_copy: Path, standin: StandIn, tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        **{"llm.base_url": standin.url, "llm.model": "from-config", "llm.api_key_env": KEY_ENV},
    )
    path = write_config(tmp_path / "c.yaml", config)
    result = runner.invoke(_app(), ["analyze", str(bundle_copy), "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert ANALYSIS["summary"] in result.output and "confidence 0.80" in result.output
    assert standin.requests[0]["json"]["model"] == "from-config"
    assert load_metadata(bundle_copy)["llm_analysis"]["model"] == "from-config"


def test_cli_errors_exit_2_without_traceback(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = _snapshot(bundle_copy)
    # The bundle's saved llm section: OpenAI, key from OPENAI_API_KEY, which is not set.
    missing_key = runner.invoke(_app(), ["analyze", str(bundle_copy)])
    assert missing_key.exit_code == 2
    assert "LLMError" in missing_key.output and "'OPENAI_API_KEY'" in missing_key.output
    assert "Traceback" not in missing_key.output

    config = write_config(tmp_path / "c.yaml", make_config(tmp_path, **{"llm.provider": "none"}))
    no_provider = runner.invoke(_app(), ["analyze", str(bundle_copy), "--config", str(config)])
    assert no_provider.exit_code == 2 and "no provider configured" in no_provider.output

    not_a_bundle = runner.invoke(_app(), ["analyze", str(tmp_path / "nope")])
    assert not_a_bundle.exit_code == 2 and "BundleError" in not_a_bundle.output
    assert _snapshot(bundle_copy) == before


def test_analysis_logged_to_mlflow_run(
    bundle_copy: Path, standin: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("analyze", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(experiment).info.run_id
    update_bundle_files(bundle_copy, {}, {"mlflow": {"run_id": run_id, "tracking_uri": uri}})

    analyze_bundle(bundle_copy, _llm(standin))
    downloaded = client.download_artifacts(run_id, "llm_analysis.json", str(tmp_path))
    logged = json.loads(Path(downloaded).read_text(encoding="utf-8"))
    assert logged["summary"] == ANALYSIS["summary"] and logged["prompt_version"] == "1"

    # An MLflow failure is a warning: the card and metadata are still written.
    update_bundle_files(bundle_copy, {}, {"mlflow": {"run_id": "no-such-run", "tracking_uri": uri}})
    with caplog.at_level(logging.WARNING, logger="mlservice.llm.analyze"):
        analyze_bundle(bundle_copy, _llm(standin))
    assert "could not log the LLM analysis to MLflow run no-such-run" in caplog.text
    assert "llm_analysis" in load_metadata(bundle_copy)


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("# M\n\n## Uso\n\nx\n", "# M\n\n## Uso\n\nx\n\n## Análisis LLM\n\nnew\n"),
        (
            "# M\n\n## Uso\n\nx\n\n## Changelog\n\n| a |\n",
            "# M\n\n## Uso\n\nx\n\n## Análisis LLM\n\nnew\n\n## Changelog\n\n| a |\n",
        ),
        (
            "# M\n\n## Análisis LLM\n\nold\n\n## Changelog\n\n| a |\n",
            "# M\n\n## Análisis LLM\n\nnew\n\n## Changelog\n\n| a |\n",
        ),
        ("# M\n\n## Análisis LLM\n\nold\n", "# M\n\n## Análisis LLM\n\nnew\n"),
    ],
    ids=["append", "before-changelog", "replace", "replace-last"],
)
def test_update_card_text(card: str, expected: str) -> None:
    assert update_card_text(card, f"{CARD_SECTION}\n\nnew\n") == expected
