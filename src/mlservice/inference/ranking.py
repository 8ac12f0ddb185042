"""``Ranker``: score the candidates of one or more queries with a ranking bundle and order them.

Every candidate is checked against the bundle's feature schema (``Predictor.to_frame``), then all
candidates of all queries are scored in ONE call into the pipeline. Within a query, candidates are
ordered by score, highest first; ties keep the input order, and a score the model could not
produce (NaN) is ``None`` and ranks last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlservice.bundle import Bundle
from mlservice.errors import SchemaError
from mlservice.inference.predictor import Predictor, Row

__all__ = ["RankedCandidate", "Ranker"]


@dataclass(frozen=True)
class RankedCandidate:
    """A candidate's position in the request (``index``), its score and its rank (1 = best)."""

    index: int
    score: float | None
    rank: int


class Ranker:
    """A ranking bundle ready to score candidates; build it once per loaded bundle."""

    def __init__(self, model: Bundle | Predictor) -> None:
        predictor = model if isinstance(model, Predictor) else Predictor(model)
        if predictor.task != "ranking":
            raise SchemaError(
                f"model {predictor.name!r} is a {predictor.task!r} model; ranking needs a "
                "ranking model. Use POST /api/v1/predict"
            )
        self.predictor = predictor

    def rank(self, candidates: Sequence[Row]) -> list[RankedCandidate]:
        """Order the candidates of one query."""
        return self.rank_queries([candidates])[0]

    def rank_queries(self, queries: Sequence[Sequence[Row]]) -> list[list[RankedCandidate]]:
        """Order the candidates of each query (one pipeline call for all of them)."""
        if not queries:
            raise SchemaError("no queries to rank; send at least one query with candidates")
        frames = []
        for q, rows in enumerate(queries):
            where = f"query {q}: " if len(queries) > 1 else ""
            if not rows:
                raise SchemaError(f"{where}no candidates to rank; send at least one candidate")
            try:
                frames.append(self.predictor.to_frame(rows))
            except SchemaError as exc:
                raise SchemaError(f"{where}{exc}") from exc
        X = pd.concat(frames, ignore_index=True)  # noqa: N806
        scores = np.asarray(self.predictor.bundle.pipeline.predict(X), dtype="float64")
        scores = scores.reshape(len(X), -1)[:, 0]
        out = []
        start = 0
        for frame in frames:
            part = scores[start : start + len(frame)]
            start += len(frame)
            finite = np.isfinite(part)
            order = np.argsort(-np.where(finite, part, -np.inf), kind="stable")
            out.append(
                [
                    RankedCandidate(
                        index=int(i),
                        score=float(part[i]) if math.isfinite(part[i]) else None,
                        rank=position + 1,
                    )
                    for position, i in enumerate(order)
                ]
            )
        return out
