"""Split rows into train and test BEFORE any fitting (pure; the seed is passed in)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from mlservice.errors import DataError

__all__ = ["split_indices"]


def split_indices(
    n_rows: int,
    *,
    strategy: str,
    test_size: float,
    seed: int,
    y: pd.Series | None = None,
    time: pd.Series | None = None,
    groups: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_idx, test_idx) positional indices for the chosen strategy."""
    index = np.arange(n_rows)
    n_test = int(np.ceil(n_rows * test_size))
    if n_test < 1 or n_rows - n_test < 2:
        raise DataError(f"{n_rows} rows cannot be split with test_size={test_size}")
    if strategy == "random":
        train, test = train_test_split(index, test_size=test_size, random_state=seed, shuffle=True)
    elif strategy == "stratified":
        if y is None:
            raise DataError("stratified split needs the target")
        counts = y.value_counts()
        rare = counts[counts < 2]
        if not rare.empty:
            raise DataError(
                f"stratified split needs >= 2 rows per class; classes {list(rare.index)} have 1. "
                "Drop them or use split.strategy: random"
            )
        train, test = train_test_split(
            index, test_size=test_size, random_state=seed, shuffle=True, stratify=y.to_numpy()
        )
    elif strategy == "time":
        if time is None:
            raise DataError("time split needs data.time_column")
        train, test = _time_split(_sortable_times(time), n_rows, n_test)
    elif strategy == "group":
        if groups is None:
            raise DataError("group split needs data.group_column")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(index, groups=groups.to_numpy()))
    else:
        raise DataError(f"unknown split strategy {strategy!r}")
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def _sortable_times(time: pd.Series) -> np.ndarray:
    """Numbers and datetimes as they are; strings parsed as dates ('01/31/2024' sorts by date)."""
    if isinstance(time.dtype, pd.DatetimeTZDtype):
        return time.dt.tz_convert(None).to_numpy()
    if pd.api.types.is_numeric_dtype(time) or pd.api.types.is_datetime64_any_dtype(time):
        return time.to_numpy()
    parsed = pd.to_datetime(time, errors="coerce", format="mixed", utc=True)
    bad = time.notna() & parsed.isna()
    if bad.any():
        raise DataError(
            f"time split: {time[bad].iloc[0]!r} in column {time.name!r} is not a date/time"
        )
    return parsed.to_numpy()


def _time_split(stamps: np.ndarray, n_rows: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The latest ``n_test`` rows are the test part; rows sharing the boundary time go with it.

    Several series (or events) at one timestamp are never split across train and test.
    """
    order = np.argsort(stamps, kind="stable")
    cutoff = stamps[order[n_rows - n_test]]
    first_test = int(np.searchsorted(stamps[order], cutoff, side="left"))
    if first_test < 2:  # ties reach back to the start: fall back to a plain positional cut
        first_test = n_rows - n_test
    return order[:first_test], order[first_test:]
