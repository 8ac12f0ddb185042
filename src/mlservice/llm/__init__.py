"""LLM integration: structured run analysis with LangChain, and text embeddings.

- ``mlservice.llm.chains``: ``create_analysis_chain(llm_config)`` → ``prompt | chat model`` with
  structured output ``AnalysisResult``; ``run_analysis`` maps every provider failure to
  ``LLMError`` (needs the ``[llm]`` extra).
- ``mlservice.llm.prompts``: named, versioned prompt templates.
- ``mlservice.llm.analyze``: the facts of a bundle's run, the prompt, and ``analyze_bundle``.
- ``mlservice.llm.embeddings``: ``create_embedding_function`` and the scikit-learn
  ``TextEmbedder`` on the packaged MiniLM, offline (needs the ``[text]`` extra).

Importing this package imports none of them (no LangChain, no torch): names resolve on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlservice.llm.analyze import analyze_bundle, build_facts, render_prompt
    from mlservice.llm.chains import AnalysisResult, create_analysis_chain, run_analysis
    from mlservice.llm.embeddings import TextEmbedder, create_embedding_function
    from mlservice.llm.prompts import PROMPTS, PromptSpec

__all__ = [
    "PROMPTS",
    "AnalysisResult",
    "PromptSpec",
    "TextEmbedder",
    "analyze_bundle",
    "build_facts",
    "create_analysis_chain",
    "create_embedding_function",
    "render_prompt",
    "run_analysis",
]

_MODULE_OF = {
    "PROMPTS": "prompts",
    "PromptSpec": "prompts",
    "AnalysisResult": "chains",
    "create_analysis_chain": "chains",
    "run_analysis": "chains",
    "analyze_bundle": "analyze",
    "build_facts": "analyze",
    "render_prompt": "analyze",
    "TextEmbedder": "embeddings",
    "create_embedding_function": "embeddings",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'mlservice.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlservice.llm.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
