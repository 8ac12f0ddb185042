"""``Forecaster``: recursive multi-step forecasts of a time-series bundle from recent history.

A request sends the last rows of one or more series (time, target, series id when the model is
grouped) and a horizon ``H``. For each step ``j = 1..H`` the features of time ``T + j`` are rebuilt
with the training code (``mlservice.pipelines.timeseries.add_series_features``) from the history
plus the forecasts of steps before ``j``, then the model predicts all series in one call: the
forecast is **recursive**. The model itself is direct at its trained horizon ``h`` (features of
``t`` use values up to ``t - h``), so steps ``1..h`` use only real history.

Models with exogenous features need their values for every future step (``future`` rows): they
are treated as known in advance (prices you set, holidays), never forecast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from mlservice.bundle import Bundle
from mlservice.errors import SchemaError
from mlservice.inference.coercion import to_utc_naive
from mlservice.inference.predictor import Predictor
from mlservice.pipelines.timeseries import SeriesSpec, add_series_features, future_times

__all__ = ["FORECAST_METHOD", "ForecastPoint", "Forecaster", "example_request"]

FORECAST_METHOD: Final = "recursive"
_SERIES = "__series__"


@dataclass(frozen=True)
class ForecastPoint:
    """One forecast: series id (None when the model has one series), step, time and value."""

    group: Any
    step: int
    time: str
    forecast: float | None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _to_timestamp(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str | pd.Timestamp) and not hasattr(value, "isoformat"):
        return None
    return to_utc_naive(value)


class Forecaster:
    """A time-series bundle ready to forecast; build it once per loaded bundle."""

    def __init__(self, model: Bundle | Predictor) -> None:
        predictor = model if isinstance(model, Predictor) else Predictor(model)
        meta = predictor.metadata
        if meta.get("task") != "time_series" or not isinstance(meta.get("time_series"), Mapping):
            raise SchemaError(
                f"model {predictor.name!r} is a {meta.get('task')!r} model; forecasts need a "
                "time_series model. Use POST /api/v1/predict"
            )
        self.predictor = predictor
        self.bundle = predictor.bundle
        self.spec = SeriesSpec.from_dict(dict(meta["time_series"]))
        self._known = None if self.spec.groups is None else set(self.spec.groups)
        self._history_keys = {self.spec.time_column, self.spec.target, *self.spec.exogenous}
        self._request_spec = dataclasses.replace(self.spec, group_column=_SERIES)
        if self.spec.group_column:
            self._history_keys.add(self.spec.group_column)

    @property
    def min_history(self) -> int:
        """History rows each series needs: the largest lag or window + horizon - 1."""
        return self.spec.min_history

    def _need_text(self) -> str:
        spec = self.spec
        longest = max(max(spec.lags), max(spec.rolling, default=0))
        return (
            f"at least {spec.min_history} consecutive rows (largest lag/rolling window {longest} "
            f"+ trained horizon {spec.horizon} - 1)"
        )

    # --------------------------------------------------------------------------- history
    def _series(self, history: Sequence[Mapping[str, Any]]) -> dict[Any, pd.DataFrame]:
        spec = self.spec
        if not history:
            raise SchemaError(f"history is empty; send {self._need_text()} of each series")
        times: list[pd.Timestamp] = []
        values: list[float] = []
        groups: list[Any] = []
        for i, row in enumerate(history):
            if not isinstance(row, Mapping):
                raise SchemaError(f"history row {i} must be an object, got {type(row).__name__}")
            extra = sorted(str(k) for k in row if k not in self._history_keys)
            if extra:
                raise SchemaError(
                    f"history row {i} has unknown fields {extra}; expected "
                    f"{sorted(self._history_keys)}"
                )
            stamp = _to_timestamp(row.get(spec.time_column))
            if stamp is None:
                raise SchemaError(
                    f"history row {i}: {spec.time_column!r} must be an ISO 8601 date/time, "
                    f"got {row.get(spec.time_column)!r}"
                )
            value = row.get(spec.target)
            if not _is_number(value):
                raise SchemaError(
                    f"history row {i}: {spec.target!r} must be a finite number, got {value!r}"
                )
            groups.append(self._group_of(row, f"history row {i}"))
            times.append(stamp)
            values.append(float(value))  # type: ignore[arg-type]
        frame = pd.DataFrame({spec.time_column: times, spec.target: values})
        out: dict[Any, pd.DataFrame] = {}
        for group in dict.fromkeys(groups):  # first-seen order
            part = frame[[g == group for g in groups]]
            part = part.sort_values(spec.time_column, kind="stable").reset_index(drop=True)
            self._check_series(group, part[spec.time_column])
            out[group] = part.tail(spec.min_history).reset_index(drop=True)
        return out

    def _group_of(self, row: Mapping[str, Any], where: str) -> Any:
        column = self.spec.group_column
        if column is None:
            return None
        if column not in row:
            raise SchemaError(f"{where} is missing the series id {column!r}")
        group = row[column]
        if self._known is not None and (
            not isinstance(group, str | int) or isinstance(group, bool) or group not in self._known
        ):
            known = sorted(self._known, key=str)
            raise SchemaError(
                f"{where}: unknown series {group!r} in {column!r}; the model knows {known}"
            )
        return group

    def _label(self, group: Any) -> str:
        return f"series {group!r}" if self.spec.group_column else "the series"

    def _check_series(self, group: Any, stamps: pd.Series) -> None:
        spec = self.spec
        duplicated = stamps.duplicated()
        if duplicated.any():
            stamp = stamps[duplicated].iloc[0]
            raise SchemaError(f"{self._label(group)} has two history rows at {stamp.isoformat()}")
        if len(stamps) < spec.min_history:
            raise SchemaError(
                f"{self._label(group)} has {len(stamps)} history rows; this model needs "
                f"{self._need_text()}"
            )
        tail = stamps.tail(spec.min_history).reset_index(drop=True)
        expected = future_times(tail.iloc[0], spec, len(tail) - 1)
        for i in range(1, len(tail)):
            if tail.iloc[i] != expected[i - 1]:
                raise SchemaError(
                    f"{self._label(group)}: history is not evenly spaced; expected "
                    f"{expected[i - 1].isoformat()} after {tail.iloc[i - 1].isoformat()}, got "
                    f"{tail.iloc[i].isoformat()}. Send the last {spec.min_history} consecutive "
                    "rows without gaps"
                )

    # ---------------------------------------------------------------------------- future
    def _future(
        self, future: Sequence[Mapping[str, Any]] | None, groups: list[Any], horizon: int
    ) -> dict[Any, list[Mapping[str, Any]]]:
        spec = self.spec
        if not spec.exogenous:
            if future:
                raise SchemaError(
                    "this model uses no exogenous features; leave 'future' out (only the "
                    "history is needed)"
                )
            return {g: [{}] * horizon for g in groups}
        if not future:
            raise SchemaError(
                f"this model uses exogenous features {list(spec.exogenous)}: send 'future' with "
                f"their values for each of the {horizon} steps of each series"
            )
        allowed = {*spec.exogenous, spec.time_column}
        if spec.group_column:
            allowed.add(spec.group_column)
        rows: dict[Any, list[Mapping[str, Any]]] = {g: [] for g in groups}
        for i, row in enumerate(future):
            if not isinstance(row, Mapping):
                raise SchemaError(f"future row {i} must be an object, got {type(row).__name__}")
            extra = sorted(str(k) for k in row if k not in allowed)
            if extra:
                raise SchemaError(
                    f"future row {i} has unknown fields {extra}; expected {sorted(allowed)}"
                )
            group = self._group_of(row, f"future row {i}")
            if group not in rows:
                raise SchemaError(f"future row {i} is for {self._label(group)}, not in history")
            rows[group].append({k: row.get(k) for k in spec.exogenous})
        for group, items in rows.items():
            if len(items) != horizon:
                raise SchemaError(
                    f"{self._label(group)} has {len(items)} future rows; send exactly "
                    f"{horizon} (one per forecast step, in time order)"
                )
        return rows

    # -------------------------------------------------------------------------- forecast
    def forecast(
        self,
        history: Sequence[Mapping[str, Any]],
        *,
        horizon: int | None = None,
        future: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[ForecastPoint]:
        """Forecast ``horizon`` steps (default: the trained horizon) after each series' history."""
        spec = self.spec
        steps = spec.horizon if horizon is None else int(horizon)
        if steps < 1:
            raise SchemaError(f"horizon must be >= 1, got {horizon!r}")
        frames = self._series(history)
        groups = list(frames)
        exogenous = self._future(future, groups, steps)
        times = {
            g: future_times(part[spec.time_column].iloc[-1], spec, steps)
            for g, part in frames.items()
        }
        points: list[ForecastPoint] = []
        for step in range(1, steps + 1):
            for group in groups:
                stamp = times[group][step - 1]
                nxt = pd.DataFrame({spec.time_column: [stamp], spec.target: [np.nan]})
                frames[group] = pd.concat([frames[group], nxt], ignore_index=True)
            combined = pd.concat(
                [f.assign(**{_SERIES: i}) for i, f in enumerate(frames.values())], ignore_index=True
            )
            # one series per request group; the training id column is not needed to build lags
            engineered = add_series_features(combined, self._request_spec)
            last = np.cumsum([len(f) for f in frames.values()]) - 1
            rows = []
            for group, position in zip(groups, last, strict=True):
                row: dict[str, Any] = engineered.iloc[position].astype(float).to_dict()
                if spec.group_column:
                    row[spec.group_column] = group
                row.update(exogenous[group][step - 1])
                rows.append(row)
            X = self.predictor.to_frame(rows)  # noqa: N806  (schema checks: types, categories)
            predicted = np.asarray(self.bundle.pipeline.predict(X), dtype="float64").reshape(-1)
            for group, value in zip(groups, predicted.tolist(), strict=True):
                frame = frames[group]
                frame.loc[frame.index[-1], spec.target] = value
                # keep only the rows the next step can reach
                frames[group] = frame.tail(spec.min_history).reset_index(drop=True)
                points.append(
                    ForecastPoint(
                        group=group,
                        step=step,
                        time=times[group][step - 1].isoformat(),
                        forecast=value if math.isfinite(value) else None,
                    )
                )
        return sorted(points, key=lambda p: (groups.index(p.group), p.step))


def example_request(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A valid forecast body for a bundle's metadata: ``min_history`` consecutive rows."""
    raw = meta.get("time_series")
    if not isinstance(raw, Mapping):
        return {"history": [], "horizon": 1}
    spec = SeriesSpec.from_dict(dict(raw))
    features = [f for f in meta.get("features") or [] if isinstance(f, Mapping)]
    lag: Mapping[str, Any] = next((f for f in features if f.get("name") == "lag_1"), {})
    value = lag.get("example") if isinstance(lag.get("example"), int | float) else 0.0
    start = pd.Timestamp("2024-01-01")
    stamps = [start, *future_times(start, spec, spec.min_history - 1)]
    group = spec.groups[0] if spec.groups else None
    history = []
    for stamp in stamps:
        row: dict[str, Any] = {spec.time_column: stamp.isoformat(), spec.target: value}
        if spec.group_column:
            row[spec.group_column] = group
        history.append(row)
    return {"history": history, "horizon": spec.horizon}
