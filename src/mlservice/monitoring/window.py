"""The online drift window: every served row updates it, ``GET /api/v1/monitoring`` reports it.

The window keeps the last ``size`` rows (default 10,000) of traffic as small integer codes, one
per monitored column (each feature and the prediction), in a ring buffer, plus a count of each
code, so an update costs a few numpy calls whatever the window size and a report only reads
the counts. numpy is the only dependency of this module (no pandas, scipy or training code).

Statistic: the population stability index (PSI) of each column over the reference profile's
bins (``monitoring.profile``): ``sum((q - p) * ln(q / p))`` over the bins, with shares below
``PSI_FLOOR`` raised to it so an empty bin gives a finite score. A column drifts when its PSI
exceeds ``max(PSI_THRESHOLD, noise)``, where ``PSI_THRESHOLD = 0.2`` is the usual "significant
shift" level and ``noise = q * (1/n + 1/N)`` is the PSI that sampling alone reaches with ``n``
window rows and ``N`` reference rows (``q``: the chi-square quantile stored in the profile, at a
1% family-wise level over the columns). The noise term only matters for a small reference (a
classifier's test part of 70 rows gives a prediction threshold of about 0.22 at 500 rows); for
the usual sizes it is far below 0.2. Drift is judged from ``min_rows`` (500) rows on.

Why PSI and not a chi-square or KS test: a test's p-value measures evidence, not size, so on a
window of 10,000 rows it flags shifts too small to matter, and it flags them more the more
traffic there is. PSI measures the size of the shift, and its sampling noise shrinks as the
window grows (about ``(bins - 1) / n``).

False alarms measured: logistic regression / ridge fitted on 80% of each data set, profile of
that training part, 200 windows of 500 rows drawn with replacement from the training part (and,
for the two large sets, 200 windows of 500 fresh held-out rows), each judged in full:

=================  =============  ==================  ===================  ==========
data set           training rows  largest feature PSI  largest prediction   false
                                                       PSI (threshold)      alarms
=================  =============  ==================  ===================  ==========
penguins           275            0.079               0.071 (0.22)         0 of 200
breast_cancer      455            0.068               0.053 (0.20)         0 of 200
wine               142            0.042               0.176 (0.43)         0 of 200
diabetes           353            0.060               0.150 (0.20)         0 of 200
vega cars          318            0.056               0.048 (0.20)         0 of 200
statsmodels fair   5,092          0.069 (held-out     0.023 (0.20)         0 of 400
                                  0.042)
statsmodels        16,152         0.056 (held-out     0.053 (0.20)         0 of 400
randhie                           0.045)
=================  =============  ==================  ===================  ==========

A healthy window stays below 0.08, well under 0.2; a +1.5 standard deviation shift of one
numeric feature scores about 3 and one level's share going from 15% to 70% about 1.3 (the
penguins cases of tests/test_monitoring.py, which also repeats the penguins row).

Estimated accuracy (classifiers): the mean top-class probability of the window, which is the
expected accuracy if the probabilities are calibrated (NannyML's confidence-based performance
estimation). The profile holds the expected calibration error of the test part; the estimate
is called trustworthy when it is at most ``ECE_TRUSTED``.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlservice.monitoring.profile import (
    PROFILE_FILE,
    CategoricalReference,
    ColumnReference,
    NumericReference,
    ReferenceProfile,
    load_reference_profile,
)

__all__ = [
    "DEFAULT_MIN_ROWS",
    "DEFAULT_SIZE",
    "ECE_TRUSTED",
    "PREDICTION_KEY",
    "PSI_FLOOR",
    "PSI_THRESHOLD",
    "DriftWindow",
    "psi",
]

PSI_THRESHOLD = 0.2
PSI_FLOOR = 1e-4
DEFAULT_SIZE = 10_000
DEFAULT_MIN_ROWS = 500
ECE_TRUSTED = 0.05
#: The name ``prometheus_values`` gives the prediction column.
PREDICTION_KEY = "__prediction__"

_ASSUMPTION = (
    "The mean top-class probability is the expected accuracy only if the probabilities are "
    "calibrated (of the rows predicted with confidence p, a share p is right) and stay so on "
    "live traffic: it follows a shift of the features, not a change of the labels given the "
    "features (concept drift), which only labels reveal."
)


def psi(reference: np.ndarray, current: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of two share vectors over the same bins."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), floor)
    q = np.maximum(np.asarray(current, dtype=np.float64), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def _as_labels(values: Any) -> list[Any]:
    # class labels arrive as sent by the model (str, int, bool); the profile keys them by str
    return [v if v is None or type(v) is str else str(v) for v in values]


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


class _NumericBlock:
    """Every numeric feature encoded in one set of numpy calls (per feature, a request of one
    row would pay numpy's call overhead a dozen times); the codes of ``NumericReference``."""

    def __init__(self, rows: list[int], refs: list[NumericReference]) -> None:
        self.rows = np.array(rows, dtype=np.intp)
        self.names = [r.name for r in refs]
        width = max((len(r.edges) for r in refs), default=0)
        # padded with +inf, which no finite value reaches (+inf itself is capped at the last bin)
        self.edges = np.full((len(refs), 1, width), np.inf)
        for i, ref in enumerate(refs):
            self.edges[i, 0, : len(ref.edges)] = ref.edges
        self.bins = np.array([r.n_bins for r in refs], dtype=np.int64).reshape(-1, 1)
        self.low = np.array([r.low for r in refs], dtype=np.float64).reshape(-1, 1)
        self.high = np.array([r.high for r in refs], dtype=np.float64).reshape(-1, 1)

    def encode(self, columns: Mapping[str, Any]) -> np.ndarray:
        """``[features, rows]`` codes: bin (edges at or below the value), then missing,
        below the training min, above the max."""
        x = np.array([columns[name] for name in self.names], dtype=np.float64)
        codes = np.minimum(np.count_nonzero(x[:, :, None] >= self.edges, axis=2), self.bins - 1)
        codes = np.where(x < self.low, self.bins + 1, codes)
        codes = np.where(x > self.high, self.bins + 2, codes)
        return np.where(np.isnan(x), self.bins, codes)


def _numeric_code(value: Any, edges: list[float], low: float, high: float, bins: int) -> int:
    """``NumericReference.encode`` of one value in plain Python."""
    if value is None or value != value:  # missing: None or NaN
        return bins
    if value < low:
        return bins + 1
    if value > high:
        return bins + 2
    return bisect_right(edges, value)  # at most len(edges) = bins - 1


def _row_plan(ref: ColumnReference) -> tuple[Any, ...]:
    if isinstance(ref, NumericReference):
        return (True, ref.edges.tolist(), ref.low, ref.high, ref.n_bins)
    return (False, ref.lookup, ref.default_code)


class DriftWindow:
    """Recent traffic against a bundle's reference profile; safe to share between threads.

    ``size=None`` keeps no ring and counts every row ever given (``monitor_file`` uses it for a
    whole file). ``profile=None`` (a bundle without one) only counts rows and reports so.
    """

    def __init__(
        self,
        profile: ReferenceProfile | None,
        *,
        size: int | None = DEFAULT_SIZE,
        min_rows: int = DEFAULT_MIN_ROWS,
        threshold: float = PSI_THRESHOLD,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"the PSI threshold must be above 0, got {threshold}")
        if size is not None and size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        if min_rows < 1 or (size is not None and min_rows > size):
            raise ValueError(f"min_rows must be between 1 and the window size, got {min_rows}")
        self.profile = profile
        self.size = size
        self.min_rows = min_rows
        self.threshold = threshold
        self._lock = threading.Lock()
        self._features: list[ColumnReference] = [] if profile is None else [*profile.features]
        self._refs = self._features + ([] if profile is None else [profile.prediction])
        numeric = [(j, r) for j, r in enumerate(self._features) if isinstance(r, NumericReference)]
        self._numeric = _NumericBlock([j for j, _ in numeric], [r for _, r in numeric])
        self._categorical = [
            (j, r) for j, r in enumerate(self._features) if isinstance(r, CategoricalReference)
        ]
        self._plans = [_row_plan(r) for r in self._refs]
        width = max((r.n_codes for r in self._refs), default=1)
        self._width = width
        self._offsets = (np.arange(len(self._refs)) * width).astype(np.int64)
        self._counts = np.zeros(len(self._refs) * width, dtype=np.int64)
        self._codes = np.zeros((size or 0, len(self._refs)), dtype=np.int16)
        self._confidence = np.full(size or 0, np.nan)
        self._conf_total = 0.0  # size=None: running sum and count of confidences
        self._conf_rows = 0
        self._head = 0
        self._filled = 0
        self._seen = 0
        self._rejected: dict[str, int] = {}

    @classmethod
    def from_bundle(
        cls, bundle_path: str | Path, metadata: Mapping[str, Any] | None = None, **options: Any
    ) -> DriftWindow:
        """The window of a bundle directory (its verified profile, or none)."""
        return cls(load_reference_profile(bundle_path, metadata), **options)

    @property
    def rows(self) -> int:
        """Rows in the window now."""
        return self._filled if self.size is not None else self._seen

    # ------------------------------------------------------------------------------ update
    def update(self, columns: Mapping[str, Any], predictions: Any, confidence: Any = None) -> None:
        """Add served rows: ``columns`` maps each monitored feature to its values (float64
        arrays for numeric features, object arrays of canonical strings or ``None`` for
        categorical/boolean ones; other keys are ignored), ``predictions`` the predicted labels
        or values, ``confidence`` (classifiers) each row's top-class probability or NaN."""
        count = len(predictions)
        if count == 0:
            return
        if self.profile is None:
            with self._lock:
                self._seen += count
            return
        block = self._encode(columns, predictions, count)  # outside the lock: the costly part
        conf = None
        if confidence is not None and self.profile.classifier is not None:
            conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
            if len(conf) != count:
                raise ValueError(f"{len(conf)} confidences for {count} predictions")
        with self._lock:
            self._push(block, conf)

    def _encode(self, columns: Mapping[str, Any], predictions: Any, count: int) -> np.ndarray:
        """The codes of the rows, one row of ``block`` per column: ``[columns, count]``."""
        block = np.empty((len(self._refs), count), dtype=np.int16)
        for ref in self._features:
            values = columns.get(ref.name)
            if values is None or len(values) != count:
                got = "nothing" if values is None else f"{len(values)} values"
                raise ValueError(f"feature {ref.name!r}: got {got} for {count} predictions")
        if count == 1:
            return self._encode_row(columns, predictions)
        if self._numeric.names:
            block[self._numeric.rows] = self._numeric.encode(columns)
        for j, cat in self._categorical:
            block[j] = cat.encode(columns[cat.name])
        prediction = self._refs[-1]
        if isinstance(prediction, CategoricalReference):
            block[-1] = prediction.encode(_as_labels(predictions))
        else:
            block[-1] = prediction.encode(np.asarray(predictions, dtype=np.float64))
        return block

    def _encode_row(self, columns: Mapping[str, Any], predictions: Any) -> np.ndarray:
        """``_encode`` of one row in plain Python: for a single row numpy's per-call overhead
        would be most of the cost. The codes are the same (the tests compare both paths)."""
        values = [columns[ref.name][0] for ref in self._features]
        prediction = predictions[0]
        if isinstance(self._refs[-1], CategoricalReference):
            values.append(_as_labels([prediction])[0])
        else:
            values.append(math.nan if prediction is None else float(prediction))
        codes = [
            _numeric_code(v, *plan[1:]) if plan[0] else plan[1].get(v, plan[2])
            for v, plan in zip(values, self._plans, strict=True)
        ]
        return np.array(codes, dtype=np.int16).reshape(-1, 1)

    def _push(self, block: np.ndarray, conf: np.ndarray | None) -> None:
        """Add a ``[columns, rows]`` block of codes; call under the lock."""
        count = block.shape[1]
        self._seen += count
        if self.size is None:
            self._counts += self._tally(block)
            if conf is not None:
                finite = conf[np.isfinite(conf)]
                self._conf_total += float(finite.sum())
                self._conf_rows += len(finite)
            return
        if count > self.size:  # only the newest rows fit
            block = block[:, -self.size :]
            conf = None if conf is None else conf[-self.size :]
            count = self.size
        first = min(count, self.size - self._head)  # up to the end of the ring, then from 0
        self._write(self._head, block[:, :first], None if conf is None else conf[:first])
        if first < count:
            self._write(0, block[:, first:], None if conf is None else conf[first:])
        self._head = (self._head + count) % self.size

    def _write(self, start: int, block: np.ndarray, conf: np.ndarray | None) -> None:
        end = start + block.shape[1]
        # The ring fills from slot 0 in order, so until it is full the slots written are empty.
        if self._filled == self.size:
            self._counts -= self._tally(self._codes[start:end].T)
        self._counts += self._tally(block)
        self._codes[start:end] = block.T
        self._confidence[start:end] = np.nan if conf is None else conf
        self._filled = max(self._filled, end)

    def _tally(self, block: np.ndarray) -> np.ndarray:
        flat = (block + self._offsets[:, None]).ravel()
        return np.bincount(flat, minlength=len(self._counts))

    def record_rejected(self, feature: str, count: int = 1) -> None:
        """Count values of ``feature`` the API refused (a 422 naming it); never in the window."""
        with self._lock:
            self._rejected[feature] = self._rejected.get(feature, 0) + count

    # ------------------------------------------------------------------------------ report
    def _snapshot(self) -> tuple[np.ndarray, int, float | None, int, dict[str, int], int]:
        with self._lock:
            counts = self._counts.reshape(len(self._refs), self._width).copy()
            rejected = dict(self._rejected)
            if self.size is None:
                total, conf_rows = self._conf_total, self._conf_rows
            else:
                conf = self._confidence[: self._filled]
                finite = conf[np.isfinite(conf)]
                total, conf_rows = float(finite.sum()), len(finite)
            rows, seen = self.rows, self._seen
        mean = total / conf_rows if conf_rows else None
        return counts, rows, mean, conf_rows, rejected, seen

    def report(self, *, detail: bool = False) -> dict[str, Any]:
        """The answer of ``GET /api/v1/monitoring``; ``detail`` adds each column's bins with
        the reference and current shares (for plots)."""
        if self.profile is None:
            return self._no_reference()
        counts, rows, mean_conf, conf_rows, rejected, seen = self._snapshot()
        judged = rows >= self.min_rows
        features = {
            ref.name: self._column(ref, counts[j], rows, judged, detail)
            | {"rejected": rejected.get(ref.name, 0)}
            for j, ref in enumerate(self._features)
        }
        prediction = self._column(self._refs[-1], counts[-1], rows, judged, detail)
        prediction.pop("reference_missing_rate", None)
        drifted = [name for name, item in features.items() if item["drift"]]
        answer: dict[str, Any] = {
            "drift": bool(drifted) or prediction["drift"],
            "drifted_features": drifted,
            "reference": {
                "file": PROFILE_FILE,
                "rows": self.profile.rows,
                "task": self.profile.task,
                "created_at": self.profile.created_at,
            },
            "window": self._window(rows, seen, judged),
            "features": features,
            "prediction": prediction,
            "not_monitored": list(self.profile.not_monitored),
        }
        if self.profile.classifier is not None:
            answer["estimated_accuracy"] = self._accuracy(mean_conf, conf_rows)
        return answer

    def _window(self, rows: int, seen: int, judged: bool) -> dict[str, Any]:
        scope = f"the last {rows} rows" if self.size is not None else f"all {rows} rows"
        note = (
            f"drift judged on {scope}"
            if judged
            else f"{rows} of the {self.min_rows} rows needed; drift is not judged yet"
        )
        return {
            "rows": rows,
            "min_rows": self.min_rows,
            "size": self.size,
            "judged": judged,
            "seen": seen,
            "note": note,
        }

    def _column(
        self, ref: ColumnReference, codes: np.ndarray, rows: int, judged: bool, detail: bool
    ) -> dict[str, Any]:
        groups = ref.groups
        current: np.ndarray = np.bincount(
            groups, weights=codes[: ref.n_codes], minlength=len(ref.shares)
        )
        missing_code = ref.n_codes - 3 if isinstance(ref, NumericReference) else ref.n_codes - 1
        present = rows - int(codes[missing_code])
        score = threshold = None
        if rows:
            current = current / rows
            score = psi(ref.shares, current)
            noise = ref.noise_quantile * (1.0 / rows + 1.0 / max(ref.rows, 1))
            threshold = max(self.threshold, noise)
        out: dict[str, Any] = {
            "kind": ref.kind,
            "drift": bool(judged and score is not None and threshold and score > threshold),
            "score": _round(score),
            "method": "psi",
            "threshold": _round(threshold, 4),
            "missing_rate": _round(codes[missing_code] / rows) if rows else None,
            "reference_missing_rate": ref.missing_rate,
            "out_of_range_rate": None,
            "unseen_rate": None,
        }
        if isinstance(ref, NumericReference) and present:
            outside = int(codes[ref.n_bins + 1] + codes[ref.n_bins + 2])
            out["out_of_range_rate"] = _round(outside / present)
        elif isinstance(ref, CategoricalReference) and present and ref.known is not None:
            out["unseen_rate"] = _round(int(codes[len(ref.levels) + 1]) / present)
        if detail:
            shares = current.tolist() if rows else None
            out["distribution"] = {"bins": ref.labels, "reference": ref.shares.tolist(),
                                   "current": shares}
        return out

    def _accuracy(self, mean_conf: float | None, conf_rows: int) -> dict[str, Any]:
        assert self.profile is not None and self.profile.classifier is not None
        clf = self.profile.classifier
        trusted = clf.ece is not None and clf.ece <= ECE_TRUSTED
        if clf.ece is None:
            note = "the model gives no probabilities: accuracy cannot be estimated without labels"
        elif trusted:
            note = f"calibrated on the test part (ECE {clf.ece:.3f} <= {ECE_TRUSTED} on "
            note += f"{clf.rows} rows): the estimate can be trusted under a feature shift"
        else:
            note = f"not calibrated on the test part (ECE {clf.ece:.3f} > {ECE_TRUSTED} on "
            note += f"{clf.rows} rows): read the estimate as a trend, not a level"
        change = None
        if mean_conf is not None and clf.mean_confidence is not None:
            change = mean_conf - clf.mean_confidence
        return {
            "value": _round(mean_conf),
            "rows": conf_rows,
            "method": "confidence-based (CBPE): mean top-class probability",
            "test_accuracy": _round(clf.test_accuracy),
            "test_estimate": _round(clf.mean_confidence),
            "change_since_test": _round(change),
            "ece": _round(clf.ece),
            "ece_threshold": ECE_TRUSTED,
            "trustworthy": trusted,
            "assumption": _ASSUMPTION,
            "note": note,
        }

    def _no_reference(self) -> dict[str, Any]:
        with self._lock:
            seen = self._seen
        return {
            "drift": False,
            "drifted_features": [],
            "reference": None,
            "note": "no reference profile in this bundle; re-train it to monitor drift",
            "window": {
                "rows": seen, "min_rows": self.min_rows, "size": self.size, "judged": False,
                "seen": seen, "note": "no reference profile: drift is not judged",
            },
            "features": {},
            "prediction": None,
        }

    def prometheus_values(self) -> list[tuple[str, float, bool]]:
        """``(feature, score, drift)`` per monitored column, the prediction as
        ``PREDICTION_KEY``; the score is NaN until drift is judged (so a gauge never shows the
        noise of a few rows as a level)."""
        if self.profile is None:
            return []
        answer = self.report()
        judged = answer["window"]["judged"]
        items = [*answer["features"].items(), (PREDICTION_KEY, answer["prediction"])]
        return [
            (name, float(item["score"]) if judged else math.nan, bool(item["drift"]))
            for name, item in items
        ]

