"""The reference profile of a bundle: what the training data looked like, in a form serving can
compare with live traffic cheaply.

Built at training time from the TRAINING part only (the features) and the TEST part (the
predictions, which on training rows would be over-fitted), it is stored next to ``metadata.json``
as ``reference_profile.json``:

* a numeric feature: interior cut points at the training deciles (duplicates dropped, so a
  discrete feature gets one bin per value), the training min/max, the share of training rows in
  each bin and the missing rate;
* a categorical or boolean feature (canonical strings, ``mlservice.categories``): the top levels
  (at most ``MAX_LEVELS``, each at least ``MIN_LEVEL_SHARE`` of the rows), one ``other`` bin for
  the rest, every level seen in training (for the unseen rate) and the missing rate;
* the predictions on the test part: class shares for a classifier, quantile bins otherwise;
* for a classifier with probabilities: the test accuracy, the mean top-class probability and the
  expected calibration error (ECE) of the test part, which say whether a confidence-based
  accuracy estimate can be trusted.

Datetime and text features are listed as not monitored. This module imports numpy only at module
level (serving loads profiles); pandas and scipy are imported by the builder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlservice.errors import BundleError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PROFILE_FILE",
    "PROFILE_FORMAT",
    "CategoricalReference",
    "ClassifierReference",
    "ColumnReference",
    "NumericReference",
    "ReferenceProfile",
    "build_reference_profile",
    "expected_calibration_error",
    "load_reference_profile",
    "profile_json",
    "save_reference_profile",
]

log = logging.getLogger(__name__)

PROFILE_FILE = "reference_profile.json"
PROFILE_FORMAT = "mlservice.reference_profile/1"
#: Decile bins: enough resolution for a shift, few enough that 500 rows fill every bin.
BINS = 10
#: A reference bin should hold this many rows; smaller references get fewer bins (a test part of
#: 90 rows gets 3 prediction bins), since the reference's own noise enters every comparison.
ROWS_PER_BIN = 25
MAX_LEVELS = 20
MIN_LEVEL_SHARE = 0.01
#: Levels remembered for the unseen rate; past this the feature is high-cardinality and values
#: outside the list are counted as ``other`` (its unseen rate is then unknown).
MAX_KNOWN_LEVELS = 5000
ECE_BINS = 10
#: The family-wise false-alarm level the noise floor of the PSI threshold is set for (split
#: over the monitored columns, Bonferroni).
NOISE_ALPHA = 0.01
MAX_PROFILE_BYTES = 16 * 1024 * 1024


def _floats(values: Any) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, float).tolist()]


@dataclass(frozen=True, eq=False)
class NumericReference:
    """A numeric column: quantile bins. Codes: ``0..B-1`` bins, ``B`` missing, ``B+1`` below the
    training min, ``B+2`` above the max; PSI bins: the ``B`` bins (out-of-range values in the
    outer ones) and missing."""

    name: str
    edges: np.ndarray
    low: float
    high: float
    shares: np.ndarray
    rows: int
    missing_rate: float
    noise_quantile: float = 0.0
    kind: str = field(default="numeric")

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    @property
    def n_codes(self) -> int:
        return self.n_bins + 3

    @property
    def groups(self) -> np.ndarray:
        """PSI bin of each code."""
        b = self.n_bins
        return np.array([*range(b), b, 0, b - 1], dtype=np.intp)

    @property
    def labels(self) -> list[str]:
        cuts = [f"{e:.4g}" for e in self.edges.tolist()]
        if not cuts:
            return ["all values", "missing"]
        inner = [f"[{a}, {b})" for a, b in pairwise(cuts)]
        return [f"< {cuts[0]}", *inner, f">= {cuts[-1]}", "missing"]

    def encode(self, values: Any) -> np.ndarray:
        """The code of each value (float64; NaN is missing)."""
        x = np.asarray(values, dtype=np.float64)
        b = self.n_bins
        codes = np.searchsorted(self.edges, x, side="right").astype(np.int16)
        codes[x < self.low] = b + 1  # NaN compares False
        codes[x > self.high] = b + 2
        codes[np.isnan(x)] = b
        return codes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "edges": _floats(self.edges),
            "min": _floats([self.low])[0],
            "max": _floats([self.high])[0],
            "shares": _floats(self.shares),
            "missing_rate": self.missing_rate,
            "noise_quantile": self.noise_quantile,
        }


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """A categorical column: top levels. Codes: ``0..L-1`` levels, ``L`` another training level,
    ``L+1`` a value unseen in training, ``L+2`` missing; PSI bins: levels, ``other`` (another or
    unseen), missing."""

    name: str
    levels: tuple[str, ...]
    known: tuple[str, ...] | None  # every training level; None past MAX_KNOWN_LEVELS
    shares: np.ndarray
    rows: int
    missing_rate: float
    noise_quantile: float = 0.0
    kind: str = field(default="categorical")
    #: value → code of every known value and of missing; ``default_code`` for the rest
    lookup: dict[Any, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        top = len(self.levels)
        self.lookup.update(dict.fromkeys(self.known or (), top))
        self.lookup.update({level: i for i, level in enumerate(self.levels)})
        self.lookup[None] = self.lookup[np.nan] = top + 2

    @property
    def default_code(self) -> int:
        """Unseen, or ``other`` when the known levels were not all kept."""
        return len(self.levels) + (1 if self.known is not None else 0)

    @property
    def n_codes(self) -> int:
        return len(self.levels) + 3

    @property
    def groups(self) -> np.ndarray:
        top = len(self.levels)
        return np.array([*range(top), top, top, top + 1], dtype=np.intp)

    @property
    def labels(self) -> list[str]:
        return [*self.levels, "other", "missing"]

    def encode(self, values: Any) -> np.ndarray:
        """The code of each value (canonical strings, ``None`` for missing)."""
        # A dict lookup per value is the fastest way through an object column (numpy has no
        # vectorized string membership; np.isin sorts, and cannot order None with str).
        # ``map`` over ``dict.get`` with a repeated default runs the loop in C (3-4x a
        # generator expression on 1,000 rows).
        codes = map(self.lookup.get, values, repeat(self.default_code, len(values)))
        return np.fromiter(codes, dtype=np.int16, count=len(values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "levels": list(self.levels),
            "known": None if self.known is None else list(self.known),
            "shares": _floats(self.shares),
            "missing_rate": self.missing_rate,
            "noise_quantile": self.noise_quantile,
        }


ColumnReference = NumericReference | CategoricalReference


@dataclass(frozen=True)
class ClassifierReference:
    """What the test part says about the classifier's probabilities."""

    classes: tuple[str, ...]
    rows: int
    test_accuracy: float | None  # None: an empty test part
    mean_confidence: float | None  # mean top-class probability (None: no probabilities)
    ece: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes), "ece_bins": ECE_BINS}


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """Everything serving compares live traffic with."""

    task: str
    rows: int
    features: tuple[ColumnReference, ...]
    prediction: ColumnReference
    classifier: ClassifierReference | None = None
    not_monitored: tuple[str, ...] = ()
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "task": self.task,
            "created_at": self.created_at,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "not_monitored": list(self.not_monitored),
            "prediction": self.prediction.to_dict(),
            "classifier": None if self.classifier is None else self.classifier.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Parse (and check) a profile; ``ValueError``/``KeyError``/``TypeError`` if malformed."""
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {PROFILE_FORMAT!r}")
        clf = data.get("classifier")
        return cls(
            task=str(data["task"]),
            rows=int(data["rows"]),
            features=tuple(_column_from_dict(f) for f in data["features"]),
            prediction=_column_from_dict(data["prediction"]),
            classifier=None if clf is None else _classifier_from_dict(clf),
            not_monitored=tuple(str(n) for n in data.get("not_monitored") or ()),
            created_at=str(data.get("created_at") or ""),
        )


def _opt(value: Any) -> float:
    return math.nan if value is None else float(value)


def _column_from_dict(data: Mapping[str, Any]) -> ColumnReference:
    shares = np.array([_opt(v) for v in data["shares"]], dtype=np.float64)
    common: dict[str, Any] = {
        "name": str(data["name"]),
        "shares": shares,
        "rows": int(data["rows"]),
        "missing_rate": float(data["missing_rate"]),
        "noise_quantile": float(data.get("noise_quantile") or 0.0),
    }
    if data["kind"] == "numeric":
        edges = np.array([float(e) for e in data["edges"]], dtype=np.float64)
        if np.any(np.diff(edges) <= 0):
            raise ValueError(f"column {common['name']!r}: edges are not increasing")
        ref: ColumnReference = NumericReference(
            edges=edges, low=_opt(data["min"]), high=_opt(data["max"]), **common
        )
        expected = len(edges) + 2
    elif data["kind"] == "categorical":
        known = data.get("known")
        ref = CategoricalReference(
            levels=tuple(str(v) for v in data["levels"]),
            known=None if known is None else tuple(str(v) for v in known),
            **common,
        )
        expected = len(ref.levels) + 2
    else:
        raise ValueError(f"column {common['name']!r} has unknown kind {data['kind']!r}")
    if len(shares) != expected or not np.all(np.isfinite(shares)):
        raise ValueError(f"column {common['name']!r}: {len(shares)} shares, expected {expected}")
    return ref


def _classifier_from_dict(data: Mapping[str, Any]) -> ClassifierReference:
    acc, conf, ece = (data.get(k) for k in ("test_accuracy", "mean_confidence", "ece"))
    return ClassifierReference(
        tuple(str(c) for c in data["classes"]), int(data["rows"]),
        *(None if v is None else float(v) for v in (acc, conf, ece)),
    )


# ----------------------------------------------------------------------------------- building
def _psi_shares(ref: ColumnReference, codes: np.ndarray) -> np.ndarray:
    groups = ref.groups
    counts = np.bincount(groups[codes], minlength=int(groups.max()) + 1).astype(np.float64)
    return counts / max(len(codes), 1)


def _numeric(name: str, values: np.ndarray) -> NumericReference:
    x = np.asarray(values, dtype=np.float64)
    present = x[~np.isnan(x)]
    bins = int(np.clip(len(present) // ROWS_PER_BIN, 2, BINS))
    if present.size:
        edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        low, high = float(present.min()), float(present.max())
    else:
        edges, low, high = np.empty(0), math.nan, math.nan
    ref = NumericReference(name, edges, low, high, np.empty(0), len(x), 0.0)
    shares = _psi_shares(ref, ref.encode(x))
    missing = float(np.isnan(x).mean()) if len(x) else 0.0
    return NumericReference(name, edges, low, high, shares, len(x), round(missing, 6))


def _categorical(
    name: str, values: Sequence[Any], *, levels: Sequence[str] | None = None
) -> CategoricalReference:
    """``levels``: fixed levels in this order (a classifier's classes), else the top ones."""
    present = [v for v in values if v is not None]
    counts = Counter(present)
    ranked = sorted(counts, key=lambda level: (-counts[level], level))
    if levels is not None:
        top = [str(v) for v in levels]
        ranked = sorted({*ranked, *top})
    else:
        floor = MIN_LEVEL_SHARE * max(len(values), 1)
        top = [level for level in ranked if counts[level] >= floor][:MAX_LEVELS]
    known = tuple(sorted(ranked)) if len(ranked) <= MAX_KNOWN_LEVELS else None
    ref = CategoricalReference(name, tuple(top), known, np.empty(0), len(values), 0.0)
    shares = _psi_shares(ref, ref.encode(values))
    missing = 1.0 - len(present) / len(values) if len(values) else 0.0
    return CategoricalReference(name, tuple(top), known, shares, len(values), round(missing, 6))


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, *, bins: int = ECE_BINS
) -> float:
    """Top-label ECE: the row-weighted mean gap between accuracy and mean confidence over equal
    width confidence bins (``y_true``: class codes = probability columns)."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.intp), bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / max(len(confidence), 1))


def _classifier(
    classes: Sequence[Any], test_pred: np.ndarray, y_test: np.ndarray, proba: np.ndarray | None
) -> ClassifierReference:
    y = np.asarray(y_test)
    accuracy = float(np.mean(np.asarray(test_pred) == y)) if len(y) else None
    conf = ece = None
    if proba is not None and len(y):
        conf = float(np.asarray(proba, dtype=np.float64).max(axis=1).mean())
        ece = expected_calibration_error(y, proba)
    return ClassifierReference(tuple(str(c) for c in classes), len(y), accuracy, conf, ece)


def _canonical_column(series: pd.Series) -> list[Any]:
    from mlservice.categories import canonical_series

    values = canonical_series(series)
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]


def _noise_quantiles(columns: list[ColumnReference]) -> list[ColumnReference]:
    """Attach each column's chi-square quantile (Bonferroni over the columns): under no drift,
    ``PSI * n*N/(n+N)`` is close to chi-square with (non-empty reference bins - 1) degrees."""
    from scipy.stats import chi2

    level = 1.0 - NOISE_ALPHA / max(len(columns), 1)
    out = []
    for ref in columns:
        df = max(int(np.count_nonzero(ref.shares > 0)) - 1, 1)
        out.append(replace(ref, noise_quantile=round(float(chi2.ppf(level, df)), 6)))
    return out


def build_reference_profile(
    X_train: pd.DataFrame,  # noqa: N803
    types: Mapping[str, str],
    *,
    task: str,
    test_pred: Any,
    y_test: Any = None,
    test_proba: np.ndarray | None = None,
    classes: Sequence[Any] | None = None,
) -> ReferenceProfile:
    """The profile of a bundle, from the training part's features (``types``: name → numeric |
    categorical | boolean | datetime | text) and the model's outputs on the test part.

    Classification: ``test_pred`` and ``y_test`` are class codes (indices into ``classes``, as
    ``training.evaluate.predict_outputs`` gives them) and ``test_proba`` has one column per code.
    Otherwise ``test_pred`` holds the predicted values and ``y_test``/``classes`` are unused.
    """
    columns: list[ColumnReference] = []
    skipped: list[str] = []
    for name in X_train.columns:
        kind = types.get(str(name), "numeric")
        if kind == "numeric":
            columns.append(_numeric(str(name), X_train[name].to_numpy(dtype=np.float64)))
        elif kind in ("categorical", "boolean"):
            columns.append(_categorical(str(name), _canonical_column(X_train[name])))
        else:
            skipped.append(str(name))
    pred = np.asarray(test_pred)
    clf = None
    prediction: ColumnReference
    if task == "classification" and classes is not None:
        labels = [str(c) for c in classes]
        named = [labels[int(c)] for c in pred.tolist()]
        prediction = _categorical("prediction", named, levels=labels)
        clf = _classifier(classes, pred, np.asarray(y_test), test_proba)
    else:
        prediction = _numeric("prediction", pred.astype(np.float64))
    *features, prediction = _noise_quantiles([*columns, prediction])
    return ReferenceProfile(
        task=task,
        rows=len(X_train),
        features=tuple(features),
        prediction=prediction,
        classifier=clf,
        not_monitored=tuple(skipped),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


# ------------------------------------------------------------------------------- file
def profile_json(profile: ReferenceProfile) -> str:
    """The file's text (for ``bundle.update_bundle_files``)."""
    return json.dumps(profile.to_dict(), indent=1, allow_nan=False) + "\n"


def save_reference_profile(profile: ReferenceProfile, directory: Path) -> Path:
    """Write ``reference_profile.json`` into ``directory`` (atomically) and return its path."""
    path = Path(directory) / PROFILE_FILE
    tmp = path.with_name(f".{PROFILE_FILE}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(profile_json(profile))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_reference_profile(
    bundle_path: str | Path, metadata: Mapping[str, Any] | None = None
) -> ReferenceProfile | None:
    """The profile of a bundle; ``None`` when it has none (bundles trained before profiles).

    With ``metadata`` (the bundle's ``metadata.json``) the file must match its recorded sha256
    (``BundleError`` otherwise); a profile the metadata does not list was not written by
    training and is ignored, with a warning.
    """
    path = Path(bundle_path) / PROFILE_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise BundleError(f"bundle {str(bundle_path)!r}: {PROFILE_FILE} is too large to be ours")
    data = path.read_bytes()
    if metadata is not None:
        expected = (metadata.get("files") or {}).get(PROFILE_FILE)
        if expected is None:
            log.warning("%s is not listed in metadata.json of %s; ignored", PROFILE_FILE, path)
            return None
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(
                f"bundle {str(bundle_path)!r}: {PROFILE_FILE} does not match its recorded "
                "sha256; the bundle was modified or corrupted. Re-train or restore it."
            )
    try:
        return ReferenceProfile.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise BundleError(
            f"bundle {str(bundle_path)!r}: {PROFILE_FILE} is not a valid reference profile: "
            f"{str(exc)[:200] or type(exc).__name__}"
        ) from exc
