"""The facts of an EDA report: column summaries, links to the target, and the warnings.

Everything here is computed on the full frame with vectorized pandas/numpy;
``mlservice.reports.eda`` builds the report from these pieces and draws the plots.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlservice.config import PreprocessingConfig

__all__ = [
    "LEAKAGE_THRESHOLD",
    "ColumnSummary",
    "EdaReport",
    "EdaWarning",
    "TargetAssociation",
    "associate",
    "find_warnings",
    "numeric_stats",
    "summarize_column",
]

#: An association with the target at or above this is reported as a leakage suspect.
LEAKAGE_THRESHOLD = 0.95
#: Warning kinds, most serious first (the order of the report).
# fmt: off
_SEVERITY = ("leakage", "post_outcome", "identifier", "target_missing", "constant", "duplicates",
             "imbalance", "high_cardinality", "missing")
# fmt: on
_HIGH_CARDINALITY = 50
_MIN_ROWS_PER_LEVEL = 5  # a categorical "determining" the target needs repeated levels
_HEAVY_MISSING = 0.5
_IMBALANCE_RATIO = 0.2
_MAX_CONTINGENCY_CELLS = 5_000_000
_ID_NAME = re.compile(r"(^|_)(id|uuid|guid|rowid|idx|index|key)$", re.IGNORECASE)
_ID_CAMEL = re.compile(r"[a-z]I[dD]$")
_POST_OUTCOME_NAME = re.compile(
    r"(_after$|^after_|outcome|result|^target_|_target$)", re.IGNORECASE
)


@dataclass
class EdaWarning:
    """One finding to act on; ``kind`` is leakage, identifier, post_outcome, constant,
    high_cardinality, missing, target_missing, duplicates or imbalance."""

    kind: str
    column: str | None
    message: str


@dataclass
class ColumnSummary:
    """Type and basic statistics of one column (on all rows)."""

    name: str
    type: str
    dtype: str
    n_missing: int
    missing_fraction: float
    n_unique: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    median: float | None = None
    max: float | None = None
    top: str | None = None
    top_share: float | None = None


@dataclass
class TargetAssociation:
    """Strength of a feature's link to the target, in [0, 1].

    ``measure``: ``|r|`` (numeric feature, numeric target: the larger of |Pearson| and
    |Spearman|), ``eta`` (correlation ratio, numeric vs categorical) or ``cramers_v``.
    """

    feature: str
    measure: str
    value: float
    pearson: float | None = None
    spearman: float | None = None


@dataclass
class EdaReport:
    """Facts about a dataset, the warnings drawn from them, and the rendered plots."""

    target: str
    task: str
    n_rows: int
    n_columns: int
    columns: list[ColumnSummary]
    n_duplicates: int
    target_missing: int
    class_counts: dict[str, int] | None
    target_stats: dict[str, float] | None
    associations: list[TargetAssociation]
    warnings: list[EdaWarning]
    sample_rows: int
    seed: int
    created_at: str
    plots: dict[str, bytes] = field(default_factory=dict, repr=False)
    source: str | None = None
    data_fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.columns}

    @property
    def missing(self) -> dict[str, int]:
        """Missing values per column, only columns that have some, most first."""
        ranked = sorted(self.columns, key=lambda c: -c.n_missing)
        return {c.name: c.n_missing for c in ranked if c.n_missing}

    @property
    def class_shares(self) -> dict[str, float] | None:
        if self.class_counts is None:
            return None
        total = sum(self.class_counts.values()) or 1
        return {k: v / total for k, v in self.class_counts.items()}

    @property
    def sampled(self) -> bool:
        return self.sample_rows < self.n_rows

    @property
    def sampling_note(self) -> str:
        if not self.sampled:
            return f"Plots and statistics use all {self.n_rows:,} rows."
        return (
            f"Plots are drawn from a random sample of {self.sample_rows:,} of {self.n_rows:,} rows "
            f"(seed {self.seed}); statistics and warnings use all rows."
        )

    def warnings_of(self, kind: str) -> list[EdaWarning]:
        return [w for w in self.warnings if w.kind == kind]


def numeric_stats(values: pd.Series) -> dict[str, float]:
    finite = values[np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))]
    if finite.empty:
        return {}
    stats = {
        "mean": finite.mean(),
        "std": finite.std(),
        "min": finite.min(),
        "median": finite.median(),
        "max": finite.max(),
        "skew": finite.skew(),
    }
    return {k: float(v) for k, v in stats.items() if v == v}  # drop NaN (e.g. std of one row)


def summarize_column(series: pd.Series, kind: str) -> ColumnSummary:
    n_missing = int(series.isna().sum())
    summary = ColumnSummary(
        name=str(series.name),
        type=kind,
        dtype=str(series.dtype),
        n_missing=n_missing,
        missing_fraction=n_missing / len(series) if len(series) else 0.0,
        n_unique=int(series.nunique(dropna=True)),
    )
    if kind == "numeric":
        stats = numeric_stats(pd.to_numeric(series, errors="coerce"))
        for key in ("mean", "std", "min", "median", "max"):
            setattr(summary, key, stats.get(key))
    elif summary.n_unique:
        counts = series.value_counts(dropna=True)
        summary.top = str(counts.index[0])
        summary.top_share = float(counts.iloc[0] / counts.sum())
    return summary


# --------------------------------------------------------------------------- associations


def associate(
    x: pd.Series, kind: str, y: pd.Series | None, classification: bool
) -> TargetAssociation | None:
    if y is None or kind not in ("numeric", "categorical", "boolean"):
        return None
    name = str(x.name)
    keep = x.notna() & y.notna()
    if keep.sum() < 3:
        return None
    x, y = x[keep], y[keep]
    if kind != "numeric" and x.nunique() * _MIN_ROWS_PER_LEVEL > len(x):
        return None  # nearly one row per level: any target looks "determined" by it
    if kind == "numeric":
        xn = pd.to_numeric(x, errors="coerce").astype(float)
        if classification:
            value = _eta(xn, y)
            return None if value is None else TargetAssociation(name, "eta", value)
        pearson = _corr(xn, y.astype(float))
        spearman = _corr(xn.rank(), y.rank())
        finite = [abs(v) for v in (pearson, spearman) if v is not None]
        if not finite:
            return None
        return TargetAssociation(name, "|r|", max(finite), pearson, spearman)
    if classification:
        value = _cramers_v(x, y)
        return None if value is None else TargetAssociation(name, "cramers_v", value)
    value = _eta(y.astype(float), x)
    return None if value is None else TargetAssociation(name, "eta", value)


def _corr(a: pd.Series, b: pd.Series) -> float | None:
    a_values, b_values = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    ok = np.isfinite(a_values) & np.isfinite(b_values)
    if ok.sum() < 3 or a_values[ok].std() == 0 or b_values[ok].std() == 0:
        return None
    return float(np.corrcoef(a_values[ok], b_values[ok])[0, 1])


def _eta(values: pd.Series, groups: pd.Series) -> float | None:
    """Correlation ratio: share of the variance of ``values`` explained by ``groups``."""
    numbers = values.to_numpy(dtype=float)
    ok = np.isfinite(numbers)
    numbers = numbers[ok]
    codes, _ = pd.factorize(groups[ok])
    total = float(((numbers - numbers.mean()) ** 2).sum()) if numbers.size else 0.0
    if total == 0.0:
        return None
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=numbers) / np.maximum(counts, 1)
    between = float((counts * (means - numbers.mean()) ** 2).sum())
    return math.sqrt(min(max(between / total, 0.0), 1.0))


def _contingency(x: pd.Series, y: pd.Series) -> np.ndarray | None:
    x_codes, x_levels = pd.factorize(x)
    y_codes, y_levels = pd.factorize(y)
    if len(x_levels) * len(y_levels) > _MAX_CONTINGENCY_CELLS:
        return None
    flat = np.bincount(x_codes * len(y_levels) + y_codes, minlength=len(x_levels) * len(y_levels))
    return flat.reshape(len(x_levels), len(y_levels)).astype(float)


def _cramers_v(x: pd.Series, y: pd.Series) -> float | None:
    table = _contingency(x, y)
    if table is None or min(table.shape) < 2:
        return None
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(min(chi2 / n / (min(table.shape) - 1), 1.0))


def _determines(x: pd.Series, y: pd.Series) -> float | None:
    """Goodman–Kruskal lambda: how much knowing ``x`` cuts the errors of guessing ``y``."""
    table = _contingency(x, y)
    if table is None or table.shape[1] < 2:
        return None
    n = table.sum()
    baseline = table.sum(axis=0).max() / n
    if baseline >= 1.0:
        return None
    return float((table.max(axis=1).sum() / n - baseline) / (1.0 - baseline))


# --------------------------------------------------------------------------- warnings


def _cardinality_warning(
    name: str, levels: int, preprocessing: PreprocessingConfig | None
) -> EdaWarning | None:
    """Many levels: name the encoding training will choose for the column, and the override."""
    config = (preprocessing or PreprocessingConfig()).categorical
    choice = config.columns.get(name, config.encode)
    if choice == "auto":
        choice = "onehot" if levels <= config.max_onehot_levels else "target"
    if levels <= _HIGH_CARDINALITY and (choice != "target" or levels <= config.max_onehot_levels):
        return None
    if choice == "target":
        text = (
            f"`{name}` has {levels:,} categories: training will target-encode it (more than "
            f"{config.max_onehot_levels} levels; cross-fitted, rare levels shrunk to the mean, "
            f"unseen levels get the target's mean); set preprocessing.categorical.columns: "
            f"{{{name}: onehot}} to one-hot it instead"
        )
    elif choice == "onehot":
        text = (
            f"`{name}` has {levels:,} categories and is set to one-hot: that makes {levels:,} "
            f"columns; remove it from preprocessing.categorical.columns (auto) to target-encode it"
        )
    else:
        text = f"`{name}` has {levels:,} categories: training will encode it as {choice}"
    return EdaWarning("high_cardinality", name, text)


def find_warnings(
    frame: pd.DataFrame, report: EdaReport, preprocessing: PreprocessingConfig | None = None
) -> list[EdaWarning]:
    found: list[EdaWarning] = []
    target, n = report.target, report.n_rows
    by_name = {a.feature: a for a in report.associations}
    y_missing = frame[target].isna()
    for col in report.columns:
        if col.name == target:
            continue
        series = frame[col.name]
        identifier = _identifier_reason(series, col, n)
        if identifier:
            found.append(EdaWarning("identifier", col.name, f"`{col.name}` {identifier}"))
        leak = _leak_reason(series, col, by_name.get(col.name), frame[target], report.task, n)
        if leak and not identifier:
            found.append(EdaWarning("leakage", col.name, f"`{col.name}` {leak}"))
        if _POST_OUTCOME_NAME.search(col.name):
            found.append(
                EdaWarning(
                    "post_outcome",
                    col.name,
                    f"`{col.name}`: the name suggests a value known only after the outcome; "
                    "drop it (data.drop) unless it is available at prediction time",
                )
            )
        elif y_missing.any() and col.n_missing and series.isna().equals(y_missing):
            found.append(
                EdaWarning(
                    "post_outcome",
                    col.name,
                    f"`{col.name}` is missing exactly when the target is missing "
                    f"({col.n_missing} rows): it is probably recorded with the outcome",
                )
            )
        if col.n_unique <= 1:
            value = series.dropna().iloc[0] if col.n_unique else None
            value = value.item() if isinstance(value, np.generic) else value
            what = "is entirely missing" if value is None else f"has one value ({value!r})"
            found.append(
                EdaWarning("constant", col.name, f"`{col.name}` {what}; add it to data.drop")
            )
        if col.type == "categorical" and not identifier:
            warning = _cardinality_warning(col.name, col.n_unique, preprocessing)
            if warning is not None:
                found.append(warning)
        if col.n_missing:
            heavy = " — more than half; consider dropping it" * (
                col.missing_fraction > _HEAVY_MISSING
            )
            found.append(
                EdaWarning(
                    "missing",
                    col.name,
                    f"`{col.name}` has {col.n_missing:,} missing values "
                    f"({col.missing_fraction:.1%}){heavy}; training imputes them",
                )
            )
    found.extend(_frame_warnings(report))
    return sorted(found, key=lambda w: _SEVERITY.index(w.kind))


def _frame_warnings(report: EdaReport) -> list[EdaWarning]:
    found = []
    if report.target_missing:
        found.append(
            EdaWarning(
                "target_missing",
                report.target,
                f"the target `{report.target}` is missing in {report.target_missing:,} rows; "
                "training drops them",
            )
        )
    if report.n_duplicates:
        found.append(
            EdaWarning(
                "duplicates",
                None,
                f"{report.n_duplicates:,} duplicate rows ({report.n_duplicates / report.n_rows:.1%}"
                "): copies can land in both train and test and inflate test metrics",
            )
        )
    shares = report.class_shares or {}
    if len(shares) >= 2:
        small, large = min(shares, key=shares.__getitem__), max(shares, key=shares.__getitem__)
        if shares[small] < _IMBALANCE_RATIO * shares[large]:
            found.append(
                EdaWarning(
                    "imbalance",
                    report.target,
                    f"class imbalance: '{small}' is {shares[small]:.1%} of the rows versus "
                    f"{shares[large]:.1%} for '{large}'; watch per-class recall, not accuracy",
                )
            )
    return found


def _identifier_reason(series: pd.Series, col: ColumnSummary, n: int) -> str | None:
    if n < 2 or col.type in ("text", "datetime"):
        return None
    unique_per_row = col.n_missing == 0 and col.n_unique == n
    named = bool(_ID_NAME.search(col.name) or _ID_CAMEL.search(col.name))
    if named and col.n_unique >= 0.5 * n:
        share = col.n_unique / n
        return f"looks like an identifier (by its name; {share:.0%} unique): add it to data.drop"
    if not unique_per_row:
        return None
    if col.type == "numeric":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        integral = bool(np.all(np.mod(values, 1) == 0))
        sequence = bool(
            np.all(np.diff(values) > 0) or values.max() - values.min() + 1 == len(values)
        )
        if not (integral and sequence):
            return None
    return "is unique per row, like an identifier: it cannot generalize; add it to data.drop"


def _leak_reason(
    series: pd.Series,
    col: ColumnSummary,
    assoc: TargetAssociation | None,
    y: pd.Series,
    task: str,
    n: int,
) -> str | None:
    categorical = col.type in ("categorical", "boolean")
    repeated = col.n_unique * _MIN_ROWS_PER_LEVEL <= n
    if assoc is not None and assoc.value >= LEAKAGE_THRESHOLD and (repeated or not categorical):
        label = {"|r|": "correlation", "eta": "correlation ratio", "cramers_v": "Cramér's V"}
        return (
            f"is almost identical to the target ({label[assoc.measure]} {assoc.value:.3f}): "
            "a leakage suspect; check it is known before the outcome"
        )
    if categorical and repeated and task == "classification":
        keep = series.notna() & y.notna()
        lam = _determines(series[keep], y[keep])
        if lam is not None and lam >= LEAKAGE_THRESHOLD:
            return (
                f"determines the target almost perfectly (lambda {lam:.3f}): a leakage suspect; "
                "check it is known before the outcome"
            )
    return None
