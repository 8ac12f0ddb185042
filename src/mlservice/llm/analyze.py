"""``mlservice analyze``: the facts of a run → LLM → the model card, metadata.json and MLflow.

Only aggregates leave the machine: metrics (train, test, CV spread), targets vs observed, the
train/test gap, the top feature importances and a data profile (rows, class balance, missing
fractions). Raw rows are sent only with ``include_sample=True``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlservice.config import LLMConfig
from mlservice.errors import ConfigError, LLMError, MlserviceError
from mlservice.llm.prompts import format_facts, get_prompt

if TYPE_CHECKING:
    from mlservice.llm.chains import AnalysisResult

__all__ = [
    "ANALYSIS_ARTIFACT",
    "CARD_SECTION",
    "PROMPT_NAME",
    "analyze_bundle",
    "build_facts",
    "render_prompt",
    "resolve_llm_config",
    "update_card_text",
]

log = logging.getLogger(__name__)

PROMPT_NAME = "run_analysis"
CARD_SECTION = "## Análisis LLM"
ANALYSIS_ARTIFACT = "llm_analysis.json"
CARD_FILE = "MODEL_CARD.md"
_TOP_FEATURES = 10
_SAMPLE_ROWS = 5


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if value != value else float(value)  # NaN → None


def _metric_facts(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    train, test, cv = metrics.get("train", {}), metrics.get("test", {}), metrics.get("cv", {})
    rows: dict[str, dict[str, float | None]] = {}
    for metric in dict.fromkeys([*test, *train]):
        train_value, test_value = _float(train.get(metric)), _float(test.get(metric))
        spread = cv.get(metric) or {}
        rows[str(metric)] = {
            "train": train_value,
            "test": test_value,
            "cv_mean": _float(spread.get("mean")),
            "cv_std": _float(spread.get("std")),
            "gap": (
                train_value - test_value
                if train_value is not None and test_value is not None
                else None
            ),
        }
    return rows


def _data_facts(metadata: dict[str, Any]) -> dict[str, Any]:
    data = metadata.get("data") or {}
    split = metadata.get("split") or {}
    features = metadata.get("features") or []
    missing = [
        {"feature": str(f["name"]), "missing_fraction": float(f["missing_fraction"])}
        for f in features
        if _float(f.get("missing_fraction")) and float(f["missing_fraction"]) > 0
    ]
    return {
        "rows": data.get("n_rows"),
        "columns": data.get("n_columns"),
        "n_train": split.get("n_train"),
        "n_test": split.get("n_test"),
        "n_features": len(features),
        "feature_types": dict(Counter(str(f.get("type")) for f in features)),
        "class_balance": data.get("class_balance"),
        "missing": sorted(missing, key=lambda m: m["missing_fraction"], reverse=True),
    }


def build_facts(
    metadata: dict[str, Any], *, include_sample: bool = False, sample_rows: list[Any] | None = None
) -> dict[str, Any]:
    """The aggregates of a bundle's ``metadata.json`` the LLM sees (raw rows only on request)."""
    model = metadata.get("model") or {}
    target = metadata.get("target") or {}
    importance = sorted(
        metadata.get("feature_importance") or [],
        key=lambda row: _float(row.get("importance")) or 0.0,
        reverse=True,
    )[:_TOP_FEATURES]
    facts: dict[str, Any] = {
        "model": {
            "name": metadata.get("name"),
            "version": metadata.get("version"),
            "bundle_id": metadata.get("bundle_id"),
            "task": metadata.get("task"),
            "target": target.get("name"),
            "estimator": model.get("type"),
        },
        "metrics": _metric_facts(metadata.get("metrics") or {}),
        "targets": [
            {
                "metric": row.get("metric"),
                "target": row.get("text"),
                "observed": _float(row.get("observed")),
                "met": bool(row.get("met")),
            }
            for row in metadata.get("targets") or []
        ],
        "gate_passed": bool((metadata.get("gate") or {}).get("passed")),
        "feature_importance": [
            {
                "feature": str(row.get("feature")),
                "importance": _float(row.get("importance")),
                "std": _float(row.get("std")),
            }
            for row in importance
        ],
        "data": _data_facts(metadata),
        "notes": list(metadata.get("notes") or []),
    }
    if include_sample:
        facts["sample_rows"] = list(sample_rows or [])
    return facts


def render_prompt(facts: dict[str, Any], *, prompt_name: str = PROMPT_NAME) -> str:
    """The full prompt text (system + user message) that the chain sends for ``facts``."""
    return get_prompt(prompt_name).render(facts=format_facts(facts))


def resolve_llm_config(metadata: dict[str, Any], config_path: Path | None = None) -> LLMConfig:
    """``--config`` YAML's ``llm`` section, else the one saved in the bundle, else defaults."""
    if config_path is not None:
        from mlservice.config import load_config

        return load_config(config_path).llm
    saved = (metadata.get("config") or {}).get("llm")
    if isinstance(saved, dict):
        try:
            return LLMConfig.model_validate(saved)
        except ValueError as exc:
            raise ConfigError(
                f"the llm section saved in the bundle's metadata.json is invalid: {exc}; "
                "pass --config with a valid llm section"
            ) from exc
    return LLMConfig()


def _card_section(result: dict[str, Any], *, model: str, prompt: str, version: str) -> str:
    lines = [CARD_SECTION, "", result["summary"].strip(), ""]
    if result["key_points"]:
        lines += ["**Puntos clave**", "", *(f"- {p}" for p in result["key_points"]), ""]
    if result["recommendations"]:
        lines += ["**Recomendaciones**", "", *(f"- {r}" for r in result["recommendations"]), ""]
    lines += [
        f"Confianza: {result['confidence']:.2f} · modelo `{model}` · prompt `{prompt}` "
        f"v{version}. Generado por un LLM a partir de las métricas agregadas; revísalo.",
        "",
    ]
    return "\n".join(lines)


def update_card_text(card: str, section: str) -> str:
    """``card`` with ``section`` replacing its ``## Análisis LLM`` or placed before Changelog."""
    heading = re.compile(r"^## .*$", re.MULTILINE)
    starts = [(m.start(), m.group(0).strip()) for m in heading.finditer(card)]
    section = section.strip("\n") + "\n\n"
    for i, (start, title) in enumerate(starts):
        if title == CARD_SECTION:
            end = starts[i + 1][0] if i + 1 < len(starts) else len(card)
            return (card[:start] + section + card[end:]).rstrip("\n") + "\n"
    for start, title in starts:
        if title == "## Changelog":
            return card[:start] + section + card[start:]
    return card.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def _read_sample_rows(metadata: dict[str, Any], n: int = _SAMPLE_ROWS) -> list[dict[str, Any]]:
    """First ``n`` rows of the training data (features + target), read from its source."""
    from mlservice.config import DataConfig
    from mlservice.data import load_dataset

    raw = (metadata.get("config") or {}).get("data")
    if not isinstance(raw, dict):
        raise LLMError("--include-sample: the bundle's metadata.json does not record its data")
    try:
        frame = load_dataset(DataConfig.model_validate(raw), base_dir=Path.cwd()).frame
    except (MlserviceError, OSError, ValueError) as exc:
        raise LLMError(
            f"--include-sample reads rows from the training data {raw.get('source')!r}, which "
            f"cannot be read here ({exc}); run from the project directory or drop --include-sample"
        ) from exc
    import pandas as pd

    columns = [c for c in [*metadata.get("feature_names", []), raw.get("target")] if c in frame]
    head = frame[columns].head(n).astype(object)
    head = head.where(pd.notna(head), None)  # NaN → null in the prompt
    return [{str(k): v for k, v in row.items()} for row in head.to_dict(orient="records")]


def _log_to_mlflow(metadata: dict[str, Any], payload: dict[str, Any]) -> None:
    """Attach the analysis to the run's MLflow record; failures are only warnings."""
    tracking = metadata.get("mlflow") or {}
    run_id = tracking.get("run_id")
    if not run_id:
        return
    try:
        import mlflow  # only with the train extra; serving installs never reach this
    except ImportError:
        log.info("mlflow is not installed; the analysis is not logged to MLflow")
        return
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking.get("tracking_uri"))
        client.log_dict(str(run_id), payload, ANALYSIS_ARTIFACT)
    except Exception as exc:  # MLflow raises many unrelated types; the card is already written
        log.warning("could not log the LLM analysis to MLflow run %s: %s", run_id, exc)


def analyze_bundle(
    bundle_path: str | Path,
    llm_config: LLMConfig,
    *,
    dry_run: bool = False,
    include_sample: bool = False,
    sample_rows: list[Any] | None = None,
) -> AnalysisResult | str:
    """Analyze a bundle's run with the LLM; ``dry_run`` returns the prompt and changes nothing.

    On success the analysis is written into the bundle's ``MODEL_CARD.md`` (section
    ``## Análisis LLM``) and ``metadata.json`` (``llm_analysis``), and logged to the MLflow run
    if the bundle has one. Returns the ``AnalysisResult`` (or the prompt text on a dry run).
    """
    from mlservice.bundle import load_metadata, resolve_bundle_path, update_bundle_files

    path = resolve_bundle_path(bundle_path)
    metadata = load_metadata(path)
    if include_sample and sample_rows is None:
        sample_rows = _read_sample_rows(metadata)
    facts = build_facts(metadata, include_sample=include_sample, sample_rows=sample_rows)
    spec = get_prompt(PROMPT_NAME)
    if dry_run:
        return render_prompt(facts)

    from mlservice.llm.chains import create_analysis_chain, run_analysis

    chain = create_analysis_chain(llm_config, prompt_name=spec.name)
    result = run_analysis(chain, facts)
    payload = {
        **result.model_dump(mode="json"),
        "prompt": spec.name,
        "prompt_version": spec.version,
        "model": llm_config.model,
        "include_sample": include_sample,
    }
    card_path = path / CARD_FILE
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    section = _card_section(payload, model=llm_config.model, prompt=spec.name, version=spec.version)
    new_card = update_card_text(card, section)
    update_bundle_files(path, {CARD_FILE: new_card}, {"llm_analysis": payload})
    _log_to_mlflow(metadata, payload)
    return result
