"""The predict fast path (``mlservice.api.fast_path``) against the FastAPI route it short-cuts.

Its guarantee: for every request, the answer with the fast path on is the answer with it off.
Valid requests for ONNX-served models are answered by the fast path; everything else is
deferred, untouched, to the route. Two apps on the same bundle (``fast_path`` on and off) get
the same bodies here, and the ``mlservice_fast_path_total`` counter says who answered.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins

from mlservice.api import ApiSettings, create_app, settings_from_env
from mlservice.api.fast_path import FastPredictMiddleware, MicroBatcher
from mlservice.api.middleware import _json_line
from mlservice.bundle import load_metadata
from mlservice.data.loading import BUILTIN_DATASETS
from mlservice.errors import BundleError
from mlservice.inference import Predictor
from mlservice.inference.coercion import MAX_ABS_NUMERIC, MAX_TEXT_LENGTH
from mlservice.inference.onnx_runtime import (
    MISSING_CATEGORY,
    SMALL_ROWS,
    UNKNOWN_CATEGORY,
    ColumnCheck,
    FeedBuilder,
    OnnxInput,
)
from mlservice.inference.predictor import (
    FeatureInfo,
    _proba_rows,
    _row_sums,
    _small_proba_rows,
)
from mlservice.training import train
from tests.conftest import PENGUIN_ROW, make_config
from tests.test_api_e2e import Server

PREDICT = "/api/v1/predict"
BATCH = "/api/v1/predict/batch"
JSON = {"content-type": "application/json"}
MAX_BATCH = 50  # both apps of a pair: 40-row batches pass, 51 rows is a 413 from the route
KEYS = "key-one, key-two"
#: An HTTP answer: ``httpx.Response`` (TestClient's comes from its own httpx build).
Reply = Any


# ------------------------------------------------------------------------------- helpers
@dataclass
class Pair:
    """Two apps on one bundle: ``fast`` with the fast path, ``slow`` without it."""

    fast_app: FastAPI
    slow_app: FastAPI
    fast: TestClient
    slow: TestClient

    @property
    def predictor(self) -> Predictor:
        predictor = self.fast_app.state.model.predictor
        assert isinstance(predictor, Predictor)
        return predictor

    def counts(self, app: FastAPI | None = None) -> tuple[float, float]:
        """(answered, deferred) of ``app`` (default: the fast one)."""
        registry = (app or self.fast_app).state.metrics.registry

        def count(outcome: str) -> float:
            value = registry.get_sample_value("mlservice_fast_path_total", {"outcome": outcome})
            return float(value or 0.0)

        return count("answered"), count("deferred")

    def errors(self, kind: str, app: FastAPI | None = None) -> float:
        registry = (app or self.fast_app).state.metrics.registry
        value = registry.get_sample_value("mlservice_errors_total", {"kind": kind})
        return float(value or 0.0)

    def both(
        self, path: str, body: bytes, headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()
    ) -> tuple[Reply, Reply, str]:
        """Send ``body`` to both apps: the two answers and what the fast path did with it."""
        sent: list[tuple[str, str]] = [*JSON.items(), *_header_items(headers)]
        before = self.counts()
        fast = self.fast.post(path, content=body, headers=sent)
        answered, deferred = (a - b for a, b in zip(self.counts(), before, strict=True))
        slow = self.slow.post(path, content=body, headers=sent)
        delta = (int(answered), int(deferred))
        outcome = {(1, 0): "answered", (0, 1): "deferred", (0, 0): "not reached"}.get(
            delta, f"counted {delta}"
        )
        return fast, slow, outcome


def _header_items(
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


@contextmanager
def _pair(bundle: Path, **changes: Any) -> Iterator[Pair]:
    fast_app = create_app(bundle, ApiSettings(bundle_path=bundle, **changes))
    slow_app = create_app(bundle, ApiSettings(bundle_path=bundle, fast_path=False, **changes))
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        yield Pair(fast_app, slow_app, fast, slow)


def _view(response: Reply) -> tuple[int, Any, str | None, str | None]:
    """What a client sees, minus the per-request id: status, body, content type, auth header."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body.pop("request_id", None)
    return (
        response.status_code,
        body,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
    )


def _enc(payload: Any) -> bytes:
    return json.dumps(payload, allow_nan=False).encode()


def _records(frame: pd.DataFrame, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows as JSON would give them: NaN → None, numpy scalars → Python ones."""
    sub = frame[list(names)].astype(object)
    rows = sub.where(sub.notna(), None).to_dict(orient="records")
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in rows
    ]


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    body: bytes
    outcome: str | None  # "answered" / "deferred"; None: only the equivalence is asserted


def _bad_values(info: FeatureInfo) -> list[Any]:
    bad: list[Any] = ["", "3.5", True, False, 1e16, -1e16, 2**70, -(2**70), [], {}, [1.0]]
    if not info.nullable:
        bad.append(None)
    if info.kind == "categorical":
        bad += ["Atlantis", 1, 1.5, ["Biscoe"]]
    else:
        bad += [MAX_ABS_NUMERIC * (1 + 2**-50), 10**15 + 1, -(10**15) - 1, 2**1100]
    return bad


def _cases(
    predictor: Predictor, rows: list[dict[str, Any]], broken: int | None = None
) -> list[Case]:
    """Valid and invalid bodies built from the bundle's feature schema and real rows.

    Bad values go into every feature, or into ``broken`` of them (first, last, ...).
    """
    names = list(predictor.feature_names)
    features = {f.name: f for f in predictor.features}
    numeric = [n for n in names if features[n].kind == "numeric"]
    nullable = [n for n in names if features[n].nullable]
    required = [n for n in names if not features[n].nullable]
    base = rows[0]
    out: list[Case] = []

    def single(label: str, row: Any, outcome: str | None) -> None:
        out.append(Case(label, PREDICT, _enc({"features": row}), outcome))

    def batch(label: str, instances: Any, outcome: str | None) -> None:
        out.append(Case(label, BATCH, _enc({"instances": instances}), outcome))

    def positional(row: Mapping[str, Any]) -> list[Any]:
        return [row.get(n) for n in names]

    # ---- valid
    single("named", base, "answered")
    single("positional", positional(base), "answered")
    for row in rows[1:6]:
        single(f"named {row}", row, "answered")
        single(f"positional {row}", positional(row), "answered")
    for name in nullable:
        single(f"{name} omitted", {k: v for k, v in base.items() if k != name}, "answered")
        single(f"{name} null", {**base, name: None}, "answered")
        single(f"{name} null positional", positional({**base, name: None}), "answered")
    if nullable:
        single("every nullable omitted", {n: base[n] for n in required}, "answered")
        batch("a 5-row batch of nulls", [{**base, **dict.fromkeys(nullable)}] * 5, "answered")
    for name in numeric:
        value = base[name]
        if value is not None:
            single(f"{name} int", {**base, name: round(value)}, "answered")
            single(f"{name} float", {**base, name: float(value)}, "answered")
        for k, edge in enumerate((MAX_ABS_NUMERIC, -MAX_ABS_NUMERIC, 10**15, 0, -0.0, 5e-324)):
            if k % 2:
                single(f"{name}={edge!r}", {**base, name: edge}, "answered")
            else:
                batch(f"{name}={edge!r} in 5 rows", [*rows[:4], {**base, name: edge}], "answered")
    # number literals JSON parsers must agree on (orjson for the fast path)
    first = numeric[0]
    for literal in (
        "45.10000000000000142",
        "2.2250738585072011e-308",
        "1E2",
        "-0",
        "0.1e1",
        "123456789012345678e-16",
        "4.9e-324",
        "1.00000000000000011102230246251565",
    ):
        text = json.dumps({"features": {**base, first: "@"}}).replace('"@"', literal)
        out.append(Case(f"{first} literal {literal}", PREDICT, text.encode(), "answered"))
    for count in (1, 4, 5, 32, 33, 40, MAX_BATCH):
        batch(f"{count} named rows", rows[:count], "answered")
    batch("40 positional rows", [positional(r) for r in rows[:40]], "answered")
    mixed = [r if i % 2 else positional(r) for i, r in enumerate(rows[:40])]
    batch("40 mixed rows", mixed, "answered")
    batch("3 mixed rows", mixed[:3], "answered")

    # ---- invalid values, one feature at a time; each also in one other form, in turn
    turn = 0
    spread = (
        names
        if broken is None
        else [names[i * (len(names) - 1) // max(broken - 1, 1)] for i in range(broken)]
    )
    for name in spread:
        for bad in _bad_values(features[name]):
            row = {**base, name: bad}
            single(f"{name}={bad!r}", row, "deferred")
            turn += 1
            if turn % 4 == 0:
                single(f"{name}={bad!r} positional", positional(row), "deferred")
            elif turn % 4 == 1:
                batch(f"{name}={bad!r} row 1 of 2", [base, positional(row)], "deferred")
            elif turn % 4 == 2:
                batch(f"{name}={bad!r} row 3 of 5", [*rows[:3], row, rows[4]], "deferred")
            else:
                batch(f"{name}={bad!r} row 39 of 40", [*rows[:39], row], "deferred")
    # ---- invalid shapes
    for name in required:
        single(f"{name} missing", {k: v for k, v in base.items() if k != name}, "deferred")
        batch(
            f"{name} missing in 5",
            [*rows[:4], {k: v for k, v in base.items() if k != name}],
            "deferred",
        )
    single("extra key", {**base, "colour": "blue"}, "deferred")
    single(
        "misspelled key",
        {**{k: v for k, v in base.items() if k != names[0]}, names[0] + "x": base[names[0]]},
        "deferred",
    )
    single("too short", positional(base)[:-1], "deferred")
    single("too long", [*positional(base), 1.0], "deferred")
    single("empty list", [], "deferred")
    single("empty object", {}, "deferred")
    for shape in ("x", 1, None, True):
        single(f"features={shape!r}", shape, "deferred")
        batch(f"instances={shape!r}", shape, "deferred")
    batch("instances=row", base, "deferred")
    batch("empty instances", [], "deferred")
    batch("too many rows", rows[: MAX_BATCH + 1], "deferred")
    batch("a row that is a string", [base, "x"], "deferred")
    batch("nested instances", [[base]], "deferred")
    for path, payload in (
        (PREDICT, {"features": base, "extra": 1}),
        (PREDICT, {"instances": [base]}),
        (PREDICT, {"features": base, "instances": [base]}),
        (BATCH, {"instances": [base], "extra": 1}),
        (BATCH, {"features": base}),
        (PREDICT, {}),
        (PREDICT, []),
        (PREDICT, [{"features": base}]),
        (BATCH, None),
        (BATCH, "instances"),
    ):
        out.append(Case(f"top level {payload!r:.60}", path, _enc(payload), "deferred"))
    row_text = json.dumps(base)
    for label, raw in (
        ("malformed", b'{"features": '),
        ("empty body", b""),
        ("blank body", b"  \n"),
        ("trailing comma", b'{"features": ' + row_text.encode() + b",}"),
        ("single quotes", row_text.replace('"', "'").encode()),
        ("two documents", _enc({"features": base}) * 2),
        ("invalid utf-8", _enc({"features": base}).replace(b'"', b'"\xff', 1)),
    ):
        out.append(Case(label, PREDICT, raw, "deferred"))
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        text = json.dumps({"features": {**base, first: "@"}}).replace('"@"', literal)
        out.append(Case(f"{first}={literal} literal", PREDICT, text.encode(), "deferred"))
        batch_text = json.dumps({"instances": [*rows[:5], {**base, first: "@"}]})
        out.append(
            Case(
                f"{first}={literal} in a batch",
                BATCH,
                batch_text.replace('"@"', literal).encode(),
                "deferred",
            )
        )
    # ---- bodies whose outcome is not pinned: only the answers must agree
    second = rows[1]
    out.append(Case("BOM", PREDICT, b"\xef\xbb\xbf" + _enc({"features": base}), None))
    out.append(
        Case(
            "duplicate top-level key",
            PREDICT,
            b'{"features": %s, "features": %s}' % (_enc(base), _enc(second)),
            None,
        )
    )
    inner = row_text[:-1] + f', "{first}": 3.5' + "}"
    out.append(Case("duplicate feature key", PREDICT, f'{{"features": {inner}}}'.encode(), None))
    out.append(Case("utf-16 body", PREDICT, json.dumps({"features": base}).encode("utf-16"), None))
    return out


def _check_equivalence(pair: Pair, rows: list[dict[str, Any]], broken: int | None = None) -> None:
    cases = _cases(pair.predictor, rows, broken)
    problems = []
    outcomes = {"answered": 0, "deferred": 0}
    for case in cases:
        fast, slow, outcome = pair.both(case.path, case.body)
        if _view(fast) != _view(slow):
            problems.append(f"{case.label}: fast {_view(fast)} != route {_view(slow)}")
        if case.outcome is not None and outcome != case.outcome:
            problems.append(f"{case.label}: {outcome}, expected {case.outcome}: {fast.text:.200}")
        if case.outcome == "answered" and fast.status_code != 200:
            problems.append(f"{case.label}: valid body answered {fast.status_code} {fast.text}")
        if case.outcome == "deferred" and fast.status_code == 200:
            problems.append(f"{case.label}: invalid body answered 200")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert not problems, "\n".join(problems)
    # the slow app never runs the fast path; both kinds of body were exercised
    assert pair.counts(pair.slow_app) == (0.0, 0.0)
    assert outcomes["answered"] > 50 and outcomes["deferred"] > 150, outcomes


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory, penguins_csv: Path) -> Path:
    """A penguins classifier served by ONNX (logistic regression: trains in about a second).

    Not the session's random-forest ``trained_bundle``: its ONNX export fails verification
    (one label of the test rows differs), so it is served by scikit-learn, which the fast
    path always defers.
    """
    tmp = tmp_path_factory.mktemp("fast-clf")
    config = make_config(
        tmp, **{"data.source": str(penguins_csv), "model": {"type": "logistic_regression"}}
    )
    result = train(config, base_dir=tmp)
    assert result.gate.passed
    assert load_metadata(result.bundle_path)["onnx"]["verified"] is True
    return result.bundle_path


@pytest.fixture(scope="module")
def penguins(onnx_bundle: Path) -> Iterator[Pair]:
    with _pair(onnx_bundle, max_batch_size=MAX_BATCH) as pair:
        yield pair


@pytest.fixture(scope="module")
def penguin_rows(onnx_bundle: Path) -> list[dict[str, Any]]:
    names = Predictor.from_path(onnx_bundle).feature_names
    frame = load_penguins().drop_duplicates(subset=list(names))
    rows = _records(frame.sample(frac=1.0, random_state=5), names)
    return [dict(PENGUIN_ROW), *(row for row in rows if row != PENGUIN_ROW)]


@pytest.fixture(scope="module")
def penguin_predictor(onnx_bundle: Path) -> Predictor:
    predictor = Predictor.from_path(onnx_bundle)
    assert predictor.runtime == "onnx"
    return predictor


# ----------------------------------------------------------------- 1. equivalence
def test_penguins_fast_path_answers_exactly_as_the_route(
    penguins: Pair, penguin_rows: list[dict[str, Any]]
) -> None:
    assert penguins.predictor.runtime == "onnx"
    assert {f.name for f in penguins.predictor.features if f.nullable} >= {"sex", "body_mass_g"}
    _check_equivalence(penguins, penguin_rows)


def test_regression_fast_path_answers_exactly_as_the_route(regression_bundle: Path) -> None:
    with _pair(regression_bundle, max_batch_size=MAX_BATCH) as pair:
        assert pair.predictor.runtime == "onnx"  # the diabetes ridge is served by ONNX too
        frame = BUILTIN_DATASETS["diabetes"]()
        rows = _records(frame.sample(80, random_state=2), pair.predictor.feature_names)
        _check_equivalence(pair, rows, broken=3)  # ten numeric features alike: three suffice
        body = pair.fast.post(PREDICT, json={"features": rows[0]}).json()
        assert body["interval"] is not None and body["probabilities"] is None


def test_a_model_served_by_scikit_learn_is_always_deferred(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSERVICE_RUNTIME", "sklearn")
    with _pair(onnx_bundle) as pair:
        assert pair.predictor.runtime == "sklearn"
        for path, payload in (
            (PREDICT, {"features": PENGUIN_ROW}),
            (BATCH, {"instances": [PENGUIN_ROW] * 40}),
        ):
            fast, slow, outcome = pair.both(path, _enc(payload))
            assert (fast.status_code, outcome) == (200, "deferred")
            assert _view(fast) == _view(slow)


# ------------------------------------------------------------------------ 2. API keys
def test_api_keys_read_like_fastapi(onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSERVICE_API_KEYS", KEYS)
    body = _enc({"features": PENGUIN_ROW})
    batch = _enc({"instances": [PENGUIN_ROW] * 3})
    cases: list[tuple[list[tuple[str, str]], int, str | None]] = [
        ([("X-API-Key", "key-two")], 200, "answered"),
        ([("Authorization", "Bearer key-one")], 200, "answered"),
        ([("Authorization", "bearer key-one")], 200, "answered"),
        ([("X-API-Key", ""), ("Authorization", "Bearer key-one")], 200, "answered"),
        ([("X-API-Key", "key-one"), ("Authorization", "Bearer nope")], 200, "answered"),
        ([], 401, "not reached"),
        ([("X-API-Key", "nope")], 401, "not reached"),
        ([("X-API-Key", "")], 401, "not reached"),
        ([("X-API-Key", "key-one ")], 401, "not reached"),
        ([("X-API-Key", "nope"), ("Authorization", "Bearer key-one")], 401, "not reached"),
        ([("X-API-Key", "nope"), ("X-API-Key", "key-one")], 401, "not reached"),
        ([("Authorization", "Basic key-one")], 401, "not reached"),
        ([("Authorization", "Bearer")], 401, "not reached"),
        ([("Authorization", "Bearer ")], 401, "not reached"),
        ([("Authorization", "key-one")], 401, "not reached"),
        ([("Authorization", "Bearer key-one, key-two")], 401, "not reached"),
        # FastAPI strips the credentials, and so does the fast path
        ([("Authorization", "Bearer  key-one")], 200, "answered"),
    ]
    with _pair(onnx_bundle) as pair:
        assert pair.fast_app.state.model.api_keys == ("key-one", "key-two")
        problems = []
        for headers, status, expected in cases:
            for path, payload in ((PREDICT, body), (BATCH, batch)):
                fast, slow, outcome = pair.both(path, payload, headers)
                if _view(fast) != _view(slow) or fast.status_code != status:
                    problems.append(f"{headers} {path}: {_view(fast)} vs {_view(slow)}")
                if expected is not None and outcome != expected:
                    problems.append(f"{headers} {path}: {outcome}, expected {expected}")
        # a valid key with an invalid body: deferred, the route's 422
        fast, slow, outcome = pair.both(
            PREDICT,
            _enc({"features": {**PENGUIN_ROW, "island": "Atlantis"}}),
            [("X-API-Key", "key-one")],
        )
        assert (fast.status_code, outcome) == (422, "deferred")
        assert _view(fast) == _view(slow)
        missing = pair.fast.post(PREDICT, content=body, headers=JSON)
    assert not problems, "\n".join(problems)
    assert missing.json()["detail"].startswith("missing API key")
    assert missing.headers["www-authenticate"] == "Bearer"


# --------------------------------------------------------------------------- 3. 504
def test_fast_path_times_out_a_large_batch_like_the_route(
    onnx_bundle: Path, penguin_rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _enc({"instances": (penguin_rows * 2)[:200]})
    # The logistic regression answers 200 rows in microseconds, a race against even a 1 µs
    # timeout: the real model runs only once the test has its answers (an event, not a sleep).
    release = threading.Event()
    with _pair(onnx_bundle, request_timeout_s=1e-6) as pair:
        for app in (pair.fast_app, pair.slow_app):
            predictor = app.state.model.predictor
            run = predictor.run_onnx

            def gated(feeds: dict[str, np.ndarray], run: Any = run) -> Any:
                assert release.wait(timeout=60)
                return run(feeds)

            monkeypatch.setattr(predictor, "run_onnx", gated)
        try:
            fast, slow, outcome = pair.both(BATCH, body, {"X-Request-ID": "timeout-1"})
        finally:
            release.set()
        timeouts = pair.errors("timeout")
        # up to 32 rows run on the event loop: no timeout applies
        small, _, small_outcome = pair.both(BATCH, _enc({"instances": penguin_rows[:32]}))
        metrics = pair.fast.get("/metrics").text
    assert outcome == "answered"  # the fast path itself answered the 504
    assert fast.status_code == 504, fast.text
    assert fast.json() == {
        "detail": "prediction took longer than 1e-06 s (request timeout); "
        "send fewer instances per request",
        "request_id": "timeout-1",
    }
    assert fast.headers["x-request-id"] == "timeout-1"
    assert _view(fast) == _view(slow)
    assert timeouts == 1.0
    assert 'mlservice_errors_total{kind="timeout"} 1.0' in metrics
    assert (small.status_code, small_outcome) == (200, "answered")


# --------------------------------------------------------------------------- 4. 500
def test_model_failure_is_a_generic_500_naming_the_request_id(
    penguins: Pair, penguin_rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(feeds: dict[str, np.ndarray]) -> Any:
        raise RuntimeError("onnxruntime exploded: secret internals /opt/model")

    for app in (penguins.fast_app, penguins.slow_app):
        monkeypatch.setattr(app.state.model.predictor, "run_onnx", boom)
    before = penguins.errors("model_error")
    bodies = [
        (PREDICT, _enc({"features": PENGUIN_ROW}), "fail-inline"),  # on the event loop
        (BATCH, _enc({"instances": penguin_rows[:40]}), "fail-thread"),  # in a worker thread
    ]
    for path, body, request_id in bodies:
        fast, slow, outcome = penguins.both(path, body, {"X-Request-ID": request_id})
        assert outcome == "answered"
        assert fast.status_code == 500
        assert fast.json() == {
            "detail": "the model failed on this input; the error is logged under request id "
            f"{request_id}",
            "request_id": request_id,
        }
        for leak in ("exploded", "secret", "Traceback", "RuntimeError"):
            assert leak not in fast.text
        assert _view(fast) == _view(slow)
    assert penguins.errors("model_error") == before + 2
    monkeypatch.undo()
    assert penguins.fast.post(PREDICT, json={"features": PENGUIN_ROW}).status_code == 200


# ------------------------------------------------------------------- 5. fast_path off
def test_fast_path_off_never_counts_and_answers_the_same(
    penguins: Pair, penguin_rows: list[dict[str, Any]], onnx_bundle: Path
) -> None:
    before = penguins.counts()
    slow_before = penguins.counts(penguins.slow_app)
    for path, body in (
        (PREDICT, {"features": PENGUIN_ROW}),
        (BATCH, {"instances": penguin_rows[:7]}),
    ):
        fast = penguins.fast.post(path, json=body)
        slow = penguins.slow.post(path, json=body)
        assert fast.status_code == 200 and fast.json() == slow.json()
    assert penguins.counts() == (before[0] + 2, before[1])
    assert penguins.counts(penguins.slow_app) == slow_before == (0.0, 0.0)
    fast_metrics = penguins.fast.get("/metrics").text
    slow_metrics = penguins.slow.get("/metrics").text
    assert f'mlservice_fast_path_total{{outcome="answered"}} {before[0] + 2}' in fast_metrics
    assert 'mlservice_fast_path_total{outcome="answered"} 0.0' in slow_metrics
    assert 'mlservice_fast_path_total{outcome="deferred"} 0.0' in slow_metrics
    # MLSERVICE_FAST_PATH is read from the environment and removes the middleware
    off = settings_from_env(onnx_bundle, environ={"MLSERVICE_FAST_PATH": "false"})
    on = settings_from_env(onnx_bundle, environ={})
    assert (off.fast_path, on.fast_path) == (False, True)

    def has_fast(settings: ApiSettings) -> bool:
        app = create_app(onnx_bundle, settings)
        return any(m.cls is FastPredictMiddleware for m in app.user_middleware)

    assert (has_fast(off), has_fast(on)) == (False, True)


# ------------------------------------------------------- 6. concurrency, real server
def _separated_rows(
    predictor: Predictor, rows: list[dict[str, Any]], count: int, gap: float
) -> list[dict[str, Any]]:
    """``count`` rows whose one-row answers differ by more than ``gap`` in some probability."""
    picked: list[dict[str, Any]] = []
    seen: list[np.ndarray] = []
    for row in rows:
        proba = np.array(list(predictor.predict_records([row])[0]["probabilities"].values()))
        if all(np.abs(proba - other).max() > gap for other in seen):
            picked.append(row)
            seen.append(proba)
        if len(picked) == count:
            return picked
    raise AssertionError(f"only {len(picked)} well-separated rows")


def _metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
    ]
    assert len(values) == 1, (name, values)
    return values[0]


@pytest.mark.e2e
@pytest.mark.parametrize("micro_batching", [False, True], ids=["alone", "micro-batched"])
def test_concurrent_requests_each_get_their_own_answer(
    onnx_bundle: Path,
    penguin_rows: list[dict[str, Any]],
    penguin_predictor: Predictor,
    tmp_path: Path,
    micro_batching: bool,
) -> None:
    predictor = penguin_predictor
    names = predictor.feature_names
    gap = 1e-3  # a swapped answer is this far off; float32 noise is below 1e-6
    rows = _separated_rows(predictor, penguin_rows, 60, gap)
    values = [[row.get(n) for n in names] for row in rows]
    requests: list[tuple[str, Any, list[int]]] = []
    for i in range(60):  # one-row requests, named and positional
        requests.append((PREDICT, {"features": rows[i] if i % 2 else values[i]}, [i]))
    order = np.random.default_rng(11).permutation(60).tolist()
    for start in range(0, 60, 20):  # 40-row batches: the worker-thread path
        picked = (order * 2)[start : start + 40]
        requests.append((BATCH, {"instances": [rows[j] for j in picked]}, picked))
    for start in range(0, 20, 5):  # 5- and 3-row batches: inline (and joinable)
        picked = order[start : start + 5]
        requests.append((BATCH, {"instances": [values[j] for j in picked]}, picked))
        requests.append((BATCH, {"instances": [rows[j] for j in picked[:3]]}, picked[:3]))
    requests = requests * 2
    # The predictor's answer to each request's own rows (a batch is one onnxruntime call).
    expected = [predictor.predict_values([values[j] for j in idx]) for _, _, idx in requests]
    alone = [predictor.predict_values([v])[0] for v in values]

    env = {
        "MLSERVICE_FAST_PATH": "true",
        "MLSERVICE_MICRO_BATCHING": str(micro_batching),
        "MLSERVICE_MAX_BATCH_SIZE": "1000",
        "MLSERVICE_API_KEYS": "",
        "MLSERVICE_RUNTIME": "onnx",
    }
    server = Server(onnx_bundle, tmp_path, env)
    try:
        server.wait_ready()

        async def send_all() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as c:
                return list(await asyncio.gather(*(c.post(p, json=b) for p, b, _ in requests)))

        responses = asyncio.run(send_all())
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    wrong, inexact = [], 0
    for (path, _, indexes), want, response in zip(requests, expected, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        got = [body] if path == PREDICT else body["predictions"]
        assert [a.pop("model_version", None) for a in got] == (
            [predictor.version] if path == PREDICT else [None] * len(got)
        )
        inexact += got != want
        for index, answer in zip(indexes, got, strict=True):
            # its own row's answer, never another's: the nearest of the 60, within noise
            proba = np.array(list(answer["probabilities"].values()))
            distances = [
                np.abs(proba - np.array(list(a["probabilities"].values()))).max() for a in alone
            ]
            if (
                answer["prediction"] != alone[index]["prediction"]
                or int(np.argmin(distances)) != index
                or distances[index] > 1e-6
            ):
                wrong.append((path, index, answer, alone[index]))
    assert not wrong, wrong[:3]
    assert _metric(metrics, 'mlservice_fast_path_total{outcome="answered"}') == len(requests)
    joined = _metric(metrics, "mlservice_micro_batch_requests_sum")
    calls = _metric(metrics, "mlservice_micro_batch_requests_count")
    if not micro_batching:
        assert inexact == 0  # bit for bit the predictor's answer to the request alone
        assert joined == calls == 0
    else:
        assert joined > calls > 0  # requests were joined into shared onnxruntime calls


# -------------------------------------------------------------- 7. FeedBuilder units
def _values(predictor: Predictor, rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [[row.get(n) for n in predictor.feature_names] for row in rows]


def test_feed_builder_small_and_numpy_checks_build_the_same_arrays(
    penguin_predictor: Predictor, penguin_rows: list[dict[str, Any]]
) -> None:
    rows = _values(penguin_predictor, penguin_rows[:40])
    with_nulls = [list(r) for r in rows]
    for r in with_nulls[::3]:  # nullable numerics and the nullable category left out
        r[list(penguin_predictor.feature_names).index("body_mass_g")] = None
        r[list(penguin_predictor.feature_names).index("sex")] = None
    for source in (rows, with_nulls):
        for count in range(1, SMALL_ROWS + 1):
            small = penguin_predictor.onnx_feeds(source[:count])
            for padded in (SMALL_ROWS + 1, 40):
                large = penguin_predictor.onnx_feeds(source[:padded])
                assert small is not None and large is not None
                assert small.keys() == large.keys()
                for name in small:
                    assert small[name].dtype == large[name].dtype
                    assert small[name].shape == (count, 1)
                    np.testing.assert_array_equal(small[name], large[name][:count])


def _bad_cells(predictor: Predictor) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    for j, info in enumerate(predictor.features):
        bad: list[Any]
        if info.kind == "numeric":
            bad = [
                math.inf,
                -math.inf,
                1e16,
                -1e16,
                10**15 + 1,
                2**70,
                2**1100,
                True,
                False,
                "3.5",
                "",
                [1.0],
                np.float64(1.0),
            ]
            if not info.nullable:  # NaN where nullable: see the next test
                bad += [None, math.nan]
        else:
            bad = ["Atlantis", "", 1, 1.0, True, [], {}, ["Biscoe"]]
            if not info.nullable:
                bad.append(None)
        out += [(j, value) for value in bad]
    return out


def test_feed_builder_small_and_numpy_checks_refuse_the_same_values(
    penguin_predictor: Predictor, penguin_rows: list[dict[str, Any]]
) -> None:
    rows = _values(penguin_predictor, penguin_rows[:40])
    accepted = []
    for j, bad in _bad_cells(penguin_predictor):
        for count in (1, 2, SMALL_ROWS, SMALL_ROWS + 1, 40):
            for at in {0, count - 1}:
                trial = [list(r) for r in rows[:count]]
                trial[at][j] = bad
                if penguin_predictor.onnx_feeds(trial) is not None:
                    accepted.append((penguin_predictor.feature_names[j], bad, count, at))
    assert not accepted, accepted[:10]
    # the limits themselves pass on both sides
    for j, info in enumerate(penguin_predictor.features):
        if info.kind != "numeric":
            continue
        for edge in (MAX_ABS_NUMERIC, -MAX_ABS_NUMERIC, 10**15, -(10**15)):
            for count in (1, SMALL_ROWS + 1):
                trial = [list(r) for r in rows[:count]]
                trial[-1][j] = edge
                assert penguin_predictor.onnx_feeds(trial) is not None, (info.name, edge, count)


def test_nan_in_a_nullable_numeric_predicts_as_missing_either_way(
    penguin_predictor: Predictor, penguin_rows: list[dict[str, Any]]
) -> None:
    # (Not reachable over HTTP: JSON has no NaN.) Where a feature is nullable both the small
    # checks and the numpy checks take a NaN from a Python caller as missing.
    j = list(penguin_predictor.feature_names).index("body_mass_g")
    one = _values(penguin_predictor, penguin_rows[: SMALL_ROWS + 1])
    one[0][j] = math.nan
    for count in (1, SMALL_ROWS + 1):
        feeds = penguin_predictor.onnx_feeds(one[:count])
        assert feeds is not None and math.isnan(feeds["body_mass_g"][0, 0])
    rows = _values(penguin_predictor, penguin_rows[:6])
    with_nan = [list(r) for r in rows]
    with_none = [list(r) for r in rows]
    with_nan[0][j] = math.nan
    with_none[0][j] = None
    for count in (1, 6):
        assert penguin_predictor.predict_values(
            with_nan[:count]
        ) == penguin_predictor.predict_values(with_none[:count])


# ------------------------------------------------------------ 7b. probabilities → answers
def _numpy_answers(proba: np.ndarray, labels: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    """What ``onnx_answers`` does for more than SMALL_ROWS rows (same float64 normalisation)."""
    scores = np.asarray(proba, dtype=np.float64)
    sums = _row_sums(scores)
    if (sums > 0.0).all():
        scores = scores / sums
    return _proba_rows(scores, labels, keys)


def _random_proba(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:  # softmax-like
        raw = rng.random((rows, classes)) ** 3
    elif kind == 1:  # tree-vote fractions: many ties
        raw = rng.integers(0, 4, (rows, classes)).astype(np.float64) + 1e-300
    elif kind == 2:  # one-hot and exact halves
        raw = np.zeros((rows, classes))
        raw[:, 0] = 0.5
        raw[np.arange(rows), rng.integers(classes, size=rows)] += 0.5
    else:  # tiny and lopsided
        raw = rng.random((rows, classes)) * 10.0 ** -rng.integers(0, 30)
    proba = raw / raw.sum(axis=1, keepdims=True)
    return proba.astype(np.float32)  # onnxruntime's output type


@pytest.mark.parametrize("classes", [2, 3, 4, 5, 7, 9, 17, 40])
def test_small_proba_rows_equal_the_numpy_rows(classes: int) -> None:
    rng = np.random.default_rng(classes)
    labels: list[Any] = [f"class-{i}" for i in range(classes)]
    keys = [str(label) for label in labels]
    ties = 0
    for _ in range(3000):
        proba = _random_proba(rng, int(rng.integers(1, SMALL_ROWS + 1)), classes)
        small = _small_proba_rows(proba.tolist(), labels, keys)
        assert small is not None
        assert small == _numpy_answers(proba, labels, keys), proba
        ties += sum(int((row == row.max()).sum() > 1) for row in proba)
    assert ties > 100  # first-largest-wins was exercised


def test_small_proba_rows_refuse_what_is_not_a_probability() -> None:
    labels: list[Any] = ["a", "b", "c"]
    keys = labels
    for row in (
        [math.nan, 0.5, 0.5],
        [-0.1, 0.6, 0.5],
        [-2.0, 1.5, 0.5],
        [math.inf, 0.0, 0.0],
        [0.2, math.nan, 0.8],
        [-1.0, 0.0, 0.0],
    ):
        assert _small_proba_rows([[0.2, 0.3, 0.5], row], labels, keys) is None, row
    # all zeros: nothing to normalise, the first class wins with confidence 0
    zeros = _small_proba_rows([[0.0, 0.0, 0.0]], labels, keys)
    assert zeros == _numpy_answers(np.zeros((1, 3), dtype=np.float32), labels, keys)
    assert zeros is not None and zeros[0]["prediction"] == "a"


# --------------------------------------------------------------------- 8. text length
def _text_builder(*, nullable: bool, categories: frozenset[Any] | None = None) -> FeedBuilder:
    return FeedBuilder(
        [OnnxInput("x", "float"), OnnxInput("note", "string")],
        [
            ColumnCheck("float", nullable=False, categories=None),
            ColumnCheck("string", nullable=nullable, categories=categories),
        ],
        max_abs=MAX_ABS_NUMERIC,
        max_text=MAX_TEXT_LENGTH,
    )


def test_open_string_longer_than_max_text_is_refused() -> None:
    builder = _text_builder(nullable=True)
    longest = "é" * MAX_TEXT_LENGTH  # characters, not bytes
    too_long = "x" * (MAX_TEXT_LENGTH + 1)
    for count in (1, SMALL_ROWS + 1):
        padding = [[1.0, "ok"]] * (count - 1)
        feeds = builder.build([*padding, [2.0, longest]])
        assert feeds is not None and feeds["note"][-1, 0] == longest
        assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (count, 1)
        assert builder.build([*padding, [2.0, too_long]]) is None
        assert builder.build([[2.0, too_long], *padding]) is None
    # the rest of an open string column: missing, empty, wrong types
    feeds = builder.build([[1.0, None], [2.0, ""], [3.0, "free text"]])
    assert feeds is not None
    assert feeds["note"][:, 0].tolist() == [MISSING_CATEGORY, UNKNOWN_CATEGORY, "free text"]
    wrong_types: list[Any] = [1, 1.5, True, [], {}]
    for bad in wrong_types:
        assert builder.build([[1.0, bad]]) is None
    assert _text_builder(nullable=False).build([[1.0, None]]) is None
    closed = _text_builder(nullable=False, categories=frozenset({"a", "b"}))
    assert closed.build([[1.0, "a"]]) is not None
    not_a_category: list[Any] = ["c", None, [], {}, "a" * (MAX_TEXT_LENGTH + 1)]
    for bad in not_a_category:
        assert closed.build([[1.0, bad]]) is None
    with pytest.raises(BundleError, match="same order"):
        FeedBuilder(
            [OnnxInput("note", "string")],
            [ColumnCheck("float", False, None)],
            max_abs=MAX_ABS_NUMERIC,
        )


# ------------------------------------------------------------ 9. review fixes
def test_a_row_s_answer_does_not_depend_on_the_other_rows(penguin_predictor: Predictor) -> None:
    # Normalisation is row by row: a NaN or zero row joined with others changes nothing else.
    classes = len(penguin_predictor.classes or ())
    good = np.zeros((1, classes), dtype=np.float32)
    good[0, :2] = [0.3, 0.6999999]
    labels = np.zeros(1, dtype=np.int64)
    alone = penguin_predictor.onnx_answers((labels, good), 1)
    for other in (np.full((1, classes), np.nan), np.zeros((1, classes))):
        for count in (2, SMALL_ROWS + 2):
            proba = np.vstack([good] + [other] * (count - 1)).astype(np.float32)
            joined = penguin_predictor.onnx_answers((np.zeros(count, dtype=np.int64), proba), count)
            assert joined[0] == alone[0]


def _poisoned(predictor: Predictor, marker: float) -> Predictor:
    """The predictor, with a model that fails on any batch holding ``marker`` as a bill length."""
    real = predictor.run_onnx
    column = "bill_length_mm"

    def run_onnx(feeds: dict[str, np.ndarray]) -> Any:
        if np.any(feeds[column] == np.float32(marker)):
            raise RuntimeError("exploded on the marker row")
        return real(feeds)

    predictor.run_onnx = run_onnx  # type: ignore[method-assign]
    return predictor


def test_micro_batch_model_failure_fails_only_its_own_request(onnx_bundle: Path) -> None:
    predictor = _poisoned(Predictor.from_path(onnx_bundle), 99.5)
    names = predictor.feature_names
    good = [PENGUIN_ROW[n] for n in names]
    bad = [99.5 if n == "bill_length_mm" else PENGUIN_ROW[n] for n in names]
    batcher = MicroBatcher(32)

    async def run() -> list[Any]:
        futures = [batcher.submit(predictor, [row]) for row in (good, bad, good)]
        return list(await asyncio.gather(*futures))

    first, failed, last = asyncio.run(run())
    assert isinstance(failed, RuntimeError)
    expected = predictor.predict_values([good])
    assert first == expected and last == expected


def test_micro_batching_off_still_predicts_small_requests_on_the_event_loop(
    onnx_bundle: Path,
) -> None:
    predictor = Predictor.from_path(onnx_bundle)
    real = predictor.run_onnx
    threads: list[int] = []

    def run_onnx(feeds: dict[str, np.ndarray]) -> Any:
        threads.append(threading.get_ident())
        return real(feeds)

    predictor.run_onnx = run_onnx  # type: ignore[method-assign]
    settings = ApiSettings(bundle_path=onnx_bundle, micro_batching=False)
    app = create_app(onnx_bundle, settings)
    middleware = FastPredictMiddleware(
        app, state=app.state.model, settings=settings, metrics=app.state.metrics
    )
    row = [PENGUIN_ROW[n] for n in predictor.feature_names]

    async def run() -> tuple[int, Any, Any]:
        small = await middleware._predict(predictor, [row], "rid")
        large = await middleware._predict(predictor, [row] * 40, "rid")
        return threading.get_ident(), small, large

    loop_thread, small, large = asyncio.run(run())
    assert small == predictor.predict_values([row])
    assert large is not None and len(large) == 40
    assert threads[0] == loop_thread  # one row: inline, as the route
    assert threads[1] != loop_thread  # 40 rows: a worker thread


def test_a_bundle_without_class_codes_is_left_to_the_route(
    onnx_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / onnx_bundle.name
    shutil.copytree(onnx_bundle, copy)
    meta_path = copy / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["onnx"].pop("class_codes")  # as exported before class codes were recorded
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    predictor = Predictor.from_path(copy)
    assert predictor.runtime == "onnx" and not predictor.onnx_self_contained
    with TestClient(create_app(copy, ApiSettings(bundle_path=copy))) as client:
        answer = client.post(PREDICT, json={"features": PENGUIN_ROW})
        assert answer.status_code == 200
        assert client.app.state.metrics.fast_answered._value.get() == 0  # type: ignore[attr-defined]
        assert client.app.state.metrics.fast_deferred._value.get() == 1  # type: ignore[attr-defined]


def test_log_lines_orjson_refuses_are_written_by_the_stdlib() -> None:
    line = _json_line({"path": "/x\udcff", "big": 2**70, "ok": "é"})
    assert json.loads(line) == {"path": "/x\udcff", "big": 2**70, "ok": "é"}


class _Cycle:
    me: Any = None


def test_interpreter_tuning_is_restored_when_the_last_app_stops(onnx_bundle: Path) -> None:
    import gc
    import sys

    from mlservice.api.lifecycle import _ProcessTuning

    before, thresholds = sys.getswitchinterval(), gc.get_threshold()
    frozen = gc.get_freeze_count()
    shared = _ProcessTuning()
    try:
        shared.enter(0.0002, 20_000)
        assert gc.get_freeze_count() > frozen  # what is alive now is out of the scans
        shared.enter(0.001, 20_000)
        assert sys.getswitchinterval() == pytest.approx(0.001)
        assert gc.get_threshold()[0] == 20_000
        garbage = _Cycle()
        garbage.me = garbage  # a reference cycle, as a replaced model may hold
        probe = weakref.ref(garbage)
        del garbage
        shared.after_reload()  # unfreeze, collect, freeze: the cycle is gone
        assert probe() is None
        shared.leave()  # not the last: the serving settings stay
        assert sys.getswitchinterval() != pytest.approx(before)
        assert gc.get_threshold()[0] == 20_000
        shared.leave()
        assert sys.getswitchinterval() == pytest.approx(before, abs=2e-6)  # µs steps
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() == 0
    finally:
        sys.setswitchinterval(before)
        gc.set_threshold(*thresholds)
    settings = ApiSettings(bundle_path=onnx_bundle, switch_interval_s=0.0007)
    with TestClient(create_app(onnx_bundle, settings)):
        assert sys.getswitchinterval() == pytest.approx(0.0007)  # while it serves
        assert gc.get_threshold()[0] == settings.gc_threshold
