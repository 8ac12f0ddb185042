"""Training side of ``task: ranking``: query order, fit parameters of the rankers, ndcg/map@k.

Rows are sorted by query id once, before the split, so every subset taken in row order keeps each
query's rows contiguous, as ``LGBMRanker(group=sizes)`` and ``XGBRanker(qid=ids)`` require.

Metrics, averaged over the queries that have at least one relevant row (``relevance > 0``);
queries without one carry no ranking signal and are left out:

- ``ndcg_at_k``: DCG@k / ideal DCG@k with gain ``2**rel - 1`` and discount ``log2(rank + 1)``
  (the gain LightGBM's and XGBoost's lambdarank optimise);
- ``map_at_k``: average precision at k, ``sum(P@i * relevant_i for i <= k) / min(R, k)`` where
  R is the number of relevant rows of the query.

Ties in scores keep the input order (stable sort), so the metrics are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mlservice.config import Config
from mlservice.errors import DataError

__all__ = [
    "MAX_RELEVANCE",
    "check_relevance",
    "map_at_k",
    "ndcg_at_k",
    "query_ids",
    "query_sizes",
    "ranking_approach",
    "ranking_fit_params",
    "ranking_metrics",
    "ranking_scorer",
    "sort_by_query",
]

#: LightGBM's default ``label_gain`` covers grades 0..30; XGBoost's ndcg gain overflows past 31.
MAX_RELEVANCE = 30


def sort_by_query(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Rows sorted by query id (stable, so candidates keep their order inside a query)."""
    group = config.data.group_column
    if not group:
        raise DataError("task ranking needs data.group_column (the query id)")
    if config.split.strategy != "group":
        raise DataError(
            "task ranking is split by query so no query is in both train and test; set "
            f"split.strategy: group (got {config.split.strategy!r})"
        )
    if frame[group].isna().any():
        raise DataError(f"data.group_column {group!r} has rows without a query id")
    codes, _uniques = pd.factorize(frame[group], sort=True)
    order = np.argsort(codes, kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def check_relevance(y: np.ndarray, name: str) -> None:
    """Relevance must be whole grades 0..30 (binary 0/1 is fine)."""
    bad = ~np.isfinite(y) | (y < 0) | (y > MAX_RELEVANCE) | (np.round(y) != y)
    if bad.any():
        raise DataError(
            f"ranking target {name!r} must hold relevance grades 0..{MAX_RELEVANCE} (whole "
            f"numbers, higher is more relevant); got {y[bad][0]!r}. Map ratings to grades first"
        )
    if not (y > 0).any():
        raise DataError(f"ranking target {name!r} has no relevant row (every grade is 0)")


def query_ids(groups: Any) -> np.ndarray:
    """Integer query ids in row order; rows of one query must be contiguous."""
    values = pd.Series(np.asarray(groups, dtype=object))
    starts = values.ne(values.shift())
    ids = starts.cumsum().to_numpy() - 1
    if values[starts.to_numpy()].duplicated().any():
        first = values[starts.to_numpy()][values[starts.to_numpy()].duplicated()].iloc[0]
        raise DataError(f"rows of query {first!r} are not contiguous; sort the rows by query id")
    return np.asarray(ids, dtype=np.int64)


def query_sizes(groups: Any) -> np.ndarray:
    """Number of rows of each query, in row order (LightGBM's ``group``)."""
    return np.bincount(query_ids(groups))


def ranking_approach(estimator: Any) -> str:
    """How an estimator learns to rank: listwise, pairwise, or pointwise regression."""
    name = type(estimator).__name__
    if name == "LGBMRanker":
        return "listwise (LightGBM lambdarank)"
    if name == "XGBRanker":
        return "listwise (XGBoost rank:ndcg)"
    return "pointwise (regression on the relevance grade)"


def ranking_fit_params(pipeline: Any, groups: Any) -> dict[str, Any]:
    """Fit parameters that pass the query structure to a ranker inside ``pipeline``."""
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    prefix = f"{pipeline.steps[-1][0]}__" if hasattr(pipeline, "steps") else ""
    name = type(estimator).__name__
    if name == "LGBMRanker":
        return {f"{prefix}group": query_sizes(groups)}
    if name == "XGBRanker":
        return {f"{prefix}qid": query_ids(groups)}
    return {}


def _per_query(
    y_true: Any, scores: Any, groups: Any, k: int, metric: Callable[[np.ndarray, int], float]
) -> float | None:
    rel = np.asarray(y_true, dtype="float64")
    score = np.asarray(scores, dtype="float64")
    ids = (
        np.zeros(len(rel), dtype=np.int64)
        if groups is None
        else pd.factorize(pd.Series(np.asarray(groups, dtype=object)))[0]
    )
    values = []
    for q in np.unique(ids):
        rows = np.flatnonzero(ids == q)
        if not (rel[rows] > 0).any():
            continue
        order = np.argsort(-score[rows], kind="stable")
        values.append(metric(rel[rows][order], k))
    return float(np.mean(values)) if values else None


def _ndcg(ranked: np.ndarray, k: int) -> float:
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    top = ranked[:k]
    dcg = float(np.sum((2.0**top - 1.0) * discount[: len(top)]))
    ideal = np.sort(ranked)[::-1][:k]
    idcg = float(np.sum((2.0**ideal - 1.0) * discount[: len(ideal)]))
    return dcg / idcg


def _average_precision(ranked: np.ndarray, k: int) -> float:
    relevant = ranked > 0
    hits = relevant[:k]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision * hits) / min(int(relevant.sum()), k))


def ndcg_at_k(y_true: Any, scores: Any, groups: Any = None, *, k: int = 10) -> float | None:
    """Mean NDCG@k over queries (``groups``: query id per row; None: one query)."""
    return _per_query(y_true, scores, groups, k, _ndcg)


def map_at_k(y_true: Any, scores: Any, groups: Any = None, *, k: int = 10) -> float | None:
    """Mean average precision at k over queries; relevant means grade > 0."""
    return _per_query(y_true, scores, groups, k, _average_precision)


def ranking_metrics(
    y_true: Any, scores: Any, groups: Any = None, *, k: int = 10
) -> dict[str, float | None]:
    """``ndcg_at_k`` and ``map_at_k``."""
    return {
        "ndcg_at_k": ndcg_at_k(y_true, scores, groups, k=k),
        "map_at_k": map_at_k(y_true, scores, groups, k=k),
    }


def ranking_scorer(groups: Any, k: int) -> Callable[[Any, Any, Any], float]:
    """A scorer for ``permutation_importance``: NDCG@k of the rows in their given order."""

    def score(estimator: Any, X: Any, y: Any) -> float:  # noqa: N803
        value = ndcg_at_k(y, estimator.predict(X), groups, k=k)
        return 0.0 if value is None else value

    return score
