"""``Predictor``: load a bundle once, check input against its feature schema, predict vectorized.

Input rows come as mappings (``{"feature": value}``) or as positional sequences in the bundle's
``feature_names`` order. Every request makes ONE call into the model, whatever its size. All
floats in the output are JSON-safe: a NaN or infinite model output becomes ``None``.

Two runtimes (``Predictor.runtime``): ``onnx`` runs the bundle's verified ``model.onnx`` with
onnxruntime, ``sklearn`` the fitted pipeline. On the ONNX path rows go straight to numpy arrays in
the graph's input layout (``ColumnCheck``: precomputed order and categories, no DataFrame); only a
request that fails those quick checks goes through the DataFrame checks, which name the problem.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlservice.bundle import Bundle
from mlservice.errors import BundleError, ConfigError, SchemaError
from mlservice.inference.coercion import (
    COERCERS,
    MAX_ABS_NUMERIC,
    MAX_TEXT_LENGTH,
    coerce_object,
    is_null,
)
from mlservice.inference.lazy_bundle import open_verified_bundle
from mlservice.inference.onnx_runtime import (
    RUNTIMES,
    SMALL_ROWS,
    ColumnCheck,
    FeedBuilder,
    OnnxModel,
    onnx_status,
    requested_runtime,
)

__all__ = ["MAX_ABS_NUMERIC", "MAX_TEXT_LENGTH", "FeatureInfo", "Predictor", "Row"]

log = logging.getLogger("mlservice.inference")


_HINT = "See GET /api/v1/model for the feature schema."

Row = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True)
class FeatureInfo:
    """One input feature as the bundle describes it."""

    name: str
    kind: str
    nullable: bool
    categories: tuple[Any, ...] | None
    closed: bool  # True when ``categories`` lists every value seen in training
    minimum: float | None
    maximum: float | None
    dtype: str
    example: Any
    #: Values reach the model as canonical strings (``mlservice.categories``): a number sent
    #: for a category means the category of the same digits.
    canonical: bool = False

    @classmethod
    def from_metadata(cls, spec: Mapping[str, Any]) -> FeatureInfo:
        """Build from one entry of ``metadata["features"]``.

        A categorical feature is closed (an unknown value is refused) when its categories are
        all listed and its encoding does not define unseen values (``open``: target encoding).
        """
        cats = spec.get("categories")
        return cls(
            name=str(spec["name"]),
            kind=str(spec.get("type", "numeric")),
            nullable=bool(spec.get("nullable", False)),
            categories=tuple(cats) if cats else None,
            closed=bool(cats) and "n_categories" not in spec and not spec.get("open", False),
            minimum=_opt_float(spec.get("min")),
            maximum=_opt_float(spec.get("max")),
            dtype=str(spec.get("dtype", "")),
            example=spec.get("example"),
            canonical=bool(spec.get("canonical", False)),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _json_float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class Predictor:
    """A loaded bundle ready to predict; build it once and share it between requests."""

    def __init__(self, bundle: Bundle, *, onnx: OnnxModel | None = None) -> None:
        """Serve ``bundle``; with ``onnx`` (its verified ``model.onnx``) through onnxruntime."""
        self.bundle = bundle
        meta = bundle.metadata
        self.task: str = str(meta.get("task", "regression"))
        #: Which bundle answers (its directory name when it was saved): two bundles trained
        #: as the same version differ here. The API sends it as ``X-Model-Bundle``.
        self.bundle_id: str = str(meta.get("bundle_id") or bundle.path.name)
        specs = meta.get("features") or [{"name": n} for n in meta.get("feature_names", [])]
        self.features: tuple[FeatureInfo, ...] = tuple(FeatureInfo.from_metadata(s) for s in specs)
        names = meta.get("feature_names") or [f.name for f in self.features]
        self.feature_names: tuple[str, ...] = tuple(str(n) for n in names)
        by_name = {f.name: f for f in self.features}
        missing = [n for n in self.feature_names if n not in by_name]
        if missing:
            raise SchemaError(f"bundle metadata lists feature_names {missing} without a schema")
        self._ordered = tuple(by_name[n] for n in self.feature_names)
        self._required = frozenset(f.name for f in self._ordered if not f.nullable)
        self._allowed = frozenset(self.feature_names)
        target = meta.get("target") or {}
        classes = target.get("classes") if isinstance(target, Mapping) else None
        self.classes: tuple[Any, ...] | None = tuple(classes) if classes else None
        interval = meta.get("interval")
        self._halfwidth: float | None = None
        if isinstance(interval, Mapping) and interval.get("halfwidth") is not None:
            self._halfwidth = _json_float(interval["halfwidth"])
        self._onnx = onnx
        self._feeds = self._feed_builder(onnx) if onnx is not None else None
        #: Class codes of the ONNX probability columns (recorded at export), their labels/keys.
        self._onnx_codes: Any = (meta.get("onnx") or {}).get("class_codes")
        self._onnx_labels: tuple[list[Any], list[str]] | None = None
        if self._onnx_codes is not None and self.classes is not None:
            labels = [self._label(c) for c in self._onnx_codes]
            self._onnx_labels = (labels, [str(label) for label in labels])
        if onnx is not None:  # never touch the pipeline: it may not be deserialized
            self._uses_proba = self.is_classifier and onnx.proba_output is not None
        else:
            self._uses_proba = self.is_classifier and hasattr(bundle.pipeline, "predict_proba")

    def _feed_builder(self, onnx: OnnxModel) -> FeedBuilder:
        layout = [(i.name, i.type) for i in onnx.inputs]
        kinds = {"numeric": "float", "categorical": "string"}
        expected = [
            (f.name, "string" if f.kind == "boolean" and f.canonical else kinds.get(f.kind, f.kind))
            for f in self._ordered
        ]
        if layout != expected:
            raise BundleError(
                f"bundle {self.bundle.path.name!r}: the ONNX inputs {layout} do not match the "
                f"feature schema {expected}"
            )
        checks = [
            ColumnCheck(
                kind=kind,
                nullable=f.nullable,
                categories=frozenset(f.categories) if f.closed and f.categories else None,
                values="boolean" if f.kind == "boolean" else (
                    "category" if f.canonical else "string"
                ),
            )
            for f, (_, kind) in zip(self._ordered, layout, strict=True)
        ]
        return FeedBuilder(
            onnx.inputs, checks, max_abs=MAX_ABS_NUMERIC, max_text=MAX_TEXT_LENGTH
        )

    @classmethod
    def from_path(cls, path: str | Path, *, runtime: str | None = None) -> Predictor:
        """Load and verify the bundle at ``path`` (hashes, skops allowlist; never pickle).

        Served by ONNX, the scikit-learn pipeline is deserialized only if something asks for
        ``bundle.pipeline`` (``LazyBundle``); every file's hash is checked either way.
        ``runtime`` (``auto | onnx | sklearn``) defaults to ``MLSERVICE_RUNTIME``, else the
        bundle's ``serving.runtime``. ``auto`` serves a verified ``model.onnx`` with onnxruntime
        and falls back to scikit-learn otherwise; ``onnx`` refuses a bundle without one.
        """
        bundle = open_verified_bundle(path)  # every hash checked; skops deserialized on use
        choice = runtime or requested_runtime(bundle.metadata)
        if choice not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got {choice!r}")
        if choice == "sklearn":
            return cls._with_pipeline(bundle)
        problem = onnx_status(bundle.metadata, bundle.path)
        if problem is None:
            try:
                return cls(bundle, onnx=OnnxModel.from_bundle(bundle.path, bundle.metadata))
            except BundleError as exc:
                if choice == "onnx":
                    raise
                problem = str(exc)
        if choice == "onnx":
            raise BundleError(
                f"bundle {bundle.path.name!r} is set to serve with runtime 'onnx' but {problem}; "
                "serve it with runtime 'auto' or 'sklearn' (MLSERVICE_RUNTIME)"
            )
        log.info("serving with scikit-learn: %s", problem)
        return cls._with_pipeline(bundle)

    @classmethod
    def _with_pipeline(cls, bundle: Bundle) -> Predictor:
        bundle.pipeline  # noqa: B018  (deserialize now: a bad model.skops fails the start)
        return cls(bundle)

    @property
    def features_in_order(self) -> tuple[FeatureInfo, ...]:
        """The features in model order (``feature_names``), each with its schema."""
        return self._ordered

    @property
    def runtime(self) -> str:
        """``onnx`` or ``sklearn``: what computes the predictions."""
        return "onnx" if self._onnx is not None else "sklearn"

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def metadata(self) -> dict[str, Any]:
        return self.bundle.metadata

    @property
    def onnx_self_contained(self) -> bool:
        """Served by ONNX without ever needing the scikit-learn pipeline (a bundle exported
        before ``class_codes`` were recorded reads its class order from the pipeline)."""
        return self._onnx is not None and not (self._uses_proba and self._onnx_labels is None)

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification" and self.classes is not None

    # ----------------------------------------------------------------------------- input
    def to_frame(self, rows: Sequence[Row]) -> pd.DataFrame:
        """Check ``rows`` against the feature schema; return the frame the pipeline expects."""
        if isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
            raise SchemaError(f"expected a list of rows, got {type(rows).__name__}. {_HINT}")
        if not rows:
            raise SchemaError(f"no rows to predict; send at least one row. {_HINT}")
        multi = len(rows) > 1
        records = [self._named(row, i if multi else None) for i, row in enumerate(rows)]
        frame = pd.DataFrame.from_records(records, columns=list(self.feature_names))
        return self._coerce(frame, multi)

    def _named(self, row: Row, index: int | None) -> Mapping[str, Any]:
        where = f"row {index}: " if index is not None else ""
        if isinstance(row, Mapping):
            keys = row.keys()
            missing = [n for n in self.feature_names if n in self._required and n not in keys]
            extra = [str(k) for k in keys if k not in self._allowed]
            if missing or extra:
                parts = [f"request is missing features {missing}"] if missing else []
                if extra:
                    lead = "got" if missing else "request has"
                    parts.append(f"{lead} unknown features {extra}{self._did_you_mean(extra)}")
                raise SchemaError(f"{where}{'; '.join(parts)}. {_HINT}")
            return row
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise SchemaError(
                f"{where}a row must be an object of features or a list of values in feature "
                f"order, got {type(row).__name__}. {_HINT}"
            )
        if len(row) != len(self.feature_names):
            raise SchemaError(
                f"{where}expected {len(self.feature_names)} values in the order "
                f"{list(self.feature_names)}, got {len(row)}"
            )
        return dict(zip(self.feature_names, row, strict=True))

    def _did_you_mean(self, extra: list[str]) -> str:
        for name in extra:
            close = difflib.get_close_matches(name, self.feature_names, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]!r} for {name!r}?)"
        return ""

    def _coerce(self, frame: pd.DataFrame, multi: bool) -> pd.DataFrame:
        out: dict[str, Any] = {}
        for info in self._ordered:
            column = frame[info.name]
            nulls = column.map(is_null).to_numpy(dtype=bool)
            if nulls.any() and not info.nullable:
                raise self._bad(
                    info,
                    int(np.argmax(nulls)),
                    multi,
                    "must not be null",
                    None,
                    "it had no missing values in training; send a value",
                )
            coerce = COERCERS.get(info.kind, coerce_object)
            out[info.name] = coerce(self, info, column, nulls, multi)
        return pd.DataFrame(out, index=frame.index)

    def _bad(
        self, info: FeatureInfo, row: int, multi: bool, what: str, value: Any, hint: str
    ) -> SchemaError:
        where = f"row {row}, " if multi else ""
        if isinstance(value, np.generic):
            value = value.item()
        got = "" if value is None else f", got {value!r}"
        return SchemaError(f"{where}feature {info.name!r} {what}{got}; {hint}")

    def _in_order(self, rows: Sequence[Row]) -> list[Sequence[Any]]:
        """Each row as its values in feature order (the same checks and errors as ``to_frame``)."""
        if isinstance(rows, Mapping | str | bytes) or not isinstance(rows, Sequence):
            raise SchemaError(f"expected a list of rows, got {type(rows).__name__}. {_HINT}")
        if not rows:
            raise SchemaError(f"no rows to predict; send at least one row. {_HINT}")
        multi = len(rows) > 1
        size = len(self.feature_names)
        out: list[Sequence[Any]] = []
        for i, row in enumerate(rows):
            if type(row) is list and len(row) == size:
                out.append(row)
                continue
            if not (type(row) is dict and self._required <= row.keys() <= self._allowed):
                row = self._named(row, i if multi else None)  # raises on a bad row
            out.append([row.get(name) for name in self.feature_names])
        return out

    # ---------------------------------------------------------------------------- output
    def predict_records(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Predict a list of rows (mappings or positional lists); one dict per row."""
        if self._onnx is None:
            return self._predict(self.to_frame(rows))
        return self._predict_ordered(self._in_order(rows))

    def predict_values(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """Predict rows given as values in feature order (e.g. rows the API has validated)."""
        return self.predict_records(rows)

    # The ONNX fast path in three steps, for a server that runs only the onnxruntime call off
    # its event loop: the Python steps around it stay on one thread (no GIL hand-offs).
    def onnx_feeds(self, rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray] | None:
        """The graph's inputs for ``rows`` (values in feature order), with no fallback.

        ``None`` when the model is not served by ONNX or when some value is not one the fast
        checks accept (a wrong type, a null where none is allowed, an unknown category, an
        out-of-range number): the caller then takes the full path, which names the problem.
        """
        return None if self._feeds is None else self._feeds.build(rows)

    def run_onnx(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The onnxruntime call alone (it releases the GIL while it computes)."""
        if self._onnx is None:
            raise BundleError("this model is not served by ONNX")
        return self._onnx.run(feeds)

    def onnx_answers(
        self, outputs: tuple[np.ndarray, np.ndarray | None], count: int
    ) -> list[dict[str, Any]]:
        """One answer per row from ``run_onnx``'s outputs."""
        labels, proba = outputs
        if self._uses_proba and proba is not None:
            if count <= SMALL_ROWS and self._onnx_labels is not None:
                small = _small_proba_rows(proba.tolist(), *self._onnx_labels)
                if small is not None:
                    return small
            scores = np.asarray(proba, dtype=np.float64).reshape(count, -1)
            sums = _row_sums(scores)
            # float32 probabilities sum to 1 within ~1e-7; make that exact in float64, row by
            # row (a row summing to 0 or NaN is left as it is and does not affect the others)
            scores = np.divide(scores, sums, out=scores.copy(), where=sums > 0.0)
            if self._onnx_labels is None:  # a bundle exported before class_codes existed
                codes = getattr(self.bundle.pipeline, "classes_", None)
                return self._from_proba(scores, codes)
            labels_, keys = self._onnx_labels
            if np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 1.0:
                return _proba_rows(scores, labels_, keys)
            return self._from_proba(scores, self._onnx_codes)
        raw = np.asarray(labels).reshape(count, -1)[:, 0]
        if self.is_classifier:
            return [self._label_only(v) for v in raw.tolist()]
        return [self._regression(v) for v in raw.astype(float).tolist()]

    def _predict_ordered(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        assert self._onnx is not None
        feeds = self.onnx_feeds(rows)
        if feeds is None:  # the full checks name the problem (or pass what was merely unusual)
            frame = self.to_frame(rows)
            feeds = self._onnx.feeds_from_columns({n: frame[n].to_numpy() for n in frame.columns})
        return self._from_onnx(feeds, len(rows))

    def _from_onnx(self, feeds: dict[str, np.ndarray], count: int) -> list[dict[str, Any]]:
        return self.onnx_answers(self.run_onnx(feeds), count)

    def predict_frame(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Predict the rows of a DataFrame that has (at least) the feature columns."""
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            raise SchemaError(f"frame is missing feature columns {missing}. {_HINT}")
        if frame.empty:
            raise SchemaError(f"no rows to predict; send at least one row. {_HINT}")
        sub = frame[list(self.feature_names)]
        return self._predict(self._coerce(sub.astype(object).where(sub.notna(), None), True))

    def predict_one(self, row: Row) -> dict[str, Any]:
        """Predict a single row."""
        return self.predict_records([row])[0]

    def _predict(self, X: pd.DataFrame) -> list[dict[str, Any]]:  # noqa: N803
        if self._onnx is not None:
            columns = {name: X[name].to_numpy() for name in self.feature_names}
            return self._from_onnx(self._onnx.feeds_from_columns(columns), len(X))
        pipeline = self.bundle.pipeline
        if self.is_classifier and hasattr(pipeline, "predict_proba"):
            proba = np.asarray(pipeline.predict_proba(X), dtype=float)
            return self._from_proba(proba, getattr(pipeline, "classes_", None))
        raw = np.asarray(pipeline.predict(X))
        if raw.ndim > 1:
            raw = raw.reshape(len(X), -1)[:, 0]
        if self.is_classifier:
            return [self._label_only(v) for v in raw.tolist()]
        return [self._regression(v) for v in raw.astype(float).tolist()]

    def _from_proba(self, proba: np.ndarray, codes: Any) -> list[dict[str, Any]]:
        assert self.classes is not None
        codes = list(range(proba.shape[1])) if codes is None else list(np.asarray(codes).tolist())
        labels = [self._label(c) for c in codes]
        keys = [str(label) for label in labels]
        if proba.size and np.isfinite(proba).all() and proba.min() >= 0.0 and proba.max() <= 1.0:
            return _proba_rows(proba, labels, keys)  # the usual case: nothing to repair
        finite = np.isfinite(proba)
        safe = np.clip(np.where(finite, proba, -np.inf), 0.0, 1.0)
        safe[~finite] = -1.0  # never chosen over a real probability
        best = np.argmax(safe, axis=1)
        results = []
        for i, row in enumerate(proba.tolist()):
            probabilities = {
                key: (min(max(p, 0.0), 1.0) if math.isfinite(p) else None)
                for key, p in zip(keys, row, strict=True)
            }
            top = int(best[i])
            confidence = probabilities[keys[top]]
            results.append(
                {
                    "prediction": labels[top] if confidence is not None else None,
                    "confidence": confidence,
                    "probabilities": probabilities,
                    "interval": None,
                }
            )
        return results

    def _label(self, code: Any) -> Any:
        assert self.classes is not None
        if isinstance(code, int | np.integer) and 0 <= int(code) < len(self.classes):
            return self.classes[int(code)]
        return code.item() if isinstance(code, np.generic) else code

    def _label_only(self, code: Any) -> dict[str, Any]:
        if isinstance(code, float) and not math.isfinite(code):
            label = None
        elif isinstance(code, float) and code.is_integer():
            label = self._label(int(code))
        else:
            label = self._label(code)
        return {"prediction": label, "confidence": None, "probabilities": None, "interval": None}

    def _regression(self, value: float) -> dict[str, Any]:
        pred = _json_float(value)
        interval = None
        if pred is not None and self._halfwidth is not None:
            interval = [pred - self._halfwidth, pred + self._halfwidth]
        return {"prediction": pred, "confidence": None, "probabilities": None, "interval": interval}


def _row_sums(scores: np.ndarray) -> np.ndarray:
    """Each row's sum, added left to right (``[N, 1]``).

    Not ``scores.sum(axis=1)``: numpy's pairwise summation and Python's ``sum`` (compensated
    from 3.12) may round differently, and ``_small_proba_rows`` must give the same answers.
    """
    sums = scores[:, :1].copy()
    for column in range(1, scores.shape[1]):
        sums += scores[:, column : column + 1]
    return sums


def _small_proba_rows(
    proba: list[list[float]], labels: list[Any], keys: list[str]
) -> list[dict[str, Any]] | None:
    """``onnx_answers`` for a few rows in plain Python (numpy's per-call cost dominates there).

    The same arithmetic as the numpy path: each float32 row, as float64, divided by its sum
    when that is positive, the first largest probability wins. ``None`` (use the numpy path)
    when a probability is not finite or falls outside [0, 1].
    """
    results = []
    for row in proba:
        total = row[0]
        for p in row[1:]:  # left to right, as ``_row_sums``
            total += p
        if total > 0.0:
            row = [p / total for p in row]
        if not all(0.0 <= p <= 1.0 for p in row):  # NaN fails too
            return None
        top = row.index(max(row))
        results.append(
            {
                "prediction": labels[top],
                "confidence": row[top],
                "probabilities": dict(zip(keys, row, strict=True)),
                "interval": None,
            }
        )
    return results


def _proba_rows(proba: np.ndarray, labels: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    """Result dicts from finite probabilities in [0, 1]."""
    # one comprehension: for a 1,000-row batch this is most of the work after onnxruntime
    return [
        {
            "prediction": labels[top],
            "confidence": row[top],
            "probabilities": dict(zip(keys, row, strict=True)),
            "interval": None,
        }
        for top, row in zip(np.argmax(proba, axis=1).tolist(), proba.tolist(), strict=True)
    ]
