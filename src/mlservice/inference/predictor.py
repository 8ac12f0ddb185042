"""``Predictor``: load a bundle once, check input against its feature schema, predict vectorized.

Input rows come as mappings (``{"feature": value}``) or as positional sequences in the bundle's
``feature_names`` order. Every request makes ONE call into the pipeline, whatever its size. All
floats in the output are JSON-safe: a NaN or infinite model output becomes ``None``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlservice.bundle import Bundle, load_bundle
from mlservice.errors import SchemaError

__all__ = ["MAX_ABS_NUMERIC", "FeatureInfo", "Predictor", "Row"]

#: Numeric inputs beyond this magnitude are refused: they are never real tabular values, and
#: models that cast to float32 (trees) would overflow on them.
MAX_ABS_NUMERIC = 1e15

_HINT = "See GET /api/v1/model for the feature schema."

Row = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True)
class FeatureInfo:
    """One input feature as the bundle describes it."""

    name: str
    kind: str
    nullable: bool
    categories: tuple[Any, ...] | None
    closed: bool  # True when ``categories`` lists every value seen in training
    minimum: float | None
    maximum: float | None
    dtype: str
    example: Any

    @classmethod
    def from_metadata(cls, spec: Mapping[str, Any]) -> FeatureInfo:
        """Build from one entry of ``metadata["features"]``."""
        cats = spec.get("categories")
        return cls(
            name=str(spec["name"]),
            kind=str(spec.get("type", "numeric")),
            nullable=bool(spec.get("nullable", False)),
            categories=tuple(cats) if cats else None,
            closed=bool(cats) and "n_categories" not in spec,
            minimum=_opt_float(spec.get("min")),
            maximum=_opt_float(spec.get("max")),
            dtype=str(spec.get("dtype", "")),
            example=spec.get("example"),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _json_float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Predictor:
    """A loaded bundle ready to predict; build it once and share it between requests."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        meta = bundle.metadata
        self.task: str = str(meta.get("task", "regression"))
        specs = meta.get("features") or [{"name": n} for n in meta.get("feature_names", [])]
        self.features: tuple[FeatureInfo, ...] = tuple(FeatureInfo.from_metadata(s) for s in specs)
        names = meta.get("feature_names") or [f.name for f in self.features]
        self.feature_names: tuple[str, ...] = tuple(str(n) for n in names)
        by_name = {f.name: f for f in self.features}
        missing = [n for n in self.feature_names if n not in by_name]
        if missing:
            raise SchemaError(f"bundle metadata lists feature_names {missing} without a schema")
        self._by_name = by_name
        self._ordered = tuple(by_name[n] for n in self.feature_names)
        self._required = frozenset(f.name for f in self._ordered if not f.nullable)
        self._allowed = frozenset(self.feature_names)
        target = meta.get("target") or {}
        classes = target.get("classes") if isinstance(target, Mapping) else None
        self.classes: tuple[Any, ...] | None = tuple(classes) if classes else None
        interval = meta.get("interval")
        self._halfwidth: float | None = None
        if isinstance(interval, Mapping) and interval.get("halfwidth") is not None:
            self._halfwidth = _json_float(interval["halfwidth"])

    @classmethod
    def from_path(cls, path: str | Path) -> Predictor:
        """Load and verify the bundle at ``path`` (hashes, skops allowlist; never pickle)."""
        return cls(load_bundle(path))

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def metadata(self) -> dict[str, Any]:
        return self.bundle.metadata

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification" and self.classes is not None

    # ----------------------------------------------------------------------------- input
    def to_frame(self, rows: Sequence[Row]) -> pd.DataFrame:
        """Check ``rows`` against the feature schema; return the frame the pipeline expects."""
        if isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
            raise SchemaError(f"expected a list of rows, got {type(rows).__name__}. {_HINT}")
        if not rows:
            raise SchemaError(f"no rows to predict; send at least one row. {_HINT}")
        multi = len(rows) > 1
        records = [self._named(row, i if multi else None) for i, row in enumerate(rows)]
        frame = pd.DataFrame.from_records(records, columns=list(self.feature_names))
        return self._coerce(frame, multi)

    def _named(self, row: Row, index: int | None) -> Mapping[str, Any]:
        where = f"row {index}: " if index is not None else ""
        if isinstance(row, Mapping):
            keys = row.keys()
            missing = [n for n in self.feature_names if n in self._required and n not in keys]
            extra = [str(k) for k in keys if k not in self._allowed]
            if missing or extra:
                parts = [f"request is missing features {missing}"] if missing else []
                if extra:
                    lead = "got" if missing else "request has"
                    parts.append(f"{lead} unknown features {extra}{self._did_you_mean(extra)}")
                raise SchemaError(f"{where}{'; '.join(parts)}. {_HINT}")
            return row
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise SchemaError(
                f"{where}a row must be an object of features or a list of values in feature "
                f"order, got {type(row).__name__}. {_HINT}"
            )
        if len(row) != len(self.feature_names):
            raise SchemaError(
                f"{where}expected {len(self.feature_names)} values in the order "
                f"{list(self.feature_names)}, got {len(row)}"
            )
        return dict(zip(self.feature_names, row, strict=True))

    def _did_you_mean(self, extra: list[str]) -> str:
        for name in extra:
            close = difflib.get_close_matches(name, self.feature_names, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]!r} for {name!r}?)"
        return ""

    def _coerce(self, frame: pd.DataFrame, multi: bool) -> pd.DataFrame:
        out: dict[str, Any] = {}
        for info in self._ordered:
            column = frame[info.name]
            nulls = column.map(_is_null).to_numpy(dtype=bool)
            if nulls.any() and not info.nullable:
                raise self._bad(
                    info,
                    int(np.argmax(nulls)),
                    multi,
                    "must not be null",
                    None,
                    "it had no missing values in training; send a value",
                )
            coerce = _COERCERS.get(info.kind, _coerce_object)
            out[info.name] = coerce(self, info, column, nulls, multi)
        return pd.DataFrame(out, index=frame.index)

    def _bad(
        self, info: FeatureInfo, row: int, multi: bool, what: str, value: Any, hint: str
    ) -> SchemaError:
        where = f"row {row}, " if multi else ""
        if isinstance(value, np.generic):
            value = value.item()
        got = "" if value is None else f", got {value!r}"
        return SchemaError(f"{where}feature {info.name!r} {what}{got}; {hint}")

    # ---------------------------------------------------------------------------- output
    def predict_records(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Predict a list of rows (mappings or positional lists); one dict per row."""
        return self._predict(self.to_frame(rows))

    def predict_frame(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Predict the rows of a DataFrame that has (at least) the feature columns."""
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            raise SchemaError(f"frame is missing feature columns {missing}. {_HINT}")
        if frame.empty:
            raise SchemaError(f"no rows to predict; send at least one row. {_HINT}")
        sub = frame[list(self.feature_names)]
        return self._predict(self._coerce(sub.astype(object).where(sub.notna(), None), True))

    def predict_one(self, row: Row) -> dict[str, Any]:
        """Predict a single row."""
        return self.predict_records([row])[0]

    def _predict(self, X: pd.DataFrame) -> list[dict[str, Any]]:  # noqa: N803
        pipeline = self.bundle.pipeline
        if self.is_classifier and hasattr(pipeline, "predict_proba"):
            proba = np.asarray(pipeline.predict_proba(X), dtype=float)
            return self._from_proba(proba, getattr(pipeline, "classes_", None))
        raw = np.asarray(pipeline.predict(X))
        if raw.ndim > 1:
            raw = raw.reshape(len(X), -1)[:, 0]
        if self.is_classifier:
            return [self._label_only(v) for v in raw.tolist()]
        return [self._regression(v) for v in raw.astype(float).tolist()]

    def _from_proba(self, proba: np.ndarray, codes: Any) -> list[dict[str, Any]]:
        assert self.classes is not None
        codes = list(range(proba.shape[1])) if codes is None else list(np.asarray(codes).tolist())
        labels = [self._label(c) for c in codes]
        keys = [str(label) for label in labels]
        finite = np.isfinite(proba)
        safe = np.clip(np.where(finite, proba, -np.inf), 0.0, 1.0)
        safe[~finite] = -1.0  # never chosen over a real probability
        best = np.argmax(safe, axis=1)
        results = []
        for i, row in enumerate(proba.tolist()):
            probabilities = {
                key: (min(max(p, 0.0), 1.0) if math.isfinite(p) else None)
                for key, p in zip(keys, row, strict=True)
            }
            top = int(best[i])
            confidence = probabilities[keys[top]]
            results.append(
                {
                    "prediction": labels[top] if confidence is not None else None,
                    "confidence": confidence,
                    "probabilities": probabilities,
                    "interval": None,
                }
            )
        return results

    def _label(self, code: Any) -> Any:
        assert self.classes is not None
        if isinstance(code, int | np.integer) and 0 <= int(code) < len(self.classes):
            return self.classes[int(code)]
        return code.item() if isinstance(code, np.generic) else code

    def _label_only(self, code: Any) -> dict[str, Any]:
        if isinstance(code, float) and not math.isfinite(code):
            label = None
        elif isinstance(code, float) and code.is_integer():
            label = self._label(int(code))
        else:
            label = self._label(code)
        return {"prediction": label, "confidence": None, "probabilities": None, "interval": None}

    def _regression(self, value: float) -> dict[str, Any]:
        pred = _json_float(value)
        interval = None
        if pred is not None and self._halfwidth is not None:
            interval = [pred - self._halfwidth, pred + self._halfwidth]
        return {"prediction": pred, "confidence": None, "probabilities": None, "interval": interval}


# ------------------------------------------------------------------- per-kind coercion
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
    values = pd.to_numeric(column.where(~nulls, np.nan), errors="coerce").astype("float64")
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


def _numeric_hint(info: FeatureInfo) -> str:
    if info.minimum is not None and info.maximum is not None:
        return f"training values ranged {info.minimum:g} to {info.maximum:g}"
    return "send a JSON number"


def _coerce_categorical(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
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
    values = column.map(lambda v: None if _is_null(v) else bool(v))
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
    values = column.map(lambda v: None if _is_null(v) else _to_utc_naive(v))
    unparsed = ~nulls & values.isna().to_numpy(dtype=bool)
    if unparsed.any():
        row = int(np.argmax(unparsed))
        raise pred._bad(info, row, multi, "is not a valid date/time", column.iloc[row], hint)
    return pd.to_datetime(values)


def _to_utc_naive(value: Any) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _coerce_object(
    pred: Predictor, info: FeatureInfo, column: pd.Series, nulls: np.ndarray, multi: bool
) -> pd.Series:
    ok = column.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    bad = ~(ok | nulls)
    if bad.any():
        raise _type_error(pred, info, column, bad, multi, "send a string")
    return column.astype(object).where(~nulls, np.nan)


_COERCERS = {
    "numeric": _coerce_numeric,
    "categorical": _coerce_categorical,
    "boolean": _coerce_boolean,
    "datetime": _coerce_datetime,
    "text": _coerce_object,
}
