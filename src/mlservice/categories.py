"""The one canonical form of a categorical value, from the reader to the ONNX graph.

A zip code, a store number or a product id is a category that looks like a number. Depending
on where it comes from it arrives as ``123`` (a CSV column of integers), ``123.0`` (the same
column with a gap, which pandas reads as float), ``"123"`` (a JSON string) or ``np.int64(123)``
(a Parquet file). If training learns ``123`` and serving sends ``"123"``, the encoder sees an
unknown category and every request gets the same answer. So every categorical (and boolean)
value is turned into one string before any encoder sees it, in training, the API, batch
scoring and the ONNX graph alike:

===========================  ==========
value                        canonical
===========================  ==========
``"Biscoe"``                 ``"Biscoe"`` (strings are kept as they are)
``123``, ``np.int64(123)``   ``"123"``
``123.0``                    ``"123"`` (an integral float: an integer column with gaps)
``1.5``                      ``"1.5"`` (``repr`` of the float: the shortest exact form)
``True`` / ``False``         ``"True"`` / ``"False"``
``None``, ``NaN``            missing
===========================  ==========

Bundles record ``preprocessing.categories: "canonical"`` when they were trained this way;
older bundles get their values as they were sent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CANONICAL", "canonical_category", "canonical_request_value", "canonical_series"]

#: The value of ``metadata["preprocessing"]["categories"]`` of bundles trained on canonical
#: category strings.
CANONICAL = "canonical"


def canonical_category(value: Any) -> Any:
    """The canonical string of one categorical value; ``None`` for missing.

    A value of any other type (a list, a dict) is returned as it is, for the caller's checks
    to refuse with the field named.
    """
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return None
    if kind is bool or isinstance(value, np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer() and abs(number) < 2**63:
            return str(int(number))
        return repr(number)
    if isinstance(value, str):  # a str subclass (numpy.str_)
        return str(value)
    return value


def canonical_request_value(value: Any) -> Any:
    """A JSON number sent for a category becomes its canonical string; anything else is
    returned as it is (strings are already canonical; ``true``/``false``, lists, objects are
    for the schema to accept or refuse). The API, its fast path and the request schema all
    read a category through this one function."""
    kind = type(value)
    if kind is int or kind is float:
        return canonical_category(value)
    return value


def canonical_series(series: pd.Series) -> pd.Series:
    """``series`` with every value canonical (object dtype, ``NaN`` where missing), vectorized
    for the common dtypes."""
    if pd.api.types.is_bool_dtype(series) and not isinstance(series.dtype, pd.CategoricalDtype):
        mask = series.isna()
        values = np.where(series.fillna(False).astype(bool), "True", "False").astype(object)
        out = pd.Series(values, index=series.index, dtype=object)
        return out.where(~mask, np.nan)
    if pd.api.types.is_integer_dtype(series):
        mask = series.isna()  # nullable Int64 may hold <NA>
        out = series.astype("Int64").astype(str).astype(object)
        return out.where(~mask, np.nan)
    converted = [canonical_category(v) for v in series.tolist()]
    out = pd.Series(converted, index=series.index, dtype=object)
    return out.where(out.notna(), np.nan)
