"""The config file (``configs/model_config.yaml``) as Pydantic models, and ``load_config``.

Every problem is reported at once with its key path and a hint (``ConfigError.problems``); unknown
keys are errors with a did-you-mean. Checks that need other layers (estimator params) are passed in
as ``extra_checks`` so this module imports only pydantic and yaml.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlservice.errors import ConfigError

__all__ = [
    "DEFAULT_TARGETS",
    "METRIC_ALIASES",
    "TASK_METRICS",
    "CVConfig",
    "Config",
    "DataConfig",
    "LLMConfig",
    "ModelConfig",
    "MonitoringConfig",
    "OutputConfig",
    "PreprocessingConfig",
    "RankingConfig",
    "ReadOptions",
    "SearchParam",
    "ServingConfig",
    "SplitConfig",
    "Target",
    "TimeSeriesConfig",
    "TrackingConfig",
    "apply_overrides",
    "canonical_metric",
    "config_hash",
    "load_config",
    "parse_config",
    "parse_target",
    "reject_wildcard_origins",
]

Task = Literal["classification", "regression", "time_series", "ranking"]
ColumnType = Literal["numeric", "categorical", "boolean", "datetime", "text"]

#: Metrics each task computes on the test set (and so may appear in ``targets``).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"),
    "regression": ("mse", "rmse", "mae", "r2", "mape"),
    "time_series": ("mape", "directional_accuracy", "rmse", "mae"),
    "ranking": ("ndcg_at_k", "map_at_k"),
}

#: Targets used when the config has none.
DEFAULT_TARGETS: dict[str, dict[str, str]] = {
    "classification": {"accuracy": ">= 0.85", "f1": ">= 0.80", "roc_auc": ">= 0.85"},
    "regression": {"r2": ">= 0.75", "mape": "< 10%"},
    "time_series": {"mape": "< 10%", "directional_accuracy": ">= 60%"},
    "ranking": {"ndcg_at_k": ">= 0.7", "map_at_k": ">= 0.5"},
}

DEFAULT_MODEL: dict[str, str] = {
    "classification": "hist_gradient_boosting",
    "regression": "hist_gradient_boosting",
    "time_series": "hist_gradient_boosting",
    "ranking": "lightgbm",
}

DEFAULT_SPLIT: dict[str, str] = {
    "classification": "stratified",
    "regression": "random",
    "time_series": "time",
    "ranking": "group",
}

#: Other spellings of metric names accepted in ``targets`` (scikit-learn function names and
#: common variants); the parsed target uses the canonical name and remembers the spelling.
METRIC_ALIASES: dict[str, str] = {
    "accuracy_score": "accuracy",
    "acc": "accuracy",
    "precision_score": "precision",
    "recall_score": "recall",
    "f1_score": "f1",
    "f1_weighted": "f1",
    "auc_roc": "roc_auc",
    "roc_auc_score": "roc_auc",
    "auc": "roc_auc",
    "logloss": "log_loss",
    "cross_entropy": "log_loss",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "mean_absolute_error": "mae",
    "r2_score": "r2",
    "r_squared": "r2",
    "mean_absolute_percentage_error": "mape",
    "ndcg": "ndcg_at_k",
    "ndcg@k": "ndcg_at_k",
    "map": "map_at_k",
    "map@k": "map_at_k",
}

_TARGET_RE = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Target(_Strict):
    """One parsed target, e.g. ``">= 0.85"`` or ``"< 10%"`` (stored as 0.10).

    ``metric`` is the canonical name; ``alias`` the spelling of the config when it differed
    (``f1_score`` for ``f1``).
    """

    metric: str
    op: Literal[">=", "<=", ">", "<"]
    value: float
    text: str
    alias: str | None = None

    def is_met(self, observed: float | None) -> bool:
        """Whether ``observed`` satisfies the target (a missing or NaN value never does)."""
        if observed is None or observed != observed:  # NaN
            return False
        return {
            ">=": observed >= self.value,
            "<=": observed <= self.value,
            ">": observed > self.value,
            "<": observed < self.value,
        }[self.op]


#: Words people write instead of an operator, longest first.
_WORD_OPS = (
    ("greater than or equal to", ">="),
    ("less than or equal to", "<="),
    ("greater than", ">"),
    ("more than", ">"),
    ("at least", ">="),
    ("less than", "<"),
    ("at most", "<="),
    ("above", ">"),
    ("below", "<"),
    ("=>", ">="),
    ("=<", "<="),
)


def canonical_metric(name: str) -> str:
    """The metric an alias stands for (``f1_score``, ``F1`` -> ``f1``); unknown names as is."""
    key = name.strip().lower()
    if key in METRIC_ALIASES:
        return METRIC_ALIASES[key]
    known = {metric for metrics in TASK_METRICS.values() for metric in metrics}
    return key if key in known else name


def _comparison_hint(text: str) -> str:
    """``'greater than 0.8'`` -> ``" ('> 0.8')"`` when replacing the words gives a comparison."""
    lowered = " ".join(text.lower().split())
    for words, op in _WORD_OPS:
        if lowered.startswith(words):
            candidate = f"{op} {lowered.removeprefix(words).strip()}"
            if _TARGET_RE.match(candidate):
                return f"; did you mean {candidate!r}?"
    return ""


def parse_target(metric: str, text: str | float) -> Target:
    """Parse ``">= 0.85"`` / ``"< 10%"``; a bare number means ``>=``; aliases are resolved."""
    raw = f">= {text}" if isinstance(text, int | float) else str(text)
    match = _TARGET_RE.match(raw)
    if not match:
        raise ValueError(
            f"target {text!r} is not a comparison; write it like '>= 0.85', '< 0.3' or '< 10%'"
            + _comparison_hint(raw)
        )
    op, number, percent = match.groups()
    value = float(number) / (100.0 if percent else 1.0)
    canonical = canonical_metric(metric)
    alias = metric if canonical != metric else None
    return Target(metric=canonical, op=op, value=value, text=raw.strip(), alias=alias)


_SEP_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


class ReadOptions(_Strict):
    """How a CSV file is read (``data.read``); unset options are detected from the file.

    ``sep`` unset: sniffed among ``, ; tab |``. ``encoding`` unset: UTF-8, or Windows-1252 when
    the bytes are not valid UTF-8.
    """

    sep: str | None = Field(None, description="column separator: ',', ';', tab ('\\t') or '|'")
    decimal: str = Field(".", description="decimal mark: '.' or ','")
    thousands: str | None = Field(None, description="thousands separator, e.g. '.' or ' '")
    encoding: str | None = Field(None, description="e.g. 'utf-8', 'cp1252', 'latin-1'")
    quotechar: str = '"'
    na_values: list[str] | None = Field(None, description="extra strings that mean missing")

    @field_validator("sep", mode="before")
    @classmethod
    def _sep_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _SEP_NAMES.get(value.lower(), value)
        return value

    @field_validator("sep", "decimal", "thousands", "quotechar")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be one character (write a tab as '\\t'), got {value!r}")
        return value

    @field_validator("decimal")
    @classmethod
    def _decimal_mark(cls, value: str) -> str:
        if value not in ".,":
            raise ValueError(f"must be '.' or ',', got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(
                f"unknown encoding (use e.g. 'utf-8', 'cp1252' or 'latin-1'), got {value!r}"
            ) from None

    @model_validator(mode="after")
    def _distinct_marks(self) -> ReadOptions:
        marks = {"sep": self.sep, "decimal": self.decimal, "thousands": self.thousands}
        marks["quotechar"] = self.quotechar
        seen: dict[str, str] = {}
        for name, mark in marks.items():
            if mark is None:
                continue
            if mark in seen:
                raise ValueError(f"{seen[mark]} and {name} must differ, got {mark!r} for both")
            seen[mark] = name
        return self

    def given(self) -> dict[str, Any]:
        """The options the config sets (not the defaults), as ``pandas.read_csv`` keywords."""
        return self.model_dump(exclude_unset=True)


class DataConfig(_Strict):
    source: str = Field(description=".csv | .parquet | builtin:<sklearn dataset name>")
    target: str
    features: list[str] | None = None
    drop: list[str] = Field(default_factory=list)
    time_column: str | None = None
    group_column: str | None = None
    column_types: dict[str, ColumnType] = Field(
        default_factory=dict, description="override the inferred type of a column"
    )
    read: ReadOptions | None = Field(
        None, description="CSV reader options (sep, decimal, thousands, encoding, ...)"
    )

    @field_validator("source")
    @classmethod
    def _source_kind(cls, value: str) -> str:
        if value.startswith("builtin:"):
            if not value.removeprefix("builtin:"):
                raise ValueError("builtin: needs a dataset name, e.g. 'builtin:breast_cancer'")
            return value
        if Path(value).suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise ValueError(
                f"unsupported data file {value!r}; use a .csv or .parquet file or builtin:<name>"
            )
        return value


class SplitConfig(_Strict):
    strategy: Literal["random", "stratified", "time", "group"] | None = None
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 42


class NumericPreprocessing(_Strict):
    impute: Literal["mean", "median", "most_frequent", "constant", "none"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"


CategoricalEncoding = Literal["auto", "onehot", "target", "ordinal"]


class CategoricalPreprocessing(_Strict):
    """How categorical (and boolean) columns are imputed and encoded.

    ``encode: auto`` chooses per column from its number of levels in the training part:
    one-hot up to ``max_onehot_levels``, target encoding (cross-fitted, unseen levels get the
    target's mean) above. ``columns`` overrides the choice for named columns.
    """

    impute: Literal["most_frequent", "constant", "none"] = "most_frequent"
    encode: CategoricalEncoding = "auto"
    max_onehot_levels: int = Field(20, ge=1, le=1000)
    columns: dict[str, CategoricalEncoding] = Field(default_factory=dict)


class TextPreprocessing(_Strict):
    embed: Literal["tfidf", "minilm"] = "tfidf"
    max_features: int = Field(2000, gt=0)


class PreprocessingConfig(_Strict):
    numeric: NumericPreprocessing = Field(default_factory=lambda: NumericPreprocessing())
    categorical: CategoricalPreprocessing = Field(
        default_factory=lambda: CategoricalPreprocessing()
    )
    text: TextPreprocessing = Field(default_factory=lambda: TextPreprocessing())


class ModelConfig(_Strict):
    type: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class SearchParam(_Strict):
    """One search dimension: exactly one of ``int``, ``float`` or ``categorical``."""

    int_: Annotated[list[int] | None, Field(alias="int")] = None
    float_: Annotated[list[float] | None, Field(alias="float")] = None
    categorical: list[Any] | None = None
    log: bool = False

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> SearchParam:
        kinds = [k for k in ("int_", "float_", "categorical") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of int: [lo, hi], float: [lo, hi], categorical: [..]"
            )
        bounds = self.int_ if self.int_ is not None else self.float_
        if bounds is not None:
            if len(bounds) != 2 or bounds[0] >= bounds[1]:
                raise ValueError(f"bounds must be [low, high] with low < high, got {bounds!r}")
            if self.log and bounds[0] <= 0:
                raise ValueError(f"log scale needs low > 0, got {bounds[0]!r}")
        if self.categorical is not None and not self.categorical:
            raise ValueError("categorical needs at least one choice")
        return self


def reject_wildcard_origins(value: list[str]) -> list[str]:
    """CORS origins must be listed: ``*`` would open the API to every site."""
    if "*" in value:
        raise ValueError("'*' opens the API to every site; list the origins you serve")
    return value


class CVConfig(_Strict):
    folds: int = Field(5, ge=2, le=50)
    enabled: bool = True


class TimeSeriesConfig(_Strict):
    lags: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 2, 3, 7])
    rolling: list[Annotated[int, Field(gt=1)]] = Field(default_factory=list)
    calendar: bool = True
    horizon: int = Field(1, gt=0)


class RankingConfig(_Strict):
    k: int = Field(10, gt=0)


class TrackingConfig(_Strict):
    enabled: bool = True
    uri: str = "sqlite:///mlflow/mlflow.db"
    experiment: str | None = None
    timeout_s: float = Field(10.0, gt=0, description="per HTTP request to a tracking server")
    register_model: bool = True


class OutputConfig(_Strict):
    dir: Path = Path("data/models")


class ServingConfig(_Strict):
    cors_origins: list[str] = Field(default_factory=list)
    api_keys_env: str = "MLSERVICE_API_KEYS"
    max_batch_size: int = Field(10_000, gt=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    runtime: Literal["auto", "onnx", "sklearn"] = "auto"
    timeout_s: float = Field(30.0, gt=0)

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        return reject_wildcard_origins(value)


class MonitoringConfig(_Strict):
    """Drift monitoring of the served model against the training data's reference profile.

    ``window``: the most recent rows compared; ``min_rows``: rows needed before drift is
    judged; ``psi_threshold``: the population stability index above which a feature (or the
    prediction) drifts (0.1 moderate, 0.2 significant; healthy traffic measured below 0.08).
    """

    enabled: bool = True
    window: int = Field(10_000, ge=10, le=1_000_000)
    min_rows: int = Field(500, ge=1)
    psi_threshold: float = Field(0.2, gt=0, le=10)

    @model_validator(mode="after")
    def _min_rows_fit(self) -> MonitoringConfig:
        if self.min_rows > self.window:
            raise ValueError(
                f"min_rows ({self.min_rows}) must not exceed window ({self.window})"
            )
        return self


class LLMConfig(_Strict):
    provider: Literal["openai", "none"] = "openai"
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)


class Config(_Strict):
    """The whole config file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    version: str = Field("1.0.0", pattern=r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?$")
    task: Task
    description: str | None = Field(None, description="what the model is for (model card)")
    data: DataConfig
    split: SplitConfig = Field(default_factory=lambda: SplitConfig())
    preprocessing: PreprocessingConfig = Field(default_factory=lambda: PreprocessingConfig())
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    search: dict[str, SearchParam] = Field(default_factory=dict)
    cv: CVConfig = Field(default_factory=lambda: CVConfig())
    targets: dict[str, str | float] | None = None
    time_series: TimeSeriesConfig = Field(default_factory=lambda: TimeSeriesConfig())
    ranking: RankingConfig = Field(default_factory=lambda: RankingConfig())
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig())
    output: OutputConfig = Field(default_factory=lambda: OutputConfig())
    serving: ServingConfig = Field(default_factory=lambda: ServingConfig())
    llm: LLMConfig = Field(default_factory=lambda: LLMConfig())
    monitoring: MonitoringConfig = Field(default_factory=lambda: MonitoringConfig())

    @model_validator(mode="after")
    def _fill_task_defaults(self) -> Config:
        if self.model.type is None:
            self.model.type = DEFAULT_MODEL[self.task]
        if self.split.strategy is None:
            self.split.strategy = DEFAULT_SPLIT[self.task]  # type: ignore[assignment]
        return self

    @property
    def model_type(self) -> str:
        assert self.model.type is not None  # filled by the validator
        return self.model.type

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def parsed_targets(self) -> list[Target]:
        """Targets of the config, or the task defaults when it has none."""
        raw = self.targets if self.targets is not None else DEFAULT_TARGETS[self.task]
        return [parse_target(metric, text) for metric, text in raw.items()]


def _target_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown metrics, repeated metrics and target texts that are not comparisons.

    With an invalid task (reported by pydantic) the texts are still checked, and metric names
    against every task's metrics, so one run lists every independent problem.
    """
    task = raw.get("task")
    targets = raw.get("targets")
    if not isinstance(targets, dict):
        return []
    if task in TASK_METRICS:
        known, scope = TASK_METRICS[task], f"for task {task!r}"
    else:
        known = tuple(dict.fromkeys(m for metrics in TASK_METRICS.values() for m in metrics))
        scope = "of any task"
    problems: list[tuple[str, str]] = []
    first_key: dict[str, str] = {}
    for metric, text in targets.items():
        path = f"targets.{metric}"
        canonical = canonical_metric(str(metric))
        if canonical not in known:
            hint = _did_you_mean(str(metric), [*known, *METRIC_ALIASES])
            problems.append((path, f"unknown metric {scope}{hint}; known: {list(known)}"))
        elif canonical in first_key:
            problems.append(
                (
                    path,
                    f"{metric!r} and {first_key[canonical]!r} are both the metric "
                    f"{canonical!r}; keep one target per metric",
                )
            )
        else:
            first_key[canonical] = str(metric)
        if not isinstance(text, str | int | float):
            continue  # a wrong type is reported by pydantic
        try:
            parse_target(str(metric), text)
        except ValueError as exc:
            problems.append((path, str(exc)))
    return problems


def _read_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    data = raw.get("data")
    if not isinstance(data, dict) or not data.get("read"):
        return []
    source = str(data.get("source") or "")
    if source.startswith("builtin:") or Path(source).suffix.lower() in {".parquet", ".pq"}:
        return [
            ("data.read", f"reader options apply to CSV files only, not {source!r}; remove them")
        ]
    return []


def _task_problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    assert isinstance(data, dict)
    task = raw.get("task")
    problems = []
    if task == "time_series" and not data.get("time_column"):
        problems.append(("data.time_column", "required for task time_series; name the date column"))
    if task == "ranking" and not data.get("group_column"):
        problems.append(
            ("data.group_column", "required for task ranking; name the query id column")
        )
    split = raw.get("split") if isinstance(raw.get("split"), dict) else {}
    assert isinstance(split, dict)
    if split.get("strategy") == "group" and not data.get("group_column"):
        problems.append(("split.strategy", "'group' needs data.group_column"))
    if split.get("strategy") == "time" and not data.get("time_column"):
        problems.append(("split.strategy", "'time' needs data.time_column"))
    if split.get("strategy") == "stratified" and task not in (None, "classification"):
        problems.append(("split.strategy", f"'stratified' only fits classification, not {task!r}"))
    return problems


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names (and aliases) allowed at the parent of ``loc`` in the Config tree."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(model, dict):  # a key of a dict[str, Model] field: step into the Model
            model = model["value"]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        annotation = _without_none(field.annotation)
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is dict and len(args) == 2 and isinstance(args[1], type):
            model = {"value": args[1]}
        else:
            model = annotation if isinstance(annotation, type) else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (so optional sections get their allowed keys listed too)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else annotation


def _format_pydantic(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if len(loc) == 3 and loc[0] == "targets":
            # one problem per target, not one per member of ``str | float``
            path = f"targets.{loc[1]}"
            msg = f"must be a comparison like '>= 0.85' or a number, got {err.get('input')!r}"
        elif kind == "extra_forbidden":
            allowed = _fields_at(loc)
            hint = _did_you_mean(str(loc[-1]), allowed)
            msg = f"unknown key{hint}; allowed here: {', '.join(allowed)}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "literal_error":
            got = err.get("input")
            expected = err.get("ctx", {}).get("expected", "")
            hint = _did_you_mean(str(got), re.findall(r"'([^']+)'", expected))
            msg = f"must be one of {expected}, got {got!r}{hint}"
        else:
            text = err["msg"].removeprefix("Value error, ")
            msg = text if ", got " in text else f"{text}, got {err.get('input')!r}"
        problems.append((path, msg))
    return problems


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; create one with `mlservice init`")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides (value parsed as YAML) to a raw config dict."""
    result = json.loads(json.dumps(raw, default=str))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} must look like key.path=value")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = _parse_override_value(value)
    return result


def _parse_override_value(value: str) -> Any:
    if not value.strip():
        return None
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:  # e.g. ">= 0.9" is not YAML but is a fine target string
        return value


ExtraCheck = Callable[[dict[str, Any]], list[tuple[str, str]]]


def parse_config(
    raw: dict[str, Any], *, source: str = "config", extra_checks: Iterable[ExtraCheck] = ()
) -> Config:
    """Validate a raw mapping; raise ``ConfigError`` listing every problem."""
    problems: list[tuple[str, str]] = []
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_format_pydantic(exc))
    problems.extend(_target_problems(raw))
    problems.extend(_task_problems(raw))
    problems.extend(_read_problems(raw))
    for check in extra_checks:
        problems.extend(check(raw))
    if problems or config is None:
        unique = list(dict.fromkeys(problems))
        raise ConfigError(f"invalid config {source!r}", unique)
    return config


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    *,
    extra_checks: Iterable[ExtraCheck] = (),
) -> Config:
    """Read, override and validate a YAML config file."""
    path = Path(path)
    raw = apply_overrides(_read_yaml(path), overrides)
    return parse_config(raw, source=str(path), extra_checks=extra_checks)


def config_hash(config: Config) -> str:
    """sha256 of the validated config, stable across key order."""
    payload = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
