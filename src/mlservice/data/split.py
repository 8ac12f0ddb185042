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
        order = np.argsort(time.to_numpy(), kind="stable")
        train, test = order[: n_rows - n_test], order[n_rows - n_test :]
    elif strategy == "group":
        if groups is None:
            raise DataError("group split needs data.group_column")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(index, groups=groups.to_numpy()))
    else:
        raise DataError(f"unknown split strategy {strategy!r}")
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))
