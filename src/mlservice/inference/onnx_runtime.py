"""The ONNX fast path: run a bundle's verified ``model.onnx`` with onnxruntime.

``model.onnx`` takes one ``[N, 1]`` input per feature, named after it: ``float`` for numeric
features (NaN when missing), ``string`` for categorical ones. A missing category is the empty
string (the exported imputer's ``missing_values``); a value that can never be a training category
(an empty string sent by a client, a non-string) becomes ``UNKNOWN_CATEGORY``, which the one-hot
encoder ignores exactly as scikit-learn's ``handle_unknown="ignore"`` does.

Which runtime serves a bundle is ``serving.runtime`` in its metadata (``auto | onnx | sklearn``),
overridden by ``MLSERVICE_RUNTIME``: ``auto`` uses ONNX when the bundle holds a ``model.onnx``
that was verified at training time and is listed (so hash-checked) in ``metadata.json``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlservice.categories import canonical_request_value
from mlservice.errors import BundleError, ConfigError

__all__ = [
    "MISSING_CATEGORY",
    "ONNX_FILE",
    "RUNTIMES",
    "RUNTIME_ENV",
    "SMALL_ROWS",
    "UNKNOWN_CATEGORY",
    "ColumnCheck",
    "FeedBuilder",
    "OnnxInput",
    "OnnxModel",
    "categorical_to_onnx",
    "onnx_status",
    "requested_runtime",
    "session_options",
]

ONNX_FILE = "model.onnx"
RUNTIMES = ("auto", "onnx", "sklearn")
RUNTIME_ENV = "MLSERVICE_RUNTIME"
#: What a missing categorical value is in the ONNX graph (its imputer's ``missing_values``).
MISSING_CATEGORY = ""
#: A string no training category can be: the encoder treats it as unknown (all zeros).
UNKNOWN_CATEGORY = "\x00mlservice-unknown-category"

_KINDS = {"float": "numeric", "string": "categorical"}
#: Up to this many rows, checks and answers are computed in plain Python instead of numpy.
SMALL_ROWS = 4


@dataclass(frozen=True)
class OnnxInput:
    """One graph input: the feature it carries and its element type (``float`` or ``string``)."""

    name: str
    type: str

    @classmethod
    def from_metadata(cls, spec: Mapping[str, Any]) -> OnnxInput:
        kind = str(spec.get("type", ""))
        if kind not in _KINDS:
            raise BundleError(f"metadata onnx.inputs has unknown type {kind!r} for {spec!r}")
        return cls(name=str(spec["name"]), type=kind)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


def requested_runtime(
    metadata: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> str:
    """``MLSERVICE_RUNTIME``, else the bundle's ``serving.runtime``, else ``auto``."""
    env = os.environ if environ is None else environ
    raw = env.get(RUNTIME_ENV, "").strip().lower()
    if raw:
        if raw not in RUNTIMES:
            raise ConfigError(f"{RUNTIME_ENV} must be one of {list(RUNTIMES)}, got {raw!r}")
        return raw
    serving = metadata.get("serving")
    value = serving.get("runtime") if isinstance(serving, Mapping) else None
    return str(value) if value in RUNTIMES else "auto"


def onnx_status(metadata: Mapping[str, Any], path: Path) -> str | None:
    """``None`` when the bundle can be served by ONNX, else why not (for errors and logs)."""
    info = metadata.get("onnx")
    if not isinstance(info, Mapping) or not info.get("converted"):
        reason = info.get("reason") if isinstance(info, Mapping) else None
        return f"the bundle has no ONNX model ({reason or 'not exported at training time'})"
    if not info.get("verified"):
        return f"its ONNX model was not verified ({info.get('reason') or 'no reason recorded'})"
    files = metadata.get("files")
    if not isinstance(files, Mapping) or ONNX_FILE not in files:
        return f"{ONNX_FILE} is not listed (hash-checked) in metadata.json"
    if not (path / ONNX_FILE).is_file():
        return f"{ONNX_FILE} is missing from the bundle"
    return None


def session_options(*, threads: int = 1) -> Any:
    """Session options for small requests: no thread pool to wake, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Threads would spin waiting for work between requests and steal the event loop's core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def categorical_to_onnx(value: Any) -> str:
    """A validated categorical value as the ONNX graph takes it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_CATEGORY
    if isinstance(value, str) and value != MISSING_CATEGORY:
        return value
    # Training categories are non-empty strings (checked at export): anything else is unknown.
    return UNKNOWN_CATEGORY


class OnnxModel:
    """An onnxruntime session over a bundle's ``model.onnx`` and its input/output layout."""

    def __init__(
        self,
        session: Any,
        *,
        inputs: Sequence[OnnxInput],
        label_output: str,
        proba_output: str | None,
    ) -> None:
        self.session = session
        self.inputs = tuple(inputs)
        self.label_output = label_output
        self.proba_output = proba_output
        declared = {i.name: i.type for i in session.get_inputs()}
        expected = {i.name: f"tensor({i.type})" for i in self.inputs}
        if declared != expected:
            raise BundleError(
                f"{ONNX_FILE} inputs {declared} do not match metadata onnx.inputs {expected}"
            )
        outputs = {o.name for o in session.get_outputs()}
        for name in (label_output, proba_output):
            if name is not None and name not in outputs:
                raise BundleError(f"{ONNX_FILE} has no output {name!r}; it has {sorted(outputs)}")
        self._output_names = [label_output] + ([proba_output] if proba_output else [])

    @classmethod
    def from_bytes(
        cls, data: bytes, *, onnx_meta: Mapping[str, Any], threads: int = 1
    ) -> OnnxModel:
        """A session over serialized model bytes (never a path: no external data is followed)."""
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(
                data, sess_options=session_options(threads=threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"{ONNX_FILE} cannot be loaded by onnxruntime: {exc}") from exc
        outputs = onnx_meta.get("outputs") or {}
        if not isinstance(outputs, Mapping) or "label" not in outputs:
            raise BundleError("metadata onnx.outputs must name the 'label' output")
        return cls(
            session,
            inputs=[OnnxInput.from_metadata(s) for s in onnx_meta.get("inputs") or []],
            label_output=str(outputs["label"]),
            proba_output=str(outputs["probabilities"]) if outputs.get("probabilities") else None,
        )

    @classmethod
    def from_bundle(cls, path: Path, metadata: Mapping[str, Any]) -> OnnxModel:
        """Load ``model.onnx`` of a verified bundle, re-checking the hash of the bytes it runs."""
        problem = onnx_status(metadata, path)
        if problem is not None:
            raise BundleError(f"bundle {path.name!r} cannot be served by ONNX: {problem}")
        data = (path / ONNX_FILE).read_bytes()
        expected = str(metadata["files"][ONNX_FILE])
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(
                f"bundle {path.name!r}: {ONNX_FILE} does not match its recorded sha256; "
                "the bundle was modified or corrupted. Re-train or restore it."
            )
        return cls.from_bytes(data, onnx_meta=metadata["onnx"])

    def run(self, feeds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (or regression values) and probabilities (``None`` without them)."""
        out = self.session.run(self._output_names, dict(feeds))
        return np.asarray(out[0]), (np.asarray(out[1]) if self.proba_output else None)

    def feeds_from_columns(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Feeds from validated per-feature values (``None``/NaN for missing)."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            values = columns[spec.name]
            if spec.type == "float":
                array = np.asarray(values, dtype=np.float64).astype(np.float32)
            else:
                array = np.array([categorical_to_onnx(v) for v in values], dtype=object)
            feeds[spec.name] = array.reshape(-1, 1)
        return feeds



@dataclass(frozen=True)
class ColumnCheck:
    """What the fast path accepts in one input: the feature's nullability and closed categories."""

    kind: str  # "float" or "string", as the ONNX input
    nullable: bool
    categories: frozenset[Any] | None  # closed categories; None: any string
    #: What a string input takes: "string" (str only, as sent), "category" (str, or a JSON
    #: number read as its canonical category string), "boolean" (true/false, sent to the
    #: graph as "True"/"False").
    values: str = "string"


_NONE = type(None)


def _boolean_string(value: Any) -> Any:
    return value if value is None else ("True" if value else "False")


#: ``ColumnCheck.values`` → the Python types a request may send, and the conversion to the
#: graph's string (``None``: strings as sent).
_STRING_VALUES: dict[str, tuple[frozenset[type], Callable[[Any], Any] | None]] = {
    "string": (frozenset({str}), None),
    "category": (frozenset({str, int, float}), canonical_request_value),
    "boolean": (frozenset({bool}), _boolean_string),
}


class FeedBuilder:
    """Rows of values (in input order) → the graph's ``[N, 1]`` inputs, without a DataFrame.

    It accepts only what the Predictor's full checks accept and converts it the same way: every
    numeric value an int or float, finite and within ``max_abs`` (null only where the feature is
    nullable), every categorical value one of the closed categories or a string (of at most
    ``max_text`` characters). Anything else
    (a wrong type, a null where none is allowed, an unknown category, NaN, an out-of-range number)
    gives ``None``, and the caller runs the full checks, which name the problem.
    """

    def __init__(
        self,
        inputs: Sequence[OnnxInput],
        checks: Sequence[ColumnCheck],
        *,
        max_abs: float,
        max_text: int | None = None,
    ) -> None:
        if [i.type for i in inputs] != [c.kind for c in checks]:
            raise BundleError("the ONNX inputs and the feature checks are not in the same order")
        self.max_abs = max_abs
        self.max_text = max_text
        self._names = [i.name for i in inputs]
        floats = [j for j, c in enumerate(checks) if c.kind == "float"]
        self._floats = floats
        self._float_names = [self._names[j] for j in floats]
        nullable = [checks[j].nullable for j in floats]
        self._float_types = frozenset({int, float} | ({_NONE} if any(nullable) else set()))
        self._not_null = np.array([not n for n in nullable], dtype=bool)
        self._nullable = nullable
        self._strings: list[
            tuple[int, str, frozenset[Any] | None, frozenset[type], Callable[[Any], Any] | None]
        ] = []
        for j, check in enumerate(checks):
            if check.kind != "string":
                continue
            extra = {None} if check.nullable else set()
            allowed = None if check.categories is None else frozenset(check.categories | extra)
            sent, convert = _STRING_VALUES[check.values]
            types = frozenset(sent | ({_NONE} if check.nullable else set()))
            self._strings.append((j, self._names[j], allowed, types, convert))

    def build(self, rows: Sequence[Sequence[Any]]) -> dict[str, np.ndarray] | None:
        """The feeds, or ``None`` when some value needs the full checks."""
        count = len(rows)
        feeds: dict[str, np.ndarray] = {}
        if self._floats:
            block = self._float_block(rows, count)
            if block is None:
                return None
            for k, name in enumerate(self._float_names):
                feeds[name] = block[k].reshape(count, 1)
        for j, name, allowed, types, convert in self._strings:
            column = [row[j] for row in rows]
            if convert is not None:
                if not types.issuperset(map(type, column)):
                    return None
                column = [convert(v) for v in column]
            if allowed is not None:
                try:
                    if not allowed.issuperset(column):
                        return None
                except TypeError:  # an unhashable value (a list, a dict)
                    return None
            elif not types.issuperset(map(type, column)) or self._too_long(column):
                return None
            values = [
                MISSING_CATEGORY if v is None else (UNKNOWN_CATEGORY if v == "" else v)
                for v in column
            ]
            feeds[name] = np.array(values, dtype=object).reshape(count, 1)
        return feeds

    def _too_long(self, column: Sequence[Any]) -> bool:
        limit = self.max_text
        return limit is not None and any(len(v) > limit for v in column if v is not None)

    def _float_block(self, rows: Sequence[Sequence[Any]], count: int) -> np.ndarray | None:
        """All numeric inputs as one C-contiguous float32 ``[inputs, N]`` block."""
        index = self._floats
        values = [row[j] for row in rows for j in index]
        if not self._float_types.issuperset(map(type, values)):
            return None
        if count <= SMALL_ROWS and not self._small_ok(values):
            return None
        try:
            block = np.array(values, dtype=np.float64).reshape(count, len(index))
        except (OverflowError, TypeError, ValueError):
            return None
        if count > SMALL_ROWS:
            if (np.abs(block) > self.max_abs).any():  # also infinity; NaN compares False
                return None
            if np.isnan(block[:, self._not_null]).any():
                return None
        return np.ascontiguousarray(block.T, dtype=np.float32)

    def _small_ok(self, values: Sequence[Any]) -> bool:
        """The range and null checks of a few rows in plain Python (numpy's per-call cost is
        most of a one-row request's checking), as the numpy checks: missing (``None`` or NaN)
        only where nullable, else a number within ``max_abs``."""
        limit = self.max_abs
        nullable = self._nullable
        width = len(nullable)
        for position, value in enumerate(values):
            if value is None or value != value:  # missing: None, or NaN from a Python caller
                if not nullable[position % width]:
                    return False
            elif not -limit <= value <= limit:  # also infinity
                return False
        return True
