"""Time-series features computed from the past only, shared by training and serving.

Serving imports this module (the forecast endpoint and the bundle loader, for ``DeltaRegressor``),
so it imports nothing but pandas, numpy and scikit-learn.

Timing, with horizon ``h``: the row of time ``t`` is forecast from the origin ``t - h``, so its
features use target values up to ``t - h`` and never the value of ``t`` or later::

    lag_k           = y[t - h - k + 1]          lag_1 = y[t - h], the last known value
    rolling_mean_w  = mean(y[t - h - w + 1 .. t - h])      rolling_std_w likewise
    calendar_<part> = a part of the timestamp t itself (known in advance)

Positions are counted in rows of one series (``group_column``), in time order; rows must be evenly
spaced. ``lag_1`` is always a feature: it is the naive last-value forecast and the reference that
``DeltaRegressor`` predicts the change from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "REFERENCE_FEATURE",
    "DeltaRegressor",
    "SeriesSpec",
    "add_series_features",
    "calendar_parts_for",
    "future_times",
    "infer_step",
]

REFERENCE_FEATURE = "lag_1"

_DAY = pd.Timedelta(days=1)


def calendar_parts_for(step: pd.Timedelta) -> tuple[str, ...]:
    """Calendar parts that vary at a sampling step (a monthly series has no useful weekday)."""
    if step >= pd.Timedelta(days=300):
        return ()
    if step >= pd.Timedelta(days=80):
        return ("quarter",)
    if step >= pd.Timedelta(days=27):
        return ("month", "quarter")
    if step >= _DAY:
        return ("dayofweek", "day", "month")
    return ("hour", "dayofweek", "month")


def infer_step(times: pd.Series | pd.DatetimeIndex) -> tuple[str | None, pd.Timedelta]:
    """(pandas frequency alias or None, median step) of timestamps (sorted, deduplicated here).

    ``pd.infer_freq`` gives up on a single gap, so stretches of the series are tried too; a
    frequency is kept when it explains at least 90% of the steps.
    """
    index = pd.DatetimeIndex(pd.Series(times).drop_duplicates().sort_values())
    if len(index) < 2:
        raise ValueError("a series needs at least 2 distinct timestamps to infer its frequency")
    step = pd.Timedelta(pd.Series(index).diff().dropna().median())
    if len(index) < 3:
        return None, step
    freq = _infer_freq(index)
    if freq is None:
        found = [_infer_freq(index[i : i + 8]) for i in range(0, len(index) - 7, 8)]
        candidates = pd.Series([f for f in found if f is not None])
        if not candidates.empty:
            freq = str(candidates.value_counts().index[0])
            try:
                offset = pd.tseries.frequencies.to_offset(freq)
                explained = float(np.mean([a + offset == b for a, b in pairwise(index)]))
            except (ValueError, TypeError):
                explained = 0.0
            if explained < 0.9:
                freq = None
    return freq, step


def _infer_freq(index: pd.DatetimeIndex) -> str | None:
    """``pd.infer_freq`` as an alias string on pandas 2 and 3 (3.x moves to offset objects)."""
    try:
        with pd.option_context("future.infer_freq_returns_offset", True):
            offset: Any = pd.infer_freq(index)
    except (KeyError, ValueError, pd.errors.OptionError):  # pandas without that option
        offset = pd.infer_freq(index)
    if offset is None:
        return None
    return str(getattr(offset, "freqstr", offset))


@dataclass(frozen=True)
class SeriesSpec:
    """Everything needed to rebuild the features of a series (recorded in bundle metadata)."""

    target: str
    time_column: str
    horizon: int
    lags: tuple[int, ...]
    rolling: tuple[int, ...] = ()
    calendar: tuple[str, ...] = ()
    group_column: str | None = None
    freq: str | None = None
    step_seconds: float | None = None
    exogenous: tuple[str, ...] = ()
    groups: tuple[Any, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        target: str,
        time_column: str,
        horizon: int,
        lags: Sequence[int],
        rolling: Sequence[int] = (),
        calendar: Sequence[str] = (),
        group_column: str | None = None,
        freq: str | None = None,
        step_seconds: float | None = None,
        exogenous: Sequence[str] = (),
        groups: Sequence[Any] | None = None,
    ) -> SeriesSpec:
        """A spec with lag 1 always present and lags/windows sorted and unique."""
        return cls(
            target=target,
            time_column=time_column,
            horizon=int(horizon),
            lags=tuple(sorted({1, *(int(k) for k in lags)})),
            rolling=tuple(sorted({int(w) for w in rolling})),
            calendar=tuple(calendar),
            group_column=group_column,
            freq=freq,
            step_seconds=step_seconds,
            exogenous=tuple(exogenous),
            groups=None if groups is None else tuple(groups),
        )

    @property
    def min_history(self) -> int:
        """Rows of one series needed before its first forecastable row (and by a request)."""
        return max(max(self.lags), max(self.rolling, default=0)) + self.horizon - 1

    @property
    def feature_columns(self) -> list[str]:
        """Names of the engineered columns, in order."""
        names = [f"lag_{k}" for k in self.lags]
        for w in self.rolling:
            names += [f"rolling_mean_{w}", f"rolling_std_{w}"]
        names += [f"calendar_{part}" for part in self.calendar]
        return names

    @property
    def step(self) -> pd.Timedelta | None:
        return None if self.step_seconds is None else pd.Timedelta(seconds=self.step_seconds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["min_history"] = self.min_history
        data["engineered_features"] = self.feature_columns
        for key in ("lags", "rolling", "calendar", "exogenous"):
            data[key] = list(data[key])
        if data["groups"] is not None:
            data["groups"] = list(data["groups"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeriesSpec:
        known = {"target", "time_column", "horizon", "lags", "rolling", "calendar",
                 "group_column", "freq", "step_seconds", "exogenous", "groups"}  # fmt: skip
        return cls.create(**{k: v for k, v in data.items() if k in known})


def add_series_features(frame: pd.DataFrame, spec: SeriesSpec) -> pd.DataFrame:
    """The engineered columns of ``frame`` (same index), computed per series in time order.

    ``frame`` holds the time column (datetimes), the target (NaN where unknown) and the group
    column when the spec has one; the row order does not matter.
    """
    times = pd.to_datetime(frame[spec.time_column]).to_numpy()
    if spec.group_column:
        codes = pd.factorize(frame[spec.group_column])[0]
    else:
        codes = np.zeros(len(frame), dtype=np.int64)
    order = np.lexsort((times, codes))  # by series, then time; stable
    series = pd.Series(codes[order])
    y = pd.Series(
        pd.to_numeric(frame[spec.target].iloc[order], errors="coerce").to_numpy(dtype="float64")
    )
    by_series = y.groupby(series, sort=False)
    out: dict[str, pd.Series] = {}
    for k in spec.lags:
        out[f"lag_{k}"] = by_series.shift(spec.horizon - 1 + k)
    origin = by_series.shift(spec.horizon)
    for w in spec.rolling:
        window = origin.groupby(series, sort=False)
        out[f"rolling_mean_{w}"] = window.transform(lambda s, w=w: s.rolling(w, w).mean())
        out[f"rolling_std_{w}"] = window.transform(lambda s, w=w: s.rolling(w, w).std())
    stamps = pd.Series(pd.DatetimeIndex(times[order]))
    for part in spec.calendar:
        out[f"calendar_{part}"] = getattr(stamps.dt, part).astype("float64")
    features = pd.DataFrame(out, columns=spec.feature_columns)
    restored = np.empty(len(order), dtype=np.int64)
    restored[order] = np.arange(len(order))
    result = features.iloc[restored]
    result.index = frame.index
    return result


def future_times(last: pd.Timestamp, spec: SeriesSpec, steps: int) -> pd.DatetimeIndex:
    """The ``steps`` timestamps after ``last``: by the recorded frequency, else the median step."""
    if spec.freq:
        try:
            return pd.date_range(start=last, periods=steps + 1, freq=spec.freq)[1:]
        except ValueError:
            pass
    step = spec.step
    if step is None:
        raise ValueError("the series spec has neither a frequency nor a step")
    return pd.DatetimeIndex([last + step * i for i in range(1, steps + 1)])


class DeltaRegressor(RegressorMixin, BaseEstimator):
    """Fit ``regressor`` on the change ``y - X[reference]`` and predict ``X[reference] + change``.

    Trees cannot predict outside the range of their training targets, so a trending series
    (prices, CO2) would be capped at its historical maximum; the change from the last known value
    (``lag_1``) stays in range. Linear models are unaffected by the rewrite.
    """

    def __init__(self, regressor: Any = None, reference: str = REFERENCE_FEATURE) -> None:
        self.regressor = regressor
        self.reference = reference

    def _reference_values(self, X: Any) -> np.ndarray:  # noqa: N803
        if not isinstance(X, pd.DataFrame) or self.reference not in X.columns:
            raise ValueError(
                f"DeltaRegressor needs a DataFrame with the reference column {self.reference!r}"
            )
        return pd.to_numeric(X[self.reference], errors="coerce").to_numpy(dtype="float64")

    def fit(self, X: Any, y: Any, **fit_params: Any) -> DeltaRegressor:  # noqa: N803
        if self.regressor is None:
            raise ValueError("DeltaRegressor needs a regressor")
        reference = self._reference_values(X)
        change = np.asarray(y, dtype="float64") - reference
        self.regressor_ = clone(self.regressor).fit(X, change, **fit_params)
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "regressor_")
        reference = self._reference_values(X)
        change = np.asarray(self.regressor_.predict(X), dtype="float64").reshape(len(X))
        return np.asarray(change + reference)
