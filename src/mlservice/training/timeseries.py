"""Training side of ``task: time_series``: the feature frame, the purged time split, naive metrics.

The features themselves come from ``mlservice.pipelines.timeseries`` so serving rebuilds them with
the same code. Rows are ordered by time (then series) so positional splits and CV folds follow time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlservice.config import Config
from mlservice.errors import DataError
from mlservice.pipelines.timeseries import (
    REFERENCE_FEATURE,
    SeriesSpec,
    add_series_features,
    calendar_parts_for,
    infer_step,
)
from mlservice.training.frames import coerce_features, feature_columns

__all__ = [
    "NAIVE_METHOD",
    "SeriesData",
    "naive_comparison",
    "parse_times",
    "prepare_series",
    "purge_before_test",
    "series_rows",
    "time_folds",
    "with_groups",
]

NAIVE_METHOD = "naive last value: the forecast of y[t] is y[t - horizon]"
#: Error metrics that decide whether the model beats the naive forecast (lower is better).
_ERROR_METRICS = ("mape", "rmse", "mae")


@dataclass
class SeriesData:
    """The model-ready frame of a time series task, rows in time order."""

    X: pd.DataFrame
    y: np.ndarray
    times: pd.Series
    series: pd.Series | None
    types: dict[str, str]
    spec: SeriesSpec
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> np.ndarray:
        """y at the forecast origin (``lag_1``): the naive forecast of each row."""
        return self.X[REFERENCE_FEATURE].to_numpy(dtype="float64")


def parse_times(values: pd.Series, column: str) -> pd.Series:
    """Datetimes of a time column (UTC-naive); ``DataError`` naming the first bad value."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise DataError(
            f"data.time_column {column!r} holds numbers ({values.iloc[0]!r}, …); time series need "
            "dates or date-times, e.g. write the year 2001 as '2001-01-01'"
        )
    parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
    bad = parsed.isna()
    if bad.any():
        raise DataError(
            f"data.time_column {column!r} has a value that is not a date/time: "
            f"{values[bad].iloc[0]!r} (row {int(np.argmax(bad.to_numpy()))}); fix or drop it"
        )
    return parsed.dt.tz_localize(None)


def _check_columns(frame: pd.DataFrame, config: Config) -> tuple[str, str, str | None]:
    data = config.data
    if not data.time_column:
        raise DataError("task time_series needs data.time_column")
    if config.split.strategy != "time":
        raise DataError(
            f"task time_series is split by time, never shuffled; set split.strategy: time "
            f"(got {config.split.strategy!r})"
        )
    if data.group_column and frame[data.group_column].isna().any():
        raise DataError(f"data.group_column {data.group_column!r} has missing series ids")
    return data.time_column, data.target, data.group_column


def prepare_series(frame: pd.DataFrame, config: Config) -> SeriesData:
    """Lags, rolling stats and calendar parts per series; warm-up and unknown rows dropped."""
    time_col, target, group_col = _check_columns(frame, config)
    notes: list[str] = []
    times = parse_times(frame[time_col], time_col)
    y_all = pd.to_numeric(frame[target], errors="coerce")
    bad = frame[target].notna() & y_all.isna()
    if bad.any():
        raise DataError(f"target {target!r} must be numeric; got {frame[target][bad].iloc[0]!r}")
    keys = [frame[group_col], times] if group_col else [times]
    duplicated = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)}).duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        where = f" in series {frame[group_col].iloc[row]!r}" if group_col else ""
        raise DataError(
            f"time {times.iloc[row]} appears twice{where}; a series needs one row per time step "
            "(aggregate duplicates first, or set data.group_column)"
        )
    exogenous = feature_columns(frame, config)
    if group_col:
        exogenous = [c for c in exogenous if c != group_col]
    ts = config.time_series
    spec_names = SeriesSpec.create(
        target=target,
        time_column=time_col,
        horizon=ts.horizon,
        lags=ts.lags,
        rolling=ts.rolling,
        calendar=("month", "quarter", "dayofweek", "day", "hour"),
    ).feature_columns
    clash = sorted(set(exogenous) & set(spec_names))
    if clash:
        raise DataError(f"columns {clash} clash with engineered feature names; rename them")

    work = pd.DataFrame({time_col: times, target: y_all})
    if group_col:
        work[group_col] = frame[group_col].to_numpy()
    freq, step, irregular = _frequency(work, time_col, group_col)
    if irregular:
        notes.append(
            f"{irregular} time steps differ from the median step {step}; lags count rows, so "
            "gaps in a series shift its lags"
        )
    spec = SeriesSpec.create(
        target=target,
        time_column=time_col,
        horizon=ts.horizon,
        lags=ts.lags,
        rolling=ts.rolling,
        calendar=calendar_parts_for(step) if ts.calendar else (),
        group_column=group_col,
        freq=freq,
        step_seconds=step.total_seconds(),
        exogenous=exogenous,
    )
    engineered = add_series_features(work, spec)
    codes = pd.factorize(work[group_col])[0] if group_col else np.zeros(len(work), dtype=int)
    order = np.lexsort((times.to_numpy(), codes))  # series, then time
    position = np.empty(len(work), dtype=np.int64)
    position[order] = pd.Series(codes[order]).groupby(codes[order]).cumcount().to_numpy()
    warmup = position < spec.min_history
    unknown = y_all.isna().to_numpy() | engineered[REFERENCE_FEATURE].isna().to_numpy()
    keep = ~warmup & ~unknown
    if warmup.any():
        notes.append(
            f"dropped the first {spec.min_history} rows of each series ({int(warmup.sum())} "
            "rows): they have no full lag history"
        )
    if (unknown & ~warmup).any():
        notes.append(
            f"dropped {int((unknown & ~warmup).sum())} rows whose target or last known value "
            "is missing"
        )
    if not keep.any():
        raise DataError(
            f"no row has {spec.min_history} earlier rows in its series; use fewer or smaller "
            "time_series.lags / rolling windows or more data"
        )
    columns: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    if group_col:
        columns[group_col] = frame[group_col].to_numpy()
        fixed[group_col] = "categorical"
    for name in exogenous:
        columns[name] = frame[name].to_numpy()
    for name in spec.feature_columns:
        columns[name] = engineered[name].to_numpy()
        fixed[name] = "numeric"
    X_all = pd.DataFrame(columns)  # noqa: N806
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((codes[rows], times.to_numpy()[rows]))]  # time, then series
    X, types = coerce_features(  # noqa: N806
        X_all.iloc[rows].reset_index(drop=True), config.data.column_types, fixed=fixed
    )
    return SeriesData(
        X=X,
        y=y_all.to_numpy(dtype="float64")[rows],
        times=times.iloc[rows].reset_index(drop=True),
        series=frame[group_col].iloc[rows].reset_index(drop=True) if group_col else None,
        types=types,
        spec=spec,
        notes=notes,
    )


def _frequency(
    work: pd.DataFrame, time_col: str, group_col: str | None
) -> tuple[str | None, pd.Timedelta, int]:
    """Frequency of the longest series, its median step, and how many steps elsewhere differ."""
    if group_col:
        sizes = work.groupby(group_col, sort=False).size()
        longest = work.loc[work[group_col] == sizes.idxmax(), time_col]
    else:
        longest = work[time_col]
    try:
        freq, step = infer_step(longest)
    except ValueError as exc:
        raise DataError(f"data.time_column {time_col!r}: {exc}") from exc
    if step <= pd.Timedelta(0):
        raise DataError(f"data.time_column {time_col!r} has no positive time step")
    irregular = 0
    keys = work[group_col] if group_col else np.zeros(len(work), dtype=int)
    for _key, stamps in work[time_col].groupby(keys, sort=False):
        diffs = pd.to_timedelta(stamps.sort_values().diff().dropna())
        # calendar frequencies (months) vary in days: allow half a step of slack
        irregular += int((abs(diffs - step) > step / 2).sum())
    return freq, step, irregular


def purge_before_test(
    train_idx: np.ndarray, test_idx: np.ndarray, times: pd.Series, horizon: int
) -> tuple[np.ndarray, int]:
    """Drop the last ``horizon - 1`` time steps before the test part from training.

    A test row at ``t`` is forecast from ``t - horizon``; training targets after that origin
    would be values the forecaster could not have known.
    """
    if horizon <= 1 or len(train_idx) == 0 or len(test_idx) == 0:
        return train_idx, 0
    stamps = times.to_numpy()
    distinct = np.unique(stamps[train_idx])
    if len(distinct) <= horizon - 1:
        raise DataError(
            f"the training part has {len(distinct)} time steps, fewer than horizon - 1 = "
            f"{horizon - 1} to purge before the test part; use more data or a smaller horizon"
        )
    cutoff = distinct[-(horizon - 1)]
    kept = train_idx[stamps[train_idx] < cutoff]
    return kept, int(len(train_idx) - len(kept))


def time_folds(times: pd.Series, folds: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``TimeSeriesSplit`` over the distinct timestamps (``gap`` steps left out), as row indices.

    Splitting time steps rather than rows keeps every series of one timestamp on the same side.
    """
    from sklearn.model_selection import TimeSeriesSplit

    stamps = times.to_numpy()
    distinct, inverse = np.unique(stamps, return_inverse=True)
    folds = min(folds, max(len(distinct) - gap - 1, 1))
    if folds < 2:
        raise DataError(
            f"{len(distinct)} time steps are too few for time-series cross-validation with "
            f"gap {gap}; set cv.enabled: false or use more data"
        )
    splitter = TimeSeriesSplit(n_splits=folds, gap=gap)
    out = []
    for fit_steps, val_steps in splitter.split(distinct):
        fit_rows = np.flatnonzero(np.isin(inverse, fit_steps))
        out.append((fit_rows, np.flatnonzero(np.isin(inverse, val_steps))))
    return out


def naive_comparison(test: dict[str, float | None]) -> dict[str, Any]:
    """Whether the model beats the naive forecast on every error metric (lower is better)."""
    better: list[str] = []
    worse: list[str] = []
    for name in _ERROR_METRICS:
        model, naive = test.get(name), test.get(f"naive_{name}")
        if model is None or naive is None:
            continue
        (better if model < naive else worse).append(name)
    return {
        "method": NAIVE_METHOD,
        "beats_naive": bool(better) and not worse,
        "better_on": better,
        "worse_on": worse,
    }


def with_groups(spec: SeriesSpec, series: pd.Series | None) -> SeriesSpec:
    """``spec`` with the series ids the model was trained on (the ones it can forecast)."""
    if series is None:
        return spec
    values = sorted({_plain(v) for v in series.dropna()}, key=lambda v: (str(type(v)), v))
    return dataclasses.replace(spec, groups=tuple(values))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def series_rows(
    frame: pd.DataFrame, spec_data: dict[str, Any]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Model rows of new labelled data for a trained spec: (X, y, reference = naive forecast).

    Rows without full lag history or without a target are left out, as in training.
    """
    spec = SeriesSpec.from_dict(dict(spec_data))
    needed = [spec.time_column, spec.target, *spec.exogenous]
    if spec.group_column:
        needed.append(spec.group_column)
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DataError(f"the data lacks columns {missing} that the time-series bundle needs")
    times = parse_times(frame[spec.time_column], spec.time_column)
    y = pd.to_numeric(frame[spec.target], errors="coerce")
    work = pd.DataFrame({spec.time_column: times, spec.target: y})
    if spec.group_column:
        work[spec.group_column] = frame[spec.group_column].to_numpy()
    engineered = add_series_features(work, spec)
    keep = (y.notna() & engineered.notna().all(axis=1)).to_numpy()
    if not keep.any():
        raise DataError(
            f"no row has the {spec.min_history} earlier rows its features need; send more history"
        )
    columns: dict[str, Any] = {}
    if spec.group_column:
        columns[spec.group_column] = frame[spec.group_column].astype(object).to_numpy()
    for name in spec.exogenous:
        columns[name] = frame[name].to_numpy()
    for name in spec.feature_columns:
        columns[name] = engineered[name].to_numpy()
    X = pd.DataFrame(columns).loc[keep].reset_index(drop=True)  # noqa: N806
    return X, y.to_numpy(dtype="float64")[keep], X[REFERENCE_FEATURE].to_numpy(dtype="float64")
