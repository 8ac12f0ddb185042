"""Per-kind checks and conversion of one input column (the Predictor's full checks).

Each coercer takes the column of one feature (object values as sent), its null mask and the
feature's schema, raises ``SchemaError`` naming the row, feature, value and what was expected,
and returns the column as the pipeline takes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlservice.categories import canonical_category
from mlservice.errors import SchemaError

if TYPE_CHECKING:
    from mlservice.inference.predictor import FeatureInfo, Predictor

__all__ = [
    "COERCERS",
    "MAX_ABS_NUMERIC",
    "MAX_TEXT_LENGTH",
    "Coercer",
    "coerce_object",
    "is_null",
    "to_utc_naive",
]

#: Numeric inputs beyond this magnitude are refused: they are never real tabular values, and
#: models that cast to float32 (trees) would overflow on them.
MAX_ABS_NUMERIC = 1e15
#: The longest string value (characters) the API accepts for a text or open categorical feature.
MAX_TEXT_LENGTH = 100_000

Coercer = Callable[["Predictor", "FeatureInfo", pd.Series, np.ndarray, bool], pd.Series]


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _type_error(
    pred: Predictor, info: FeatureInfo, column: pd.Series, bad: np.ndarray, multi: bool, hint: str
) -> SchemaError:
    row = int(np.argmax(bad))
    value = column.iloc[row]
    expected = {
        "numeric": "must be a number",
        "boolean": "must be true or false",
        "datetime": "must be a date/time",
        "text": "must be a string",
    }
    what = expected.get(info.kind, "has an unexpected value")
    return pred._bad(info, row, multi, what, value, hint)


def _coerce_numeric(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    is_num = column.map(
        lambda v: isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    ).to_numpy(dtype=bool)
    bad = ~(is_num | nulls)
    if bad.any():
        raise _type_error(pred, info, column, bad, multi, _numeric_hint(info))
    floats = [math.nan if null else _as_float(v) for v, null in zip(column, nulls, strict=True)]
    values = pd.Series(floats, index=column.index, dtype="float64")
    arr = values.to_numpy()
    out_of_range = ~nulls & ~(np.isfinite(arr) & (np.abs(arr) <= MAX_ABS_NUMERIC))
    if out_of_range.any():
        row = int(np.argmax(out_of_range))
        raise pred._bad(
            info,
            row,
            multi,
            "must be a finite number",
            column.iloc[row],
            f"NaN, infinity and |x| > {MAX_ABS_NUMERIC:g} are refused; "
            + ("send null for a missing value" if info.nullable else "send a value"),
        )
    return values


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float range: out of range like infinity
        return math.inf if value > 0 else -math.inf


def _numeric_hint(info: FeatureInfo) -> str:
    if info.minimum is not None and info.maximum is not None:
        return f"training values ranged {info.minimum:g} to {info.maximum:g}"
    return "send a JSON number"


def _coerce_categorical(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    if info.canonical:  # the same string for 123, 123.0, np.int64(123) and "123"
        sent = column
        column = pd.Series(
            [v if null else canonical_category(v) for v, null in zip(sent, nulls, strict=True)],
            index=column.index,
            dtype=object,
        )
        bad = ~nulls & ~column.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if bad.any() and not info.closed:  # closed: "not a known category" below names them
            raise _type_error(pred, info, sent, bad, multi, "send a string or a number")
    if info.closed and info.categories is not None:
        allowed = set(info.categories)
        bad = ~nulls & ~column.map(lambda v: _hashable(v) and v in allowed).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.argmax(bad))
            raise pred._bad(
                info,
                row,
                multi,
                "is not a known category",
                column.iloc[row],
                f"expected one of {list(info.categories)}",
            )
    else:
        ok = column.map(lambda v: isinstance(v, str | int | bool)).to_numpy(dtype=bool)
        bad = ~(ok | nulls)
        if bad.any():
            raise _type_error(pred, info, column, bad, multi, "send a string")
    return column.astype(object).where(~nulls, np.nan)


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _coerce_boolean(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    ok = column.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    bad = ~(ok | nulls)
    if bad.any():
        raise _type_error(pred, info, column, bad, multi, "send JSON true or false")
    values = column.map(lambda v: None if is_null(v) else bool(v))
    if info.canonical:  # the model takes "True"/"False", like every categorical value
        strings = values.map(lambda v: None if v is None else ("True" if v else "False"))
        return strings.astype(object).where(~nulls, np.nan)
    if info.dtype == "bool" and not nulls.any():
        return values.astype(bool)
    return values.astype(object).where(~nulls, np.nan)


def _coerce_datetime(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    ok = column.map(lambda v: isinstance(v, str | datetime | date)).to_numpy(dtype=bool)
    bad = ~(ok | nulls)
    hint = "send an ISO 8601 string such as '2024-01-31T12:00:00'"
    if bad.any():
        raise _type_error(pred, info, column, bad, multi, hint)
    values = column.map(lambda v: None if is_null(v) else to_utc_naive(v))
    unparsed = ~nulls & values.isna().to_numpy(dtype=bool)
    if unparsed.any():
        row = int(np.argmax(unparsed))
        raise pred._bad(info, row, multi, "is not a valid date/time", column.iloc[row], hint)
    return pd.to_datetime(values)


def to_utc_naive(value: Any) -> pd.Timestamp | None:
    """``value`` as a naive UTC timestamp (aware ones converted), or None when it does not parse."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def coerce_object(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    ok = column.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    bad = ~(ok | nulls)
    if bad.any():
        raise _type_error(pred, info, column, bad, multi, "send a string")
    return column.astype(object).where(~nulls, np.nan)


COERCERS: dict[str, Coercer] = {
    "numeric": _coerce_numeric,
    "categorical": _coerce_categorical,
    "boolean": _coerce_boolean,
    "datetime": _coerce_datetime,
    "text": coerce_object,
}
