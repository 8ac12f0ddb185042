"""Tests of mlservice.config: parsing, every problem with its key path, targets, overrides."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlservice.config import (
    DEFAULT_TARGETS,
    TASK_METRICS,
    Config,
    apply_overrides,
    config_hash,
    load_config,
    parse_config,
    parse_target,
)
from mlservice.errors import ConfigError, MlserviceError
from mlservice.models import config_checks


def _raw(**top: Any) -> dict[str, Any]:
    """The smallest valid raw config; keyword arguments replace top-level keys."""
    raw: dict[str, Any] = {
        "name": "demo",
        "task": "classification",
        "data": {"source": "data/raw/x.csv", "target": "y"},
    }
    raw.update(top)
    return raw


def _problems(raw: dict[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, **kwargs)
    return info.value.problems


def _paths(raw: dict[str, Any], **kwargs: Any) -> list[str]:
    return [path for path, _ in _problems(raw, **kwargs)]


# --------------------------------------------------------------------------- valid configs


def test_conftest_config_is_valid(tmp_path: Path) -> None:
    from tests.conftest import make_config

    config = make_config(tmp_path)
    assert isinstance(config, Config)
    assert config.model_type == "random_forest"
    assert config.split.strategy == "stratified"
    assert config.cv.folds == 3
    assert config.experiment_name == "penguins-test"


@pytest.mark.parametrize(
    ("task", "data_extra", "model", "strategy"),
    [
        ("classification", {}, "hist_gradient_boosting", "stratified"),
        ("regression", {}, "hist_gradient_boosting", "random"),
        ("time_series", {"time_column": "date"}, "hist_gradient_boosting", "time"),
        ("ranking", {"group_column": "qid"}, "lightgbm", "group"),
    ],
)
def test_task_defaults_fill_model_and_split(
    task: str, data_extra: dict[str, str], model: str, strategy: str
) -> None:
    raw = _raw(task=task, data={"source": "x.parquet", "target": "y", **data_extra})
    config = parse_config(raw)
    assert config.model_type == model
    assert config.split.strategy == strategy
    assert config.split.test_size == 0.2
    assert config.split.seed == 42
    assert config.version == "1.0.0"


def test_explicit_model_and_split_are_kept() -> None:
    config = parse_config(
        _raw(model={"type": "ridge", "params": {"alpha": 2.0}}, split={"strategy": "random"})
    )
    assert config.model_type == "ridge"
    assert config.model.params == {"alpha": 2.0}
    assert config.split.strategy == "random"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            "classification",
            [("accuracy", ">=", 0.85), ("f1", ">=", 0.80), ("roc_auc", ">=", 0.85)],
        ),
        ("regression", [("r2", ">=", 0.75), ("mape", "<", 0.10)]),
        ("time_series", [("mape", "<", 0.10), ("directional_accuracy", ">=", 0.60)]),
        ("ranking", [("ndcg_at_k", ">=", 0.7), ("map_at_k", ">=", 0.5)]),
    ],
)
def test_default_targets_per_task_follow_spec(
    task: str, expected: list[tuple[str, str, float]]
) -> None:
    data = {"source": "x.csv", "target": "y", "time_column": "t", "group_column": "g"}
    split = {"strategy": "random"} if task == "regression" else {}
    config = parse_config(_raw(task=task, data=data, split=split))
    assert config.targets is None
    got = [(t.metric, t.op, t.value) for t in config.parsed_targets()]
    assert [(m, op) for m, op, _ in got] == [(m, op) for m, op, _ in expected]
    for (_, _, value), (_, _, want) in zip(got, expected, strict=True):
        assert value == pytest.approx(want)
    # every default target is a metric the task computes
    assert set(DEFAULT_TARGETS[task]) <= set(TASK_METRICS[task])


def test_config_targets_replace_the_defaults() -> None:
    config = parse_config(_raw(targets={"accuracy": ">= 0.9", "log_loss": "< 0.5"}))
    parsed = config.parsed_targets()
    assert [(t.metric, t.op, t.value) for t in parsed] == [
        ("accuracy", ">=", 0.9),
        ("log_loss", "<", 0.5),
    ]


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("text", "op", "value", "stored"),
    [
        ("< 10%", "<", 0.10, "< 10%"),
        ("<10%", "<", 0.10, "<10%"),
        (">= 60 %", ">=", 0.60, ">= 60 %"),
        (">= 0.85", ">=", 0.85, ">= 0.85"),
        ("<=0.3", "<=", 0.3, "<=0.3"),
        ("  > 1e-3 ", ">", 0.001, "> 1e-3"),
        ("> -0.5", ">", -0.5, "> -0.5"),
        (0.9, ">=", 0.9, ">= 0.9"),
        (1, ">=", 1.0, ">= 1"),
    ],
)
def test_parse_target(text: str | float, op: str, value: float, stored: str) -> None:
    target = parse_target("m", text)
    assert target.metric == "m"
    assert target.op == op
    assert target.value == pytest.approx(value)
    assert target.text == stored


@pytest.mark.parametrize("text", ["about 0.8", "== 0.5", "0.85", ">= abc", "", ">= 10%%", "=> 0.8"])
def test_parse_target_rejects_non_comparisons(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a comparison; write it like '>= 0.85'"):
        parse_target("accuracy", text)


@pytest.mark.parametrize(
    ("text", "observed", "met"),
    [
        (">= 0.85", 0.85, True),
        (">= 0.85", 0.8499, False),
        ("> 0.85", 0.85, False),
        ("> 0.85", 0.86, True),
        ("< 10%", 0.0999, True),
        ("< 10%", 0.10, False),
        ("<= 10%", 0.10, True),
        ("<= 0.3", 0.31, False),
        (">= 0.0", None, False),
        ("<= 1.0", None, False),
        (">= 0.0", math.nan, False),
        ("< 1.0", float("nan"), False),
        ("< 1.0", -math.inf, True),
    ],
)
def test_target_is_met(text: str, observed: float | None, met: bool) -> None:
    assert parse_target("m", text).is_met(observed) is met


def test_unknown_target_metric_and_bad_target_text_are_reported() -> None:
    problems = dict(_problems(_raw(targets={"acuracy": ">= 0.9", "f1": "about 0.8"})))
    assert set(problems) == {"targets.acuracy", "targets.f1"}
    assert (
        "unknown metric for task 'classification' (did you mean 'accuracy'?)"
        in problems["targets.acuracy"]
    )
    assert "known: ['accuracy', 'precision'" in problems["targets.acuracy"]
    assert "is not a comparison" in problems["targets.f1"]


@pytest.mark.parametrize(
    ("task", "written", "canonical"),
    [
        ("classification", "f1_score", "f1"),
        ("classification", "auc_roc", "roc_auc"),
        ("classification", "roc_auc_score", "roc_auc"),
        ("classification", "accuracy_score", "accuracy"),
        ("regression", "r2_score", "r2"),
        ("regression", "mean_absolute_error", "mae"),
        ("classification", "F1_Score", "f1"),
        ("classification", "Accuracy", "accuracy"),
    ],
)
def test_metric_aliases_parse_to_the_canonical_metric(
    task: str, written: str, canonical: str
) -> None:
    split = {"strategy": "random"} if task == "regression" else {}
    config = parse_config(_raw(task=task, split=split, targets={written: ">= 0.5"}))
    [target] = config.parsed_targets()
    assert (target.metric, target.alias, target.op, target.value) == (canonical, written, ">=", 0.5)
    assert canonical in TASK_METRICS[task]


def test_canonical_metric_names_have_no_alias() -> None:
    [target] = parse_config(_raw(targets={"f1": ">= 0.8"})).parsed_targets()
    assert (target.metric, target.alias) == ("f1", None)


def test_alias_of_another_task_and_unknown_names_are_refused() -> None:
    problems = dict(_problems(_raw(targets={"r2_score": ">= 0.5", "f1_scor": ">= 0.8"})))
    assert set(problems) == {"targets.r2_score", "targets.f1_scor"}
    assert problems["targets.r2_score"].startswith("unknown metric for task 'classification'")
    assert "(did you mean 'f1_score'?)" in problems["targets.f1_scor"]


def test_an_alias_and_its_metric_twice_is_one_problem() -> None:
    problems = _problems(_raw(targets={"f1": ">= 0.8", "f1_score": ">= 0.9"}))
    assert problems == [
        (
            "targets.f1_score",
            "'f1_score' and 'f1' are both the metric 'f1'; keep one target per metric",
        )
    ]


def test_words_instead_of_an_operator_get_a_suggestion() -> None:
    problems = dict(_problems(_raw(targets={"accuracy": "greater than 0.8", "f1": "at least 80%"})))
    assert problems["targets.accuracy"].endswith("did you mean '> 0.8'?")
    assert problems["targets.f1"].endswith("did you mean '>= 80%'?")


def test_a_bad_task_does_not_hide_other_problems() -> None:
    raw = _raw(
        task="clasification",
        split={"test_size": 1.5},
        targets={"accuracy": "greater than 0.8", "acuracy": ">= 0.5"},
    )
    problems = dict(_problems(raw))
    assert set(problems) == {"task", "split.test_size", "targets.accuracy", "targets.acuracy"}
    assert "did you mean 'classification'?" in problems["task"]
    assert problems["split.test_size"] == "Input should be less than 1, got 1.5"
    assert problems["targets.accuracy"].startswith(
        "target 'greater than 0.8' is not a comparison"
    )
    # with no valid task, metric names are checked against every task's metrics
    assert problems["targets.acuracy"].startswith("unknown metric of any task")


def test_a_target_of_the_wrong_type_is_one_problem() -> None:
    problems = _problems(_raw(targets={"f1": None, "accuracy": [0.9]}))
    assert problems == [
        ("targets.f1", "must be a comparison like '>= 0.85' or a number, got None"),
        ("targets.accuracy", "must be a comparison like '>= 0.85' or a number, got [0.9]"),
    ]


def test_targets_are_checked_against_the_task() -> None:
    problems = dict(_problems(_raw(task="regression", targets={"accuracy": ">= 0.9"})))
    assert list(problems) == ["targets.accuracy"]
    assert "unknown metric for task 'regression'" in problems["targets.accuracy"]
    assert "known: ['mse', 'rmse', 'mae', 'r2', 'mape']" in problems["targets.accuracy"]


# --------------------------------------------------------------------------- problems


def test_three_mistakes_are_reported_together_with_their_key_paths() -> None:
    raw = _raw(
        task="regression",
        modle={"type": "ridge"},  # typo of a top-level key
        split={"strategy": "randm"},  # bad enum value
        model={"type": "lightgbm", "params": {"learning_rate": -0.1}},
    )
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="cfg.yaml", extra_checks=[config_checks])
    problems = dict(info.value.problems)
    assert sorted(problems) == ["model.params.learning_rate", "modle", "split.strategy"]
    assert len(info.value.problems) == 3
    assert problems["modle"].startswith("unknown key (did you mean 'model'?); allowed here: name,")
    assert problems["split.strategy"] == (
        "must be one of 'random', 'stratified', 'time' or 'group', got 'randm' "
        "(did you mean 'random'?)"
    )
    assert problems["model.params.learning_rate"] == "must be > 0, got -0.1"
    message = str(info.value)
    assert message.startswith("invalid config 'cfg.yaml': 3 problems\n")
    assert "  modle: unknown key (did you mean 'model'?)" in message


def test_config_error_is_a_value_error_and_singular_noun() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_raw(cv={"folds": 1}))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MlserviceError)
    assert str(info.value).startswith("invalid config 'config': 1 problem\n")
    assert info.value.problems == [
        ("cv.folds", "Input should be greater than or equal to 2, got 1")
    ]


def test_unknown_nested_key_gets_did_you_mean_and_allowed_keys() -> None:
    raw = _raw(preprocessing={"numeric": {"scael": "none"}}, serving={"cors_origin": ["a"]})
    problems = dict(_problems(raw))
    assert problems["preprocessing.numeric.scael"] == (
        "unknown key (did you mean 'scale'?); allowed here: impute, scale"
    )
    assert problems["serving.cors_origin"].startswith(
        "unknown key (did you mean 'cors_origins'?); allowed here: cors_origins, api_keys_env"
    )


def test_unknown_key_without_close_match_has_no_hint() -> None:
    problems = dict(_problems(_raw(zzzzzz=1)))
    assert problems["zzzzzz"].startswith("unknown key; allowed here: name, version, task")
    assert "did you mean" not in problems["zzzzzz"]


def test_unknown_key_inside_a_search_param_lists_allowed_keys() -> None:
    problems = dict(_problems(_raw(search={"n": {"intt": [1, 2]}})))
    assert problems["search.n.intt"] == (
        "unknown key (did you mean 'int'?); allowed here: int, float, categorical, log"
    )


def test_bad_task_gets_did_you_mean_and_missing_keys_are_listed() -> None:
    problems = dict(_problems({"task": "classificaton"}))
    assert problems == {
        "name": "required key is missing",
        "data": "required key is missing",
        "task": "must be one of 'classification', 'regression', 'time_series' or 'ranking', "
        "got 'classificaton' (did you mean 'classification'?)",
    }


def test_missing_nested_key_path() -> None:
    assert _problems(_raw(data={"source": "x.csv"})) == [("data.target", "required key is missing")]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("data/x.txt", "unsupported data file 'data/x.txt'; use a .csv or .parquet file"),
        ("builtin:", "builtin: needs a dataset name"),
    ],
)
def test_bad_data_source(source: str, message: str) -> None:
    problems = dict(_problems(_raw(data={"source": source, "target": "y"})))
    assert list(problems) == ["data.source"]
    assert message in problems["data.source"]


@pytest.mark.parametrize("source", ["x.csv", "X.CSV", "a/b.parquet", "c.pq", "builtin:iris"])
def test_good_data_sources(source: str) -> None:
    assert parse_config(_raw(data={"source": source, "target": "y"})).data.source == source


def test_cors_wildcard_is_rejected() -> None:
    problems = dict(_problems(_raw(serving={"cors_origins": ["https://a.example", "*"]})))
    assert list(problems) == ["serving.cors_origins"]
    assert "'*' opens the API to every site" in problems["serving.cors_origins"]


def test_cors_explicit_origins_are_accepted() -> None:
    config = parse_config(_raw(serving={"cors_origins": ["https://a.example"]}))
    assert config.serving.cors_origins == ["https://a.example"]


def test_time_series_needs_time_column() -> None:
    problems = _problems(_raw(task="time_series"))
    assert problems == [("data.time_column", "required for task time_series; name the date column")]


def test_ranking_needs_group_column() -> None:
    problems = _problems(_raw(task="ranking"))
    assert problems == [
        ("data.group_column", "required for task ranking; name the query id column")
    ]


@pytest.mark.parametrize(
    ("task", "strategy", "message"),
    [
        ("classification", "group", "'group' needs data.group_column"),
        ("classification", "time", "'time' needs data.time_column"),
        ("regression", "stratified", "'stratified' only fits classification, not 'regression'"),
    ],
)
def test_split_strategy_must_fit_the_data(task: str, strategy: str, message: str) -> None:
    assert _problems(_raw(task=task, split={"strategy": strategy})) == [("split.strategy", message)]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"int": [5, 1]}, "bounds must be [low, high] with low < high, got [5, 1]"),
        ({"int": [1, 5], "float": [1.0, 2.0]}, "give exactly one of int: [lo, hi]"),
        ({"float": [0.0, 1.0], "log": True}, "log scale needs low > 0, got 0.0"),
        ({"categorical": []}, "categorical needs at least one choice"),
        ({}, "give exactly one of int: [lo, hi]"),
    ],
)
def test_bad_search_space(search: dict[str, Any], message: str) -> None:
    problems = dict(_problems(_raw(search={"max_depth": search})))
    assert list(problems) == ["search.max_depth"]
    assert problems["search.max_depth"].startswith(message)


def test_good_search_space_uses_aliases() -> None:
    config = parse_config(
        _raw(search={"n": {"int": [10, 50]}, "lr": {"float": [0.01, 0.3], "log": True}})
    )
    assert config.search["n"].int_ == [10, 50]
    assert config.search["lr"].float_ == [0.01, 0.3]
    assert config.search["lr"].log is True
    dumped = config.model_dump(mode="json", by_alias=True)["search"]
    assert dumped["n"]["int"] == [10, 50]


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "-bad"), ("name", "a b"), ("version", "1.0"), ("version", "v1.0.0")],
)
def test_name_and_version_patterns(key: str, value: str) -> None:
    problems = dict(_problems(_raw(**{key: value})))
    assert list(problems) == [key]
    assert "String should match pattern" in problems[key]
    assert repr(value) in problems[key]


def test_duplicate_problems_are_reported_once() -> None:
    def twice(_raw: dict[str, Any]) -> list[tuple[str, str]]:
        return [("model.params.x", "bad"), ("model.params.x", "bad")]

    assert _problems(_raw(), extra_checks=[twice]) == [("model.params.x", "bad")]


# --------------------------------------------------------------------------- overrides


def test_apply_overrides_sets_nested_keys_with_yaml_types() -> None:
    raw = _raw(model={"type": "ridge"})
    result = apply_overrides(
        raw,
        [
            "model.params.alpha=0.5",
            "cv.folds=3",
            "cv.enabled=false",
            "data.features=[a, b]",
            "tracking.experiment=my-exp",
            "data.group_column=",
            "targets.r2=>= 0.5",
            "output.dir=a=b",
        ],
    )
    assert result["model"] == {"type": "ridge", "params": {"alpha": 0.5}}
    assert result["cv"] == {"folds": 3, "enabled": False}
    assert result["data"]["features"] == ["a", "b"]
    assert result["data"]["group_column"] is None
    assert result["tracking"] == {"experiment": "my-exp"}
    assert result["targets"] == {"r2": ">= 0.5"}
    assert result["output"] == {"dir": "a=b"}
    # the input is not mutated
    assert raw["model"] == {"type": "ridge"}
    assert "cv" not in raw


def test_apply_overrides_replaces_a_scalar_with_a_mapping() -> None:
    result = apply_overrides({"model": "ridge"}, ["model.type=lightgbm"])
    assert result == {"model": {"type": "lightgbm"}}


@pytest.mark.parametrize("item", ["cv.folds", "=3", " =3", ""])
def test_apply_overrides_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ConfigError, match=r"must look like key\.path=value"):
        apply_overrides(_raw(), [item])


# --------------------------------------------------------------------------- load_config


def _write(path: Path, raw: Any) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_load_config_reads_yaml_and_applies_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", _raw(model={"type": "random_forest"}))
    config = load_config(
        path,
        ["model.params.n_estimators=7", "split.seed=7"],
        extra_checks=[config_checks],
    )
    assert config.model.params == {"n_estimators": 7}
    assert config.split.seed == 7
    assert config.name == "demo"


def test_load_config_reports_problems_with_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", _raw(model={"type": "random_forest"}))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["model.params.n_estimators=0"], extra_checks=[config_checks])
    assert str(info.value).startswith(f"invalid config {str(path)!r}: 1 problem")
    assert info.value.problems == [
        (
            "model.params.n_estimators",
            "The 'n_estimators' parameter of RandomForestClassifier must be an int in the "
            "range [1, inf). Got 0 instead.",
        )
    ]


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found; create one"):
        load_config(path)


def test_load_config_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\ntask: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml' is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")]
)
def test_load_config_needs_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"must hold a mapping, got {kind}$"):
        load_config(path)


def test_load_config_of_a_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)


def test_repo_example_configs_are_valid() -> None:
    root = Path(__file__).parents[1]
    configs = sorted((root / "configs").glob("*.y*ml"))
    configs += sorted(root.glob("examples/*/configs/*.y*ml"))
    assert configs, "the repo ships example configs"
    for path in configs:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = parse_config(raw, source=str(path))
        assert config.name


# --------------------------------------------------------------------------- hash


def test_config_hash_is_stable_across_key_order_and_changes_with_values() -> None:
    a = parse_config(_raw(cv={"folds": 3, "enabled": True}))
    b = parse_config(dict(reversed(list(_raw(cv={"enabled": True, "folds": 3}).items()))))
    c = parse_config(_raw(cv={"folds": 4}))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 64
    int(config_hash(a), 16)
