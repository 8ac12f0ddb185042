"""``POST /api/v1/explain`` and ``/explain/batch``: why this prediction, per input feature.

The body and its checks are the predict routes' own (the same generated request models, the
same 422 naming the field, the same row limit). Each answer holds the prediction, the
``base_value`` and one contribution per input feature with ``base_value + sum(contributions)
== value``, the explained output (``output``: ``raw``, ``log_odds`` or ``probability``; for a
classifier the predicted class's, named in ``class``; ``"all_classes": true`` in the query adds
every class). See ``mlservice.inference.explain`` for how each model type is explained. The
explainer is built from the bundle's pipeline on the first request (in a worker thread) and
kept with the served model; a model that cannot be explained answers 501 with the reason.

This module does not use ``from __future__ import annotations``: FastAPI must see the generated
models in the endpoint signatures.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from mlservice.api.errors import ERROR_RESPONSES, ApiError, request_id_of
from mlservice.api.routes._offload import call_model, per_predictor
from mlservice.api.routes.predict import ServingDep, model_answer
from mlservice.api.schemas import RequestModels, row_values
from mlservice.inference import Predictor

__all__ = ["NotExplainableError", "build_explain_router"]


class NotExplainableError(ApiError):
    """The served model has no exact additive explanation (501 with the reason)."""

    status_code = 501
    kind = "not_explainable"


class _Explaining:
    """A predictor's explainer, built once (its first use deserializes the pipeline)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._explainer: Any = None
        self._problem: str | None = None

    def explainer(self) -> Any:
        from mlservice.inference.explain import ExplanationUnavailable, build_explainer

        if self._problem is not None:
            raise NotExplainableError(self._problem)
        if self._explainer is None:
            meta = self.predictor.metadata
            stored = meta.get("explain") if isinstance(meta.get("explain"), dict) else {}
            try:
                self._explainer = build_explainer(
                    self.predictor.bundle.pipeline,
                    state=(stored or {}).get("state"),
                    class_labels=self.predictor.classes,
                )
            except ExplanationUnavailable as exc:
                self._problem = f"explanations are not available for this model: {exc.reason}"
                raise NotExplainableError(self._problem) from exc
        return self._explainer

    def explain(self, rows: list[Any], all_classes: bool) -> list[dict[str, Any]]:
        frame = self.predictor.to_frame(rows)  # the predict routes' checks (422 naming fields)
        return list(self.explainer().explain(frame, all_classes=all_classes))


_explaining = per_predictor(_Explaining, NotExplainableError)


def _fail_wrong_task(predictor: Predictor) -> None:
    if predictor.task not in ("classification", "regression"):
        raise NotExplainableError(f"{predictor.task} models are not explained")


async def _explain(
    request: Request, serving: Any, rows: list[Any], all_classes: bool
) -> list[dict[str, Any]]:
    predictor, settings, _metrics = serving
    _fail_wrong_task(predictor)
    return await call_model(  # SchemaError (422) and NotExplainableError (501) pass through
        lambda: _explaining(predictor).explain(rows, all_classes),
        inline=False,
        timeout_s=settings.request_timeout_s,
        request_id=request_id_of(request),
    )


def build_explain_router(models: RequestModels) -> APIRouter:
    """The explain routes, with the predict routes' request bodies."""
    router = APIRouter(prefix="/api/v1", tags=["explain"])
    predict_body: Any = models.predict
    batch_body: Any = models.batch
    responses = {**ERROR_RESPONSES, 501: {"description": "The model cannot be explained"}}
    all_classes_query = Query(False, description="add the explanation of every class")

    @router.post(
        "/explain",
        operation_id="explain",
        summary="Explain one prediction",
        responses=responses,
    )
    async def explain(
        request: Request,
        body: Annotated[predict_body, Body(openapi_examples=models.predict_examples())],
        serving: ServingDep,
        all_classes: bool = all_classes_query,
    ) -> Response:
        """Per input feature, its additive contribution to the prediction."""
        predictor = serving[0]
        records = await _explain(request, serving, [row_values(body.features)], all_classes)
        return model_answer(predictor, records[0])

    @router.post(
        "/explain/batch",
        operation_id="explain_batch",
        summary="Explain a batch of predictions",
        responses=responses,
    )
    async def explain_batch(
        request: Request,
        body: Annotated[batch_body, Body(openapi_examples=models.batch_examples())],
        serving: ServingDep,
        all_classes: bool = all_classes_query,
    ) -> Response:
        """Up to `max_batch_size` instances, each explained."""
        predictor = serving[0]
        rows = [row_values(row) for row in body.instances]
        records = await _explain(request, serving, rows, all_classes)
        return model_answer(
            predictor, {"explanations": records, "total_instances": len(records)}
        )

    return router
