"""The analysis chain: prompt | chat model with structured output ``AnalysisResult``.

The provider is any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama,
llama.cpp server) through ``llm.base_url``. Structured output uses tool calling
(``method="function_calling"``): every one of those servers answers a forced tool call, while
OpenAI's ``json_schema`` response format is not universally supported.

The API key is read from the environment variable ``llm.api_key_env`` at chain creation; it is
held as a ``SecretStr`` by the client and never written to files, logs or error messages. A local
server (``127.0.0.1``/``localhost``) needs no key, so a placeholder is used when none is set.

Every failure of a call surfaces as ``LLMError`` from ``run_analysis``: a refused key, an
unreachable endpoint, a timeout, an error status, or output that does not parse.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError

from mlservice.config import LLMConfig
from mlservice.errors import LLMError, MissingExtraError
from mlservice.llm.prompts import format_facts, get_prompt

__all__ = ["AnalysisResult", "create_analysis_chain", "run_analysis"]

log = logging.getLogger(__name__)

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_LOCAL_PLACEHOLDER_KEY = "not-needed-for-local-server"
_INSTALL_HINT = "pip install 'mlservice[llm]'"
# Tokens that look like credentials (sk-…, long opaque strings) are masked in server messages.
_TOKENISH = re.compile(r"\b(?:sk-[A-Za-z0-9_\-*.]{4,}|[A-Za-z0-9_\-]{32,})\b")


class AnalysisResult(BaseModel):
    """Structured analysis of one training run, returned by the LLM through a tool call."""

    summary: str = Field(description="Two to four sentences: how good the model is and why.")
    key_points: list[str] = Field(
        description="Findings backed by the facts (metrics vs targets, CV spread, gap, data)."
    )
    confidence: float = Field(
        ge=0.0, le=1.0, description="How well the facts support this analysis, from 0 to 1."
    )
    recommendations: list[str] = Field(
        description="Concrete next steps to improve the model or its data."
    )


def _is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    return (urlsplit(base_url).hostname or "") in _LOCAL_HOSTS


def _api_key(llm_config: LLMConfig) -> str:
    key = os.environ.get(llm_config.api_key_env, "")
    if key:
        return key
    if _is_local(llm_config.base_url):
        return _LOCAL_PLACEHOLDER_KEY
    where = llm_config.base_url or "the OpenAI API"
    raise LLMError(
        f"no API key for {where}: environment variable {llm_config.api_key_env!r} "
        f"(llm.api_key_env) is not set. Export it, e.g. `export {llm_config.api_key_env}=...`; "
        "keys are read from the environment only, never from files."
    )


def create_analysis_chain(llm_config: LLMConfig, *, prompt_name: str = "run_analysis") -> Any:
    """``prompt | ChatOpenAI(...).with_structured_output(AnalysisResult)`` for ``llm_config``.

    Invoke it with ``{"facts": format_facts(facts)}``, or use ``run_analysis``. Creating the chain
    does no network I/O.
    """
    if llm_config.provider == "none":
        raise LLMError(
            "no provider configured: llm.provider is 'none'. Set llm.provider: openai in the "
            "config (with llm.base_url for a local OpenAI-compatible server such as vLLM, Ollama "
            "or llama.cpp), or pass --config with an llm section."
        )
    try:
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise MissingExtraError(
            f"the LLM analysis needs the llm extra ({exc.name} is not installed): {_INSTALL_HINT}"
        ) from exc
    from pydantic import SecretStr

    spec = get_prompt(prompt_name)
    prompt = ChatPromptTemplate.from_messages(spec.messages())
    model = ChatOpenAI(
        model=llm_config.model,
        base_url=llm_config.base_url,
        api_key=SecretStr(_api_key(llm_config)),
        temperature=llm_config.temperature,
        timeout=llm_config.timeout_s,
        max_retries=llm_config.max_retries,
        # Chat Completions is what OpenAI-compatible servers implement; never the Responses API.
        use_responses_api=False,
    )
    log.debug(
        "analysis chain: model %r at %s, prompt %s v%s, timeout %ss, max_retries %d",
        llm_config.model,
        llm_config.base_url or "api.openai.com",
        spec.name,
        spec.version,
        llm_config.timeout_s,
        llm_config.max_retries,
    )
    structured = model.with_structured_output(AnalysisResult, method="function_calling")
    return prompt | structured


def _chain_secrets(chain: Any) -> list[str]:
    """API keys held by the chat models of ``chain``, to mask them in error text."""
    secrets: list[str] = []
    pending = [chain]
    while pending:
        step = pending.pop()
        pending.extend(getattr(step, "steps", []) or [])
        bound = getattr(step, "bound", None)
        if bound is not None:
            pending.append(bound)
        key = getattr(step, "openai_api_key", None)
        if key is not None and hasattr(key, "get_secret_value"):
            secrets.append(str(key.get_secret_value()))
    return [s for s in secrets if s]


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return _TOKENISH.sub("***", text)


def _endpoint(exc: Any) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    return f" at {url}" if url is not None else ""


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)  # the parsed ``error`` object of an OpenAI-style body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:300]
    message = str(getattr(exc, "message", None) or exc)
    return re.sub(r"^Error code: \d+ - ", "", message)[:300]


def _map_error(exc: Exception, secrets: list[str]) -> LLMError | None:
    """The ``LLMError`` for a failure of the call, or None when ``exc`` is not one we know."""
    import openai
    from langchain_core.exceptions import OutputParserException

    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMError(
            f"the LLM endpoint{_endpoint(exc)} refused the API key (HTTP {exc.status_code}); "
            "check the key in the environment variable named by llm.api_key_env"
        )
    if isinstance(exc, openai.APITimeoutError):
        return LLMError(
            f"the LLM endpoint{_endpoint(exc)} did not answer within llm.timeout_s "
            "(after the configured retries); raise llm.timeout_s or check the server"
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMError(
            f"cannot reach the LLM endpoint{_endpoint(exc)}: connection failed. Is the server "
            "running, and is llm.base_url right?"
        )
    if isinstance(exc, openai.APIStatusError):
        detail = _redact(_server_message(exc), secrets)
        return LLMError(
            f"the LLM endpoint{_endpoint(exc)} answered HTTP {exc.status_code}: {detail}"
        )
    if isinstance(exc, OutputParserException | ValidationError | openai.LengthFinishReasonError):
        detail = _redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, secrets)
        return LLMError(
            f"the LLM answer does not parse as AnalysisResult ({type(exc).__name__}: {detail}); "
            "the model must support tool calling. Try another model or retry."
        )
    if isinstance(exc, openai.OpenAIError):
        detail = _redact(str(exc), secrets)[:300]
        return LLMError(f"the LLM call failed ({type(exc).__name__}): {detail}")
    return None


def run_analysis(chain: Any, facts: dict[str, Any]) -> AnalysisResult:
    """Invoke ``chain`` on ``facts``; every failure becomes an ``LLMError`` with a clear message."""
    secrets = _chain_secrets(chain)
    try:
        result = chain.invoke({"facts": format_facts(facts)})
    except Exception as exc:  # the client raises many unrelated types; map the known ones
        mapped = _map_error(exc, secrets)
        if mapped is None:
            raise
        raise mapped from None  # the original may carry request details; keep it out
    if not isinstance(result, AnalysisResult):
        # The tool parser yields None for a missing tool call and for arguments that are not JSON.
        raise LLMError(
            "the LLM answer does not parse as AnalysisResult: no AnalysisResult tool call with "
            "valid JSON arguments; the model must support tool calling. Try another model or retry."
        )
    return result
