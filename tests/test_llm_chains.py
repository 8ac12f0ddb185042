"""The analysis chain with the real langchain-openai client against a local stand-in server.

``StandIn`` is a tiny OpenAI-compatible ``POST /v1/chat/completions`` server on 127.0.0.1 that
answers with chat-completion bodies in the shape the OpenAI API returns (a forced tool call
carrying the ``AnalysisResult`` arguments), or with errors and delays on demand. It records every
request so tests can check what the client actually sent.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlservice.config import LLMConfig
from mlservice.errors import LLMError
from mlservice.llm.chains import AnalysisResult, create_analysis_chain, run_analysis

KEY_ENV = "MLSERVICE_TEST_LLM_KEY"
SECRET = "sk-test-0123456789abcdefSECRETKEYdoNotLeak"

ANALYSIS: dict[str, Any] = {
    "summary": "El modelo supera su objetivo de accuracy con margen.",
    "key_points": ["accuracy test 0.9710 ≥ 0.85", "CV estable (± 0.0052)"],
    "confidence": 0.8,
    "recommendations": ["Vigilar la clase minoritaria Chinstrap."],
}

FACTS: dict[str, Any] = {
    "model": {"name": "m", "version": "1.0.0", "task": "classification", "target": "y"},
    "metrics": {"accuracy": {"train": 1.0, "test": 0.971, "cv_mean": 0.98, "cv_std": 0.0052}},
    "targets": [{"metric": "accuracy", "target": ">= 0.85", "observed": 0.971, "met": True}],
    "gate_passed": True,
}


def completion(*, arguments: str | None = None, content: str | None = None) -> dict[str, Any]:
    """A chat.completion body as the OpenAI API returns it (tool call or plain content)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if arguments is not None:
        message["tool_calls"] = [
            {
                "id": "call_standin_1",
                "type": "function",
                "function": {"name": "AnalysisResult", "arguments": arguments},
            }
        ]
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "stand-in",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if arguments is not None else "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180},
    }


def tool_call_response(result: dict[str, Any] | None = None) -> dict[str, Any]:
    return completion(arguments=json.dumps(result or ANALYSIS, ensure_ascii=False))


class StandIn:
    """OpenAI-compatible chat-completions stand-in on 127.0.0.1, served from a thread."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, Any] = tool_call_response()
        self.delay = False  # hold the answer until ``release`` is set (or 10 s pass)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                standin.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": payload,
                    }
                )
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if standin.delay:
                    standin.release.wait(10)
                self._send(standin.status, standin.body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> StandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


def llm_config(base_url: str | None, **overrides: Any) -> LLMConfig:
    values: dict[str, Any] = {
        "provider": "openai",
        "model": "stand-in",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "timeout_s": 5.0,
        "max_retries": 0,
        **overrides,
    }
    return LLMConfig(**values)


@pytest.fixture()
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def test_structured_output_parsed_from_tool_call(standin: StandIn, secret_key: str) -> None:
    chain = create_analysis_chain(llm_config(standin.url))
    result = run_analysis(chain, FACTS)
    assert isinstance(result, AnalysisResult)
    assert result.model_dump() == ANALYSIS
    (request,) = standin.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {secret_key}"
    sent = request["json"]
    assert sent["model"] == "stand-in"
    # Forced tool call: what every OpenAI-compatible server (vLLM, Ollama, llama.cpp) answers.
    assert sent["tool_choice"]["function"]["name"] == "AnalysisResult"
    schema = sent["tools"][0]["function"]["parameters"]
    assert set(schema["required"]) == {"summary", "key_points", "confidence", "recommendations"}
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user"]
    assert "accuracy: train 1.0000 | test 0.9710" in sent["messages"][1]["content"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (completion(arguments='{"summary": "cut off'), "does not parse"),
        (tool_call_response({**ANALYSIS, "confidence": 3.5}), "does not parse"),
        (tool_call_response({"summary": "no other fields"}), "does not parse"),
        (completion(content="Here is my analysis, in prose."), "no AnalysisResult tool call"),
    ],
    ids=["truncated-json", "confidence-out-of-range", "missing-fields", "no-tool-call"],
)
def test_malformed_output_is_llm_error(
    standin: StandIn, secret_key: str, body: dict[str, Any], expected: str
) -> None:
    standin.body = body
    chain = create_analysis_chain(llm_config(standin.url))
    with pytest.raises(LLMError, match=expected):
        run_analysis(chain, FACTS)


def test_timeout_is_llm_error_in_bounded_time(standin: StandIn, secret_key: str) -> None:
    standin.delay = True
    chain = create_analysis_chain(llm_config(standin.url, timeout_s=1.0, max_retries=0))
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"did not answer within llm\.timeout_s"):
        run_analysis(chain, FACTS)
    assert time.monotonic() - started < 10
    assert len(standin.requests) == 1


def test_refused_key_is_llm_error_without_the_key(standin: StandIn, secret_key: str) -> None:
    standin.status = 401
    standin.body = {
        "error": {
            "message": f"Incorrect API key provided: {secret_key}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    chain = create_analysis_chain(llm_config(standin.url))
    with pytest.raises(LLMError, match=r"refused the API key \(HTTP 401\)") as info:
        run_analysis(chain, FACTS)
    assert secret_key not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_error_status_is_retried_a_bounded_number_of_times(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_key = "plainkey-42"  # short and without 'sk-': only the chain's own key can mask it
    monkeypatch.setenv(KEY_ENV, plain_key)
    standin.status = 503
    standin.body = {"error": {"message": f"overloaded, key {plain_key} throttled"}}
    chain = create_analysis_chain(llm_config(standin.url, max_retries=1))
    with pytest.raises(LLMError, match=r"answered HTTP 503: overloaded, key \*\*\* throttled"):
        run_analysis(chain, FACTS)
    assert len(standin.requests) == 2  # the first try + llm.max_retries


def test_unreachable_endpoint_is_llm_error(secret_key: str) -> None:
    # A bound socket that never listens: connecting to it is refused, with no race on the port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        chain = create_analysis_chain(llm_config(f"http://127.0.0.1:{port}/v1"))
        with pytest.raises(LLMError, match="cannot reach the LLM endpoint"):
            run_analysis(chain, FACTS)


def test_provider_none_is_llm_error() -> None:
    with pytest.raises(LLMError, match="no provider configured"):
        create_analysis_chain(LLMConfig(provider="none"))


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(LLMError, match=f"environment variable '{KEY_ENV}'"):
        create_analysis_chain(llm_config("https://llm.example.com/v1"))
    with pytest.raises(LLMError, match=f"environment variable '{KEY_ENV}'"):
        create_analysis_chain(llm_config(None))


def test_local_server_needs_no_key(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    result = run_analysis(create_analysis_chain(llm_config(standin.url)), FACTS)
    assert result.confidence == pytest.approx(0.8)
    assert standin.requests[0]["headers"]["authorization"].startswith("Bearer not-needed")


def test_importing_does_no_work() -> None:
    # No LangChain, OpenAI client, torch or MLflow until a chain or an embedding is asked for.
    code = (
        "import sys, mlservice.llm, mlservice.llm.analyze, mlservice.llm.prompts, "
        "mlservice.llm.embeddings, mlservice.commands.analyze\n"
        "heavy = ('langchain', 'openai', 'torch', 'sentence_transformers', 'mlflow')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_key_never_in_logs(
    standin: StandIn, secret_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run_analysis(create_analysis_chain(llm_config(standin.url)), FACTS)
    standin.status = 401
    standin.body = {"error": {"message": f"Incorrect API key provided: {secret_key}"}}
    with pytest.raises(LLMError):
        run_analysis(create_analysis_chain(llm_config(standin.url)), FACTS)
    # The client did log the requests at DEBUG (so the check below has something to look at).
    assert any(record.name.startswith(("openai", "httpx")) for record in caplog.records)
    assert secret_key not in caplog.text
    assert all(secret_key not in str(record.args) for record in caplog.records)
