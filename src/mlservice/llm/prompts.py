"""Prompts as named, versioned templates, and the text rendering of a run's facts.

Each prompt has a ``name`` and a ``version``; ``mlservice analyze`` records both in the bundle's
``metadata.json`` (``llm_analysis.prompt`` / ``prompt_version``) so an analysis can be traced to
the exact wording that produced it. Change the wording → bump the version.

Templates use ``str.format`` fields (``{facts}``), the same syntax LangChain's f-string
``ChatPromptTemplate`` uses, so the dry-run text and the messages sent are identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlservice.errors import LLMError

__all__ = ["PROMPTS", "PromptSpec", "format_facts", "get_prompt"]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: a system message and a human-message template with ``{placeholders}``."""

    name: str
    version: str
    system: str
    template: str

    def messages(self) -> list[tuple[str, str]]:
        """``(role, template)`` pairs for ``ChatPromptTemplate.from_messages``."""
        return [("system", self.system), ("human", self.template)]

    def render(self, **values: str) -> str:
        """The whole prompt as plain text (what ``--dry-run`` prints)."""
        return f"[system]\n{self.system}\n\n[user]\n{self.template.format(**values)}"


_RUN_ANALYSIS_SYSTEM = (
    "Eres un revisor experto de modelos de machine learning. Recibes los hechos de una "
    "ejecución de entrenamiento (métricas, objetivos, validación cruzada, importancia de "
    "variables y perfil de datos) y devuelves un análisis estructurado.\n"
    "Reglas:\n"
    "- Usa solo los hechos dados; no inventes cifras. Cita los valores que uses.\n"
    "- Señala sobreajuste si la brecha train − test es grande, inestabilidad si la desviación "
    "de la validación cruzada es alta, y objetivos no cumplidos.\n"
    "- Comenta desequilibrio de clases, valores faltantes y variables dominantes si aparecen.\n"
    "- Recomendaciones concretas y accionables (datos, variables, modelo, umbrales).\n"
    "- confidence (0 a 1): cuánto respaldan los hechos tu análisis (pocos datos o métricas "
    "inestables → menor).\n"
    "- Escribe en español."
)

_RUN_ANALYSIS_TEMPLATE = (
    "Analiza esta ejecución de entrenamiento y responde con la herramienta AnalysisResult.\n\n"
    "{facts}"
)

#: Every prompt mlservice sends, by name.
PROMPTS: dict[str, PromptSpec] = {
    "run_analysis": PromptSpec(
        name="run_analysis",
        version="1",
        system=_RUN_ANALYSIS_SYSTEM,
        template=_RUN_ANALYSIS_TEMPLATE,
    ),
}


def get_prompt(name: str) -> PromptSpec:
    """The prompt called ``name``; ``LLMError`` listing the known names otherwise."""
    try:
        return PROMPTS[name]
    except KeyError:
        raise LLMError(f"unknown prompt {name!r}; known prompts: {sorted(PROMPTS)}") from None


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4f}"
    return str(value)


def _metric_lines(facts: dict[str, Any]) -> list[str]:
    lines = ["## Métricas (train | test | CV media ± desv. | brecha train − test)"]
    for metric, row in facts.get("metrics", {}).items():
        cv = (
            f"{_num(row.get('cv_mean'))} ± {_num(row.get('cv_std'))}"
            if row.get("cv_mean") is not None
            else "n/a"
        )
        lines.append(
            f"- {metric}: train {_num(row.get('train'))} | test {_num(row.get('test'))} | "
            f"CV {cv} | brecha {_num(row.get('gap'))}"
        )
    return lines


def _target_lines(facts: dict[str, Any]) -> list[str]:
    targets = facts.get("targets", [])
    verdict = "todos cumplidos" if facts.get("gate_passed") else "NO todos cumplidos"
    lines = [f"## Objetivos ({verdict})"]
    for row in targets:
        met = "cumplido" if row.get("met") else "NO cumplido"
        lines.append(
            f"- {row.get('metric')} {row.get('target')}: observado {_num(row.get('observed'))} "
            f"→ {met}"
        )
    if not targets:
        lines.append("- (sin objetivos)")
    return lines


def _importance_lines(facts: dict[str, Any]) -> list[str]:
    lines = ["## Importancia de variables (permutación en test, top 10: media ± desv.)"]
    for row in facts.get("feature_importance", []):
        lines.append(f"- {row['feature']}: {_num(row.get('importance'))} ± {_num(row.get('std'))}")
    return lines


def _data_lines(facts: dict[str, Any]) -> list[str]:
    data = facts.get("data", {})
    lines = [
        "## Datos",
        f"- filas: {data.get('rows')} (train {data.get('n_train')}, test {data.get('n_test')}); "
        f"columnas: {data.get('columns')}; variables: {data.get('n_features')}",
    ]
    types = data.get("feature_types") or {}
    if types:
        lines.append("- tipos: " + ", ".join(f"{k} {v}" for k, v in types.items()))
    balance = data.get("class_balance")
    if balance:
        lines.append(
            "- balance de clases: " + ", ".join(f"{k} {_num(v)}" for k, v in balance.items())
        )
    missing = data.get("missing") or []
    if missing:
        lines.append(
            "- fracción de faltantes: "
            + ", ".join(f"{m['feature']} {_num(m['missing_fraction'])}" for m in missing)
        )
    else:
        lines.append("- sin valores faltantes en las variables")
    return lines


def format_facts(facts: dict[str, Any]) -> str:
    """The facts of ``mlservice.llm.analyze.build_facts`` as compact Markdown for the prompt."""
    model = facts.get("model", {})
    lines = [
        f"# Modelo {model.get('name')} v{model.get('version')}",
        f"- tarea: {model.get('task')}; objetivo: {model.get('target')!r}; "
        f"estimador: {model.get('estimator')}",
        "",
        *_metric_lines(facts),
        "",
        *_target_lines(facts),
        "",
        *_importance_lines(facts),
        "",
        *_data_lines(facts),
    ]
    notes = facts.get("notes") or []
    if notes:
        lines += ["", "## Notas del entrenamiento", *(f"- {note}" for note in notes)]
    sample = facts.get("sample_rows")
    if sample:
        lines += ["", f"## Muestra de filas de entrenamiento ({len(sample)})"]
        lines += [json.dumps(row, ensure_ascii=False, default=str) for row in sample]
    return "\n".join(lines)
