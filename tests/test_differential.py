"""Differential test of the predict fast path: generated bodies, two apps, one answer.

Hypothesis generates bodies for ``POST /api/v1/predict`` and ``/api/v1/predict/batch`` (valid
rows, nulls, wrong types, unknown and missing features, positional rows of the wrong length,
huge numbers, NaN-like strings, nested junk, empty and oversized batches, broken JSON) and sends
each to two apps on the same ONNX-served bundle: one with the fast path
(``mlservice.api.fast_path``), one without it, where the FastAPI route answers everything. A
client must not be able to tell them apart: same status, same body (but the request id), same
content type and model header. Probabilities may differ in the last bits only: onnxruntime can
round a row differently in a one-row call than in a multi-row one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlservice.api import ApiSettings, create_app
from mlservice.inference import FeatureInfo, Predictor
from tests.conftest import fast_path_count

PREDICT = "/api/v1/predict"
BATCH = "/api/v1/predict/batch"
MAX_BATCH = 6  # small, so that oversized batches (413 from the route) are generated too
MAX_EXAMPLES = 150
REL_TOL = 1e-9


@dataclass
class Pair:
    """Two apps on one bundle: ``fast`` with the fast path, ``route`` without it."""

    fast_app: FastAPI
    fast: TestClient
    route: TestClient

    def counts(self) -> tuple[float, float]:
        app = self.fast_app
        return fast_path_count(app, "answered"), fast_path_count(app, "deferred")


@pytest.fixture(scope="module")
def pair(onnx_trained_bundle: Path) -> Iterator[Pair]:
    bundle = onnx_trained_bundle
    fast_app = create_app(bundle, ApiSettings(bundle_path=bundle, max_batch_size=MAX_BATCH))
    route_app = create_app(
        bundle, ApiSettings(bundle_path=bundle, max_batch_size=MAX_BATCH, fast_path=False)
    )
    with TestClient(fast_app) as fast, TestClient(route_app) as route:
        predictor = fast_app.state.model.predictor
        assert predictor is not None and predictor.runtime == "onnx"
        yield Pair(fast_app, fast, route)


@pytest.fixture(scope="module")
def features(onnx_trained_bundle: Path) -> tuple[FeatureInfo, ...]:
    predictor = Predictor.from_path(onnx_trained_bundle)
    ordered = {f.name: f for f in predictor.features}
    return tuple(ordered[name] for name in predictor.feature_names)


# ----------------------------------------------------------------------------- strategies
# Half of the bodies are valid, the other half a valid body with one thing wrong (or junk):
# hypothesis draws from its strategies' simplest ends, so validity is chosen outright rather
# than left to the odds of seven values all coming out right.
_NAN_LIKE = ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "null", "None", "", " "]
_HUGE = [1e15 * (1 + 2**-50), 10**15 + 1, 1e16, -1e16, 1.7976931348623157e308, -1e308,
         2**63, 2**64, -(2**63) - 1, 10**30, 10**400]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
#: Scalars, and lists and objects of them, nested.
_JUNK = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
#: Never a valid feature value: a list or an object.
_NESTED = st.one_of(
    st.lists(_JUNK, max_size=3), st.dictionaries(st.text(max_size=6), _JUNK, max_size=3)
)


def _valid_value(info: FeatureInfo) -> st.SearchStrategy[Any]:
    if info.kind == "categorical" and info.categories:
        value: st.SearchStrategy[Any] = st.sampled_from(list(info.categories))
    else:
        low = info.minimum if info.minimum is not None else -1e6
        high = info.maximum if info.maximum is not None else 1e6
        span = max(high - low, 1.0)
        value = st.one_of(
            st.floats(low - span, high + span, allow_nan=False, allow_infinity=False),
            st.integers(math.floor(low - span), math.ceil(high + span)),
            st.sampled_from([low, high, 0, -0.0, 5e-324, 1e15, -1e15, 10**15, -(10**15)]),
        )
    return st.one_of(value, st.none()) if info.nullable else value


def _bad_value(info: FeatureInfo) -> st.SearchStrategy[Any]:
    """A value the feature does not take, of one kind of wrong picked first (so that each
    kind comes up in a bounded run)."""
    kinds = [
        st.booleans(),
        st.sampled_from([*_NAN_LIKE, "3.5", "2008", "1e3", "0x10"]),
        st.sampled_from(_HUGE),
        st.sampled_from([math.nan, math.inf, -math.inf]),  # sent as NaN/Infinity tokens
        _NESTED,
    ]
    if not info.nullable:
        kinds.append(st.none())
    if info.categories:
        cats = [str(c) for c in info.categories]
        near = [c.swapcase() for c in cats] + [c + " " for c in cats] + [0, 1, 1.5, 2.0]
        kinds.append(st.sampled_from(near))
    return st.one_of(*kinds)


@st.composite
def _valid_row(draw: st.DrawFn, features: tuple[FeatureInfo, ...]) -> Any:
    """Every value valid, by name (nullable features may be left out) or in feature order."""
    values = {f.name: draw(_valid_value(f)) for f in features}
    if draw(st.booleans()):
        return [values[f.name] for f in features]
    nullable = [f.name for f in features if f.nullable]
    left_out = draw(st.sets(st.sampled_from(nullable))) if nullable else set()
    return {name: value for name, value in values.items() if name not in left_out}


@st.composite
def _bad_row(draw: st.DrawFn, features: tuple[FeatureInfo, ...]) -> Any:
    """A valid row with one thing wrong, or no row at all."""
    row = draw(_valid_row(features))
    names = [f.name for f in features]
    wrong = draw(st.sampled_from(["value"] * 4 + ["missing", "unknown", "long", "junk"]))
    extra = st.lists(_SCALARS, min_size=1, max_size=2)
    if wrong == "value":
        index = draw(st.integers(0, len(features) - 1))
        value = draw(_bad_value(features[index]))
        if isinstance(row, list):
            row[index] = value
        else:
            row[names[index]] = value
    elif wrong == "missing":  # a required feature, or a value of a positional row
        required = [f.name for f in features if not f.nullable]
        if isinstance(row, dict) and required:
            row.pop(draw(st.sampled_from(required)))
        else:
            row = list(row.values()) if isinstance(row, dict) else row
            row = row[: draw(st.integers(0, len(row) - 1))]
    elif wrong == "unknown" and isinstance(row, dict):
        key = draw(st.sampled_from([*(n.upper() for n in names), "wings", "", "island "]))
        row[key] = draw(_SCALARS)
    elif wrong in ("unknown", "long"):  # a positional row with values past the last feature
        values = row if isinstance(row, list) else [row.get(n) for n in names]
        row = [*values, *draw(extra)]
    else:
        row = draw(_JUNK)  # never a valid row: lists hold at most 3 items
    return row


@st.composite
def _request(draw: st.DrawFn, features: tuple[FeatureInfo, ...]) -> tuple[str, bytes, bool]:
    """A path, a body and whether the body was built to be valid."""
    good, bad = _valid_row(features), _bad_row(features)
    valid = draw(st.booleans())
    path = draw(st.sampled_from([PREDICT, BATCH]))
    wrong = "" if valid else draw(st.sampled_from(
        ["row"] * 8 + ["extra key", "other key", "junk", "empty", "oversized", "broken JSON"]
    ))
    payload: Any
    if path == PREDICT:
        payload = {"features": draw(bad if wrong == "row" else good)}
        if wrong in ("empty", "oversized"):  # no such thing for one row: a list of rows
            payload = {"features": draw(st.lists(good, min_size=2, max_size=3))}
    else:
        rows = draw(st.lists(good, min_size=1, max_size=MAX_BATCH))
        if wrong == "row":
            rows = rows[: MAX_BATCH - 1]
            rows.insert(draw(st.integers(0, len(rows))), draw(bad))
        elif wrong == "empty":
            rows = []
        elif wrong == "oversized":
            rows = rows * (MAX_BATCH // len(rows) + 1)
        payload = {"instances": rows}
    if wrong == "extra key":
        payload[draw(st.sampled_from(["x", "instances", "features", "model_version"]))] = 1
    elif wrong == "other key":
        payload = {draw(st.sampled_from(["Features", "instance", "rows"])): payload.popitem()[1]}
    elif wrong == "junk":
        payload = draw(_JUNK)
    body = json.dumps(payload).encode()  # NaN and infinities become NaN/Infinity tokens
    if wrong == "broken JSON":
        body = draw(st.one_of(
            st.integers(0, len(body) - 1).map(lambda n: body[:n]),
            st.sampled_from([b" x", b"}", b",", b"\x00", b"\xff"]).map(lambda b: body + b),
        ))
    return path, body, valid


# ------------------------------------------------------------------------------ comparison
def _same(a: Any, b: Any) -> bool:
    """Equal JSON values, floats within ``REL_TOL`` (a relative tolerance)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-15)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _view(response: Any) -> tuple[int, Any, str | None, str | None]:
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
        response.headers.get("x-model-bundle"),
    )


def _same_view(fast: tuple[Any, ...], route: tuple[Any, ...]) -> bool:
    return fast[0] == route[0] and fast[2:] == route[2:] and _same(fast[1], route[1])


# ----------------------------------------------------------------------------------- test
def test_fast_path_answers_every_body_as_the_route_does(
    pair: Pair, features: tuple[FeatureInfo, ...]
) -> None:
    tally: Counter[str] = Counter()
    requests = _request(features)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests)
    def check(request: tuple[str, bytes, bool]) -> None:
        path, body, valid = request
        headers = {"Content-Type": "application/json"}
        before = pair.counts()
        fast = pair.fast.post(path, content=body, headers=headers)
        after = pair.counts()
        route = pair.route.post(path, content=body, headers=headers)
        answered, deferred = (int(a - b) for a, b in zip(after, before, strict=True))
        assert answered + deferred == 1, (answered, deferred)  # every body reaches the fast path
        fast_view, route_view = _view(fast), _view(route)
        assert _same_view(fast_view, route_view), (
            f"{path} {body[:2000]!r}\n  fast path: {fast_view}\n  route:     {route_view}"
        )
        assert route.status_code < 500, route.text
        if answered:
            assert fast.status_code == 200, fast.text  # the fast path never answers an error
        assert (route.status_code == 200) is valid, (path, body[:2000], route.text)
        tally["requests"] += 1
        tally["valid"] += valid
        tally["valid answered"] += valid and answered
        tally[f"status {route.status_code}"] += 1

    check()
    # Both kinds of body came up, and the fast path answered the valid ones.
    assert tally["valid"] >= 30 and tally["requests"] - tally["valid"] >= 30, tally
    assert tally["valid answered"] >= 0.95 * tally["valid"], tally
