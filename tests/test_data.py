"""Tests of mlservice.data: type inference, feature specs, fingerprints, loading, splitting."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlservice.config import DataConfig
from mlservice.data import (
    Dataset,
    build_feature_specs,
    dvc_lineage,
    dvc_md5,
    fingerprint_file,
    fingerprint_frame,
    infer_column_types,
    load_dataset,
    split_indices,
)
from mlservice.data.fingerprint import md5_file
from mlservice.errors import DataError

LONG_TEXT = "this is a fairly long free-text sentence, number {i}, about penguins"


def _mixed_frame() -> pd.DataFrame:
    n = 20
    return pd.DataFrame(
        {
            "num": [float(i) if i % 5 else None for i in range(n)],
            "count": list(range(1, n + 1)),
            "cat": (["a", "b", "a", None, "c"] * 4),
            "flag": [i % 3 == 0 for i in range(n)],
            "objflag": pd.Series([True, False, None, True] * 5, dtype=object),
            "iso": [f"2024-01-{i + 1:02d}" for i in range(n)],
            "stamp": pd.date_range("2024-01-01", periods=n, freq="h"),
            "text": [LONG_TEXT.format(i=i) for i in range(n)],
            "empty": pd.Series([None] * n, dtype=object),
        }
    )


# --------------------------------------------------------------------------- type inference


def test_infer_column_types_of_every_kind() -> None:
    assert infer_column_types(_mixed_frame()) == {
        "num": "numeric",
        "count": "numeric",
        "cat": "categorical",
        "flag": "boolean",
        "objflag": "boolean",
        "iso": "datetime",
        "stamp": "datetime",
        "text": "text",
        "empty": "categorical",
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3], "numeric"),
        ([1.5, None, 3.0], "numeric"),
        (["1", "2", "3"], "categorical"),  # digits as strings stay categories
        (["x", "y", "x"], "categorical"),
        ([True, False, True], "boolean"),
        (["2024-01-01 10:00", "2024-02-01 11:30", "2024-03-01 00:00"], "datetime"),
        (["2024-01-01", "not a date", "2024-03-01"], "categorical"),
        # long but repeated strings are categories, not text
        ([LONG_TEXT.format(i=0)] * 4, "categorical"),
        ([LONG_TEXT.format(i=i) for i in range(4)], "text"),
        ([None, None], "categorical"),
    ],
)
def test_infer_one_column(values: list[object], expected: str) -> None:
    frame = pd.DataFrame({"c": pd.Series(values, dtype=None)})
    assert infer_column_types(frame) == {"c": expected}


def test_overrides_win_and_other_columns_are_inferred() -> None:
    frame = _mixed_frame()[["count", "cat", "iso"]]
    types = infer_column_types(frame, {"count": "categorical", "iso": "text", "nope": "numeric"})
    assert types == {"count": "categorical", "cat": "categorical", "iso": "text"}


# --------------------------------------------------------------------------- feature specs


def test_build_feature_specs() -> None:
    frame = _mixed_frame()
    specs = {s.name: s for s in build_feature_specs(frame, infer_column_types(frame))}
    assert list(specs) == list(frame.columns)

    num = specs["num"]
    assert (num.type, num.nullable, num.missing_fraction) == ("numeric", True, 0.2)
    assert (num.min, num.max) == (1.0, 19.0)
    non_null = [float(i) for i in range(20) if i % 5]
    assert num.example == pytest.approx(float(np.median(non_null)))
    assert isinstance(num.example, float)
    assert num.categories is None

    count = specs["count"]
    assert (count.nullable, count.missing_fraction, count.dtype) == (False, 0.0, "int64")
    assert (count.min, count.max, count.example) == (1.0, 20.0, 10)
    assert isinstance(count.example, int)

    cat = specs["cat"]
    assert cat.categories == ["a", "b", "c"]
    assert cat.example == "a"  # most frequent
    assert cat.nullable is True
    assert cat.missing_fraction == 0.2
    assert (cat.min, cat.max) == (None, None)

    flag = specs["flag"]
    assert flag.categories == [False, True]
    assert flag.example is False  # 13 of 20 are False
    assert type(flag.example) is bool  # numpy bool became a JSON-able bool

    assert specs["iso"].example == "2024-01-01"
    assert specs["stamp"].example == "2024-01-01T00:00:00"
    assert specs["text"].example == LONG_TEXT.format(i=0)

    empty = specs["empty"]
    assert (empty.nullable, empty.missing_fraction) == (True, 1.0)
    assert (empty.categories, empty.example) == (None, None)


def test_missing_fraction_is_rounded() -> None:
    frame = pd.DataFrame({"x": [1.0, None, 3.0]})
    (spec,) = build_feature_specs(frame, {"x": "numeric"})
    assert spec.missing_fraction == 0.333333


def test_many_categories_are_truncated_and_counted() -> None:
    frame = pd.DataFrame({"c": [f"v{i:03d}" for i in range(250)]})
    (spec,) = build_feature_specs(frame, {"c": "categorical"})
    assert spec.categories is not None
    assert len(spec.categories) == 200
    assert spec.categories[:2] == ["v000", "v001"]
    as_dict = spec.to_dict()
    assert as_dict["n_categories"] == 250
    assert "extra" not in as_dict
    assert set(as_dict) >= {"name", "type", "dtype", "nullable", "categories", "min", "max"}


def test_numeric_categories_are_plain_python() -> None:
    frame = pd.DataFrame({"c": np.array([3, 1, 2, 1], dtype=np.int64)})
    (spec,) = build_feature_specs(frame, {"c": "categorical"})
    assert spec.categories == [1, 2, 3]
    assert all(type(v) is int for v in spec.categories)
    assert spec.example == 1


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_file_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    data = b"a,b\n1,2\n" * 1000
    path.write_bytes(data)
    assert fingerprint_file(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + b"3")
    assert fingerprint_file(path) == hashlib.sha256(data[:-1] + b"3").hexdigest()


def test_fingerprint_frame() -> None:
    a = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    same_other_index = a.set_axis([10, 11, 12])
    assert fingerprint_frame(a) == fingerprint_frame(a.copy())
    assert fingerprint_frame(a) == fingerprint_frame(same_other_index)
    assert fingerprint_frame(a) != fingerprint_frame(a.rename(columns={"x": "z"}))
    changed = a.copy()
    changed.loc[2, "x"] = 4
    assert fingerprint_frame(a) != fingerprint_frame(changed)
    assert fingerprint_frame(a) != fingerprint_frame(a.iloc[::-1])
    assert len(fingerprint_frame(a)) == 64


def _dvc_file(data: Path, md5: str, *, legacy: bool = False) -> None:
    """A .dvc file as `dvc add` writes it (DVC 3; ``legacy``: DVC 2, without ``hash: md5``)."""
    hash_line = "" if legacy else "  hash: md5\n"
    data.with_name(data.name + ".dvc").write_text(
        f"outs:\n- md5: {md5}\n  size: {data.stat().st_size}\n{hash_line}  path: {data.name}\n",
        encoding="utf-8",
    )


def test_dvc_md5_is_the_recorded_md5_only_when_the_file_matches(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_bytes(b"a\n1\n")
    assert dvc_md5(data) is None
    assert dvc_lineage(data).fields() == {
        "dvc_md5": None,
        "dvc_recorded_md5": None,
        "dvc_state": "untracked",
    }
    real = hashlib.md5(b"a\n1\n").hexdigest()
    _dvc_file(data, real)
    assert dvc_md5(data) == real
    assert dvc_lineage(data).state == "tracked"
    _dvc_file(data, "0123456789abcdef0123456789abcdef")  # a record of other bytes
    lineage = dvc_lineage(data)
    assert dvc_md5(data) is None
    assert (lineage.state, lineage.md5) == ("modified", None)
    assert lineage.recorded_md5 == "0123456789abcdef0123456789abcdef"
    assert lineage.actual_md5 == real


def test_legacy_dvc_files_hash_text_with_crlf_as_lf(tmp_path: Path) -> None:
    data = tmp_path / "x.csv"
    data.write_bytes(b"a,b\r\n1,2\r\n" * 3)
    unix = hashlib.md5(b"a,b\n1,2\n" * 3).hexdigest()
    _dvc_file(data, unix, legacy=True)  # DVC 2 recorded the dos2unix md5 of text files
    assert dvc_lineage(data).state == "tracked"
    _dvc_file(data, unix)  # DVC 3 hashes the bytes as they are: the CRLF file differs
    assert dvc_lineage(data).state == "modified"


def test_md5_file_dos2unix_across_chunk_boundaries(tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    body = (b"x" * ((1 << 20) - 1) + b"\r\n") * 2 + b"tail\r"
    data.write_bytes(body)
    assert md5_file(data) == hashlib.md5(body).hexdigest()
    expected = hashlib.md5(body.replace(b"\r\n", b"\n")).hexdigest()
    assert md5_file(data, dos2unix=True) == expected


@pytest.mark.parametrize(
    "text",
    ["outs: [\n", "outs:\n- path: x.csv\n", "", "outs: []\n", "outs:\n- just-a-string\n"],
)
def test_dvc_md5_is_none_without_a_usable_md5(tmp_path: Path, text: str) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n", encoding="utf-8")
    (tmp_path / "x.csv.dvc").write_text(text, encoding="utf-8")
    assert dvc_md5(data) is None


# --------------------------------------------------------------------------- loading


def _small_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": np.arange(20, dtype=float),
            "c": ["u", "v"] * 10,
            "y": ["p", "q", "q", "p"] * 5,
        }
    )


def test_load_csv_relative_to_base_dir(tmp_path: Path) -> None:
    path = tmp_path / "raw" / "d.csv"
    path.parent.mkdir()
    _small_frame().to_csv(path, index=False)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    _dvc_file(path, md5)
    dataset = load_dataset(DataConfig(source="raw/d.csv", target="y"), base_dir=tmp_path)
    assert isinstance(dataset, Dataset)
    assert dataset.path == tmp_path / "raw" / "d.csv"
    assert dataset.source == "raw/d.csv"
    assert dataset.fingerprint == {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "dvc_md5": md5,
        "dvc_recorded_md5": md5,
        "dvc_state": "tracked",
    }
    assert dataset.read is not None and dataset.read["sep"] == ","
    assert dataset.notes == []  # a plain UTF-8 comma file: nothing to tell
    pd.testing.assert_frame_equal(dataset.frame, _small_frame(), check_dtype=False)
    dataset.verify_unchanged()  # nothing changed: no error
    assert fingerprint_file(path) == dataset.fingerprint["sha256"]


def test_load_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    _small_frame().to_parquet(path, index=False)
    dataset = load_dataset(DataConfig(source=str(path), target="y"))
    assert dataset.frame.shape == (20, 3)
    assert dataset.fingerprint["sha256"] == fingerprint_file(path)
    assert dataset.fingerprint["dvc_md5"] is None
    assert dataset.fingerprint["dvc_state"] == "untracked"
    assert dataset.read is None  # reader options are for CSV files


def test_load_builtin_iris_has_named_labels() -> None:
    dataset = load_dataset(DataConfig(source="builtin:iris", target="target"))
    assert dataset.path is None
    assert dataset.frame.shape == (150, 5)
    assert sorted(dataset.frame["target"].unique()) == ["setosa", "versicolor", "virginica"]
    assert dataset.fingerprint == {
        "sha256": fingerprint_frame(dataset.frame),
        "dvc_md5": None,
        "dvc_recorded_md5": None,
        "dvc_state": "untracked",
    }
    dataset.verify_unchanged()  # no file: nothing to check


def test_load_builtin_regression_keeps_numbers() -> None:
    dataset = load_dataset(DataConfig(source="builtin:diabetes", target="target"))
    assert dataset.frame["target"].dtype.kind == "f"
    assert len(dataset.frame) == 442


def test_unknown_builtin() -> None:
    with pytest.raises(DataError, match=r"unknown builtin dataset 'nope'; available: \['breast"):
        load_dataset(DataConfig(source="builtin:nope", target="y"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"dataset 'gone\.csv' not found \(looked at '.*gone\.csv'\)"
    ):
        load_dataset(DataConfig(source="gone.csv", target="y"), base_dir=tmp_path)


def test_missing_columns_are_all_listed(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _small_frame().to_csv(path, index=False)
    config = DataConfig(
        source=str(path), target="label", features=["x", "z"], drop=["c"], time_column="t"
    )
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert "has no column(s) ['label', 'z', 't']; it has ['x', 'c', 'y']" in message
    assert "Fix data.target / data.features / data.drop" in message


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no rows"):
        load_dataset(DataConfig(source=str(path), target="y"))


def test_all_missing_target(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,\n2,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"target column 'y' is empty"):
        load_dataset(DataConfig(source=str(path), target="y"))


@pytest.mark.parametrize("name", ["bad.parquet", "bad.csv"])
def test_unreadable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01PAR1 not really" if name.endswith("parquet") else b'a,b\n"1,2\n')
    with pytest.raises(DataError, match=rf"cannot read dataset '.*{name}'"):
        load_dataset(DataConfig(source=str(path), target="a"))


def test_verify_unchanged_detects_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _small_frame().to_csv(path, index=False)
    dataset = load_dataset(DataConfig(source=str(path), target="y"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write("1.0,u,p\n")
    with pytest.raises(DataError, match=r"raw data '.*d\.csv' changed during training"):
        dataset.verify_unchanged()


def test_load_never_writes_the_raw_file(tmp_path: Path, penguins_csv: Path) -> None:
    before = (penguins_csv.stat().st_mtime_ns, fingerprint_file(penguins_csv))
    dataset = load_dataset(DataConfig(source=str(penguins_csv), target="species"))
    assert len(dataset.frame) == 344
    assert (penguins_csv.stat().st_mtime_ns, fingerprint_file(penguins_csv)) == before


# --------------------------------------------------------------------------- splitting


def _split_kwargs(strategy: str, n: int) -> dict[str, pd.Series]:
    rng = np.random.default_rng(0)
    if strategy == "stratified":
        return {"y": pd.Series(["a", "b", "b"] * (n // 3))}
    if strategy == "time":
        return {
            "time": pd.Series(
                pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.permutation(n), unit="D")
            )
        }
    if strategy == "group":
        return {"groups": pd.Series(np.repeat(np.arange(n // 3), 3))}
    return {}


@pytest.mark.parametrize("strategy", ["random", "stratified", "time", "group"])
def test_split_is_disjoint_covering_sorted_and_deterministic(strategy: str) -> None:
    n = 60
    kwargs = _split_kwargs(strategy, n)
    train, test = split_indices(n, strategy=strategy, test_size=0.25, seed=3, **kwargs)
    assert set(train).isdisjoint(test)
    assert sorted([*train, *test]) == list(range(n))
    assert list(train) == sorted(train)
    assert list(test) == sorted(test)
    assert train.dtype.kind == "i"
    assert len(test) == 15
    again = split_indices(n, strategy=strategy, test_size=0.25, seed=3, **kwargs)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)


@pytest.mark.parametrize("strategy", ["random", "stratified", "group"])
def test_split_depends_on_the_seed(strategy: str) -> None:
    kwargs = _split_kwargs(strategy, 60)
    tests = {
        tuple(split_indices(60, strategy=strategy, test_size=0.25, seed=s, **kwargs)[1])
        for s in range(4)
    }
    assert len(tests) > 1


def test_random_split_size_rounds_up() -> None:
    train, test = split_indices(21, strategy="random", test_size=0.2, seed=0)
    assert (len(train), len(test)) == (16, 5)  # ceil(4.2) = 5


def test_stratified_split_keeps_class_shares() -> None:
    y = pd.Series(["a"] * 45 + ["b"] * 15).sample(frac=1.0, random_state=1).reset_index(drop=True)
    train, test = split_indices(60, strategy="stratified", test_size=0.2, seed=0, y=y)
    assert y.iloc[test].value_counts().to_dict() == {"a": 9, "b": 3}
    assert y.iloc[train].value_counts().to_dict() == {"a": 36, "b": 12}


def test_time_split_puts_the_latest_rows_in_test() -> None:
    rng = np.random.default_rng(5)
    days = rng.permutation(30)
    time = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D"))
    train, test = split_indices(30, strategy="time", test_size=0.2, seed=0, time=time)
    assert len(test) == 6
    assert time.iloc[train].max() < time.iloc[test].min()
    assert sorted(days[test]) == list(range(24, 30))


def test_time_split_with_numeric_time_and_ties_is_stable() -> None:
    time = pd.Series([3, 1, 2, 2, 5, 4, 4, 0, 6, 6])
    train, test = split_indices(10, strategy="time", test_size=0.2, seed=0, time=time)
    np.testing.assert_array_equal(test, [8, 9])
    assert time.iloc[train].max() <= time.iloc[test].min()


def test_time_split_parses_non_iso_date_strings() -> None:
    dates = pd.date_range("2024-01-01", periods=10, freq="60D")
    time = pd.Series(dates.strftime("%m/%d/%Y"))  # 01/01/2024 ... 04/25/2025, 06/24/2025
    _train, test = split_indices(10, strategy="time", test_size=0.2, seed=0, time=time)
    np.testing.assert_array_equal(test, [8, 9])


def test_group_split_never_puts_one_group_on_both_sides() -> None:
    groups = pd.Series(np.repeat(list("abcdefghij"), 4)).sample(frac=1, random_state=0)
    groups = groups.reset_index(drop=True)
    for seed in range(5):
        train, test = split_indices(40, strategy="group", test_size=0.3, seed=seed, groups=groups)
        assert set(groups.iloc[train]).isdisjoint(set(groups.iloc[test]))
        assert len(set(groups.iloc[test])) == 3  # ceil(0.3 * 10 groups)
        assert len(train) + len(test) == 40


def test_stratified_split_rejects_single_row_classes() -> None:
    y = pd.Series(list("aaaaabbbbc"))
    with pytest.raises(
        DataError, match=r"needs >= 2 rows per class; classes \['c'\] have 1\. Drop them"
    ):
        split_indices(10, strategy="stratified", test_size=0.3, seed=0, y=y)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ("stratified", "stratified split needs the target"),
        ("time", "time split needs data.time_column"),
        ("group", "group split needs data.group_column"),
        ("shuffle", "unknown split strategy 'shuffle'"),
    ],
)
def test_split_errors(strategy: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        split_indices(20, strategy=strategy, test_size=0.2, seed=0)


@pytest.mark.parametrize(("n_rows", "test_size"), [(3, 0.5), (2, 0.2), (0, 0.2), (10, 0.95)])
def test_too_few_rows_to_split(n_rows: int, test_size: float) -> None:
    with pytest.raises(DataError, match=rf"{n_rows} rows cannot be split with test_size="):
        split_indices(n_rows, strategy="random", test_size=test_size, seed=0)


def test_smallest_splittable_size() -> None:
    train, test = split_indices(3, strategy="random", test_size=0.2, seed=0)
    assert (len(train), len(test)) == (2, 1)
    assert math.isclose(len(test) / 3, 1 / 3)
