"""``POST /api/v1/rank``: order the candidates of one query, or of a batch of queries.

``{"candidates": [{...}, ...]}`` ranks one query; ``{"queries": [[{...}, ...], ...]}`` ranks
several in one model call. Each candidate is an object of features by name (or a list in model
feature order), checked like a predict row. The answer lists each query's candidates best first,
with the candidate's ``index`` in the request, its ``score`` and its ``rank`` (1 = best).
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlservice.api.deps import MetricsDep, PredictorDep, SettingsDep
from mlservice.api.errors import ERROR_RESPONSES
from mlservice.api.routes._offload import per_predictor, run_model_call
from mlservice.api.routes.forecast import WrongTaskError
from mlservice.api.schemas import too_many_items
from mlservice.inference.ranking import Ranker

__all__ = [
    "BatchRankResponse",
    "QueryRanking",
    "RankRequest",
    "RankResponse",
    "RankedItem",
    "build_rank_router",
]

Candidate = dict[str, Any] | list[Any]


class RankRequest(BaseModel):
    """Exactly one of ``candidates`` (one query) or ``queries`` (a batch)."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[Candidate] | None = Field(
        None, min_length=1, description="Candidates of one query"
    )
    queries: list[Annotated[list[Candidate], Field(min_length=1)]] | None = Field(
        None, min_length=1, description="Several queries, each a list of candidates"
    )

    #: Most candidates in all (``max_batch_size``), counted before any is validated.
    max_rows: ClassVar[int] = 10_000

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            total = 0
            if isinstance(candidates := data.get("candidates"), list):
                total += len(candidates)
            if isinstance(queries := data.get("queries"), list):
                if len(queries) > cls.max_rows:
                    raise too_many_items(len(queries), cls.max_rows, "queries")
                total += sum(len(q) for q in queries if isinstance(q, list))
            if total > cls.max_rows:
                raise too_many_items(total, cls.max_rows, "candidates")
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> "RankRequest":
        if (self.candidates is None) == (self.queries is None):
            raise ValueError("send exactly one of 'candidates' (one query) or 'queries' (a batch)")
        return self


class RankedItem(BaseModel):
    index: int = Field(ge=0, description="position of the candidate in the request")
    score: float | None
    rank: int = Field(ge=1, description="1 = best")


class RankResponse(BaseModel):
    candidates: list[RankedItem]
    model_version: str


class QueryRanking(BaseModel):
    candidates: list[RankedItem]


class BatchRankResponse(BaseModel):
    queries: list[QueryRanking]
    total_queries: int = Field(ge=1)
    model_version: str


def _examples(example_row: Mapping[str, Any] | None) -> dict[str, Any]:
    row = dict(example_row or {"feature": 1.0})
    return {
        "one_query": {"summary": "One query", "value": {"candidates": [row, row]}},
        "batch": {"summary": "Two queries", "value": {"queries": [[row, row], [row]]}},
    }


def build_rank_router(
    example_row: Mapping[str, Any] | None = None, *, max_rows: int = 10_000
) -> APIRouter:
    """The rank route; ``example_row`` (a candidate by feature name) only shapes /docs; a
    request holds at most ``max_rows`` candidates."""
    router = APIRouter(prefix="/api/v1", tags=["rank"])

    class BoundedRankRequest(RankRequest):
        __doc__ = RankRequest.__doc__

    BoundedRankRequest.max_rows = max_rows

    ranker_of = per_predictor(Ranker, WrongTaskError)

    @router.post(
        "/rank",
        operation_id="rank",
        summary="Order candidates by score",
        responses=ERROR_RESPONSES,
    )
    async def rank(
        request: Request,
        body: Annotated[BoundedRankRequest, Body(openapi_examples=_examples(example_row))],
        predictor: PredictorDep,
        settings: SettingsDep,
        metrics: MetricsDep,
    ) -> RankResponse | BatchRankResponse:
        """Candidates of each query, best first, with their request index and score."""
        ranker = ranker_of(predictor)
        queries: Sequence[Sequence[Any]] = (
            [body.candidates] if body.candidates is not None else body.queries or []
        )
        ranked = await run_model_call(
            lambda: ranker.rank_queries(queries),
            timeout_s=settings.request_timeout_s,
            request=request,
        )
        metrics.count_predictions((c.score for q in ranked for c in q), classification=False)
        items = [
            [RankedItem(index=c.index, score=c.score, rank=c.rank) for c in query]
            for query in ranked
        ]
        if body.candidates is not None:
            return RankResponse(candidates=items[0], model_version=predictor.version)
        return BatchRankResponse(
            queries=[QueryRanking(candidates=q) for q in items],
            total_queries=len(items),
            model_version=predictor.version,
        )

    return router
