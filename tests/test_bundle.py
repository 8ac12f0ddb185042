"""Tests of mlservice.bundle: atomic save, verified and allowlisted load, latest link, listing.

Security items of docs/reliability.md: 20 (malicious pickle), 21 (manifest hashes before
deserialization), 22 (skops type allowlist), 23 (path safety), 27 (atomic save).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from mlservice.bundle import (
    LATEST_LINK,
    METADATA_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    TRUSTED_TYPES,
    Bundle,
    find_bundles,
    load_bundle,
    load_metadata,
    promote_latest,
    save_bundle,
    sha256_file,
    update_bundle_files,
)
from mlservice.errors import BundleError, MissingExtraError

# --------------------------------------------------------------------------- helpers

#: Records every construction of the untrusted test types below.
CONSTRUCTED: list[str] = []


def _double(x: Any) -> Any:
    CONSTRUCTED.append("_double called")
    return x * 2


class UntrustedScaler(TransformerMixin, BaseEstimator):
    """A harmless custom transformer that is not on the loader's allowlist."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        CONSTRUCTED.append("UntrustedScaler.__setstate__")
        self.__dict__.update(state)

    def fit(self, X: Any, y: Any = None) -> UntrustedScaler:  # noqa: N803
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> Any:  # noqa: N803
        return np.asarray(X) * 1.0


class TouchOnUnpickle:
    """A real malicious pickle payload: unpickling it creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.target,))


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.Series, Pipeline]:
    X, y = load_iris(return_X_y=True, as_frame=True)  # noqa: N806
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    return X, y, pipe


def _meta(**extra: Any) -> dict[str, Any]:
    return {"name": "t", "version": "1.0.0", "task": "classification", **extra}


def _save(output_dir: Path, pipeline: Any, **kwargs: Any) -> Path:
    metadata = kwargs.pop("metadata", None) or _meta()
    return save_bundle(output_dir=output_dir, pipeline=pipeline, metadata=metadata, **kwargs)


@pytest.fixture()
def bundle(tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]) -> Path:
    def extras(tmp: Path, meta: dict[str, Any]) -> None:
        (tmp / "plots").mkdir()
        (tmp / "plots" / "p.txt").write_text("plot", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text("# card\n", encoding="utf-8")

    return _save(tmp_path / "models", iris[2], write_extras=extras)


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))


def _write_meta(path: Path, meta: Any) -> None:
    (path / METADATA_FILE).write_text(json.dumps(meta), encoding="utf-8")


def _rehash(path: Path, rel: str = MODEL_FILE) -> None:
    """Record the current sha256 of ``rel``, as an attacker who can write the bundle would."""
    meta = _read_meta(path)
    meta["files"][rel] = sha256_file(path / rel)
    _write_meta(path, meta)


def _entries(directory: Path) -> set[str]:
    """What a save leaves in a directory, apart from its lock file."""
    return {p.name for p in directory.iterdir() if p.name != ".save.lock"}


# --------------------------------------------------------------------------- round trip


def test_round_trip_predicts_the_same(
    bundle: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    X, _y, pipe = iris  # noqa: N806
    loaded = load_bundle(bundle)
    assert isinstance(loaded, Bundle)
    assert loaded.path == bundle.resolve()
    assert (loaded.name, loaded.version) == ("t", "1.0.0")
    assert type(loaded.pipeline) is Pipeline
    np.testing.assert_array_equal(loaded.pipeline.predict(X), pipe.predict(X))
    np.testing.assert_allclose(loaded.pipeline.predict_proba(X), pipe.predict_proba(X))


def test_saved_metadata(bundle: Path) -> None:
    meta = _read_meta(bundle)
    assert meta["schema_version"] == SCHEMA_VERSION == 1
    assert meta["bundle_id"] == bundle.name
    assert (meta["name"], meta["version"], meta["task"]) == ("t", "1.0.0", "classification")
    created = datetime.fromisoformat(meta["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert bundle.name == f"model_v1.0.0_{created:%Y-%m-%d}"
    on_disk = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != METADATA_FILE
    }
    assert set(meta["files"]) == on_disk == {MODEL_FILE, "MODEL_CARD.md", "plots/p.txt"}
    for rel, digest in meta["files"].items():
        assert digest == hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
    assert load_metadata(bundle) == meta
    # the output dir holds the bundle only: no temporary directory or file is left behind
    assert _entries(bundle.parent) == {bundle.name}
    assert not [p for p in bundle.rglob(".*")]


def test_write_extras_fills_metadata_and_given_created_at_is_kept(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    def extras(tmp: Path, meta: dict[str, Any]) -> None:
        assert (tmp / MODEL_FILE).is_file()  # the model is written before the extras
        meta["plots"] = ["x.png"]

    path = _save(
        tmp_path,
        iris[2],
        metadata=_meta(created_at="2020-01-02T03:04:05+00:00", schema_version=7),
        write_extras=extras,
    )
    meta = load_metadata(path)
    assert meta["plots"] == ["x.png"]
    assert meta["created_at"] == "2020-01-02T03:04:05+00:00"
    assert meta["schema_version"] == 7  # caller's metadata wins over the default


def test_second_save_gets_a_numbered_directory(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    first = _save(tmp_path, iris[2])
    second = _save(tmp_path, iris[2])
    day1 = load_metadata(first)["created_at"][:10]
    day2 = load_metadata(second)["created_at"][:10]
    suffix = "-2" if day1 == day2 else ""  # a save across midnight gets a fresh name
    assert first.name == f"model_v1.0.0_{day1}"
    assert second.name == f"model_v1.0.0_{day2}{suffix}"
    assert load_metadata(second)["bundle_id"] == second.name
    assert _entries(tmp_path) == {first.name, second.name}


def test_trained_bundle_loads_and_hashes_every_file(
    tmp_path: Path, trained_bundle: Path, penguins_frame: pd.DataFrame
) -> None:
    copy = tmp_path / trained_bundle.name
    shutil.copytree(trained_bundle, copy, symlinks=True)
    loaded = load_bundle(copy)
    meta = loaded.metadata
    files = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
    assert set(meta["files"]) == files - {METADATA_FILE}
    assert MODEL_FILE in meta["files"]
    X = penguins_frame[meta["feature_names"]].head(20)  # noqa: N806
    assert loaded.pipeline.predict(X).shape == (20,)


# --------------------------------------------------------------------------- tampering (21)


def test_one_changed_byte_of_the_model_is_refused(bundle: Path) -> None:
    model = bundle / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=r"file 'model\.skops' does not match its recorded sha256"
    ):
        load_bundle(bundle)


def test_changed_extra_file_is_refused_unless_verify_is_off(bundle: Path) -> None:
    (bundle / "plots" / "p.txt").write_text("PLOT", encoding="utf-8")
    with pytest.raises(BundleError, match=r"file 'plots/p\.txt' does not match") as info:
        load_bundle(bundle)
    assert "Re-train or restore it" in str(info.value)
    assert load_bundle(bundle, verify=False).name == "t"


def test_missing_listed_file(bundle: Path) -> None:
    (bundle / "MODEL_CARD.md").unlink()
    with pytest.raises(BundleError, match=r"is missing file 'MODEL_CARD\.md' listed in metadata"):
        load_bundle(bundle)


@pytest.mark.parametrize("files", [None, {}, {"MODEL_CARD.md": "0" * 64}, ["model.skops"]])
def test_metadata_without_model_hash(bundle: Path, files: Any) -> None:
    meta = _read_meta(bundle)
    meta["files"] = files
    _write_meta(bundle, meta)
    with pytest.raises(BundleError, match=r"metadata\.json has no hash for model\.skops"):
        load_bundle(bundle)


# --------------------------------------------------------------------------- malicious pickle (20)


def test_malicious_pickle_is_refused_before_unpickling(bundle: Path, tmp_path: Path) -> None:
    # the payload is real: unpickling it does create its target
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists()

    sentinel = tmp_path / "SENTINEL"
    (bundle / MODEL_FILE).write_bytes(pickle.dumps(TouchOnUnpickle(sentinel)))
    _rehash(bundle)  # hashes match: only the format check stands in the way
    with pytest.raises(BundleError, match=r"'model\.skops' is not a skops archive; refusing"):
        load_bundle(bundle)
    assert not sentinel.exists()


def test_zip_without_skops_schema_is_refused(bundle: Path) -> None:
    with zipfile.ZipFile(bundle / MODEL_FILE, "w") as archive:
        archive.writestr("data.pkl", b"not a skops file")
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"'model\.skops' has no skops schema"):
        load_bundle(bundle)


def test_zip_with_broken_schema_is_refused(bundle: Path) -> None:
    with zipfile.ZipFile(bundle / MODEL_FILE, "w") as archive:
        archive.writestr("schema.json", b"{not json")
    _rehash(bundle)
    with pytest.raises(BundleError, match=r"'model\.skops' cannot be read"):
        load_bundle(bundle)


# --------------------------------------------------------------------------- allowlist (22)


def test_trusted_types_are_explicit() -> None:
    assert "mlservice.pipelines.features.DatetimeFeatures" in TRUSTED_TYPES
    assert not any(
        t.startswith(("builtins.", "os.", "posix.", "subprocess.")) for t in TRUSTED_TYPES
    )
    assert "builtins.eval" not in TRUSTED_TYPES


def test_function_transformer_is_refused_at_load(
    bundle: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    X, y, _ = iris  # noqa: N806
    evil = make_pipeline(FunctionTransformer(func=_double), StandardScaler()).fit(X, y)
    sio.dump(evil, bundle / MODEL_FILE)
    _rehash(bundle)
    CONSTRUCTED.clear()
    with pytest.raises(
        BundleError,
        match=r"contains types that are not on the allowlist: \['tests\.test_bundle\._double'\]",
    ):
        load_bundle(bundle)
    assert CONSTRUCTED == []


def test_custom_class_is_refused_at_load_and_nothing_is_constructed(
    bundle: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    X, y, _ = iris  # noqa: N806
    evil = make_pipeline(UntrustedScaler(), StandardScaler()).fit(X, y)
    sio.dump(evil, bundle / MODEL_FILE)
    _rehash(bundle)
    type_name = "tests.test_bundle.UntrustedScaler"
    # control: skops would construct it if the type were trusted
    CONSTRUCTED.clear()
    sio.load(bundle / MODEL_FILE, trusted=[type_name])
    assert "UntrustedScaler.__setstate__" in CONSTRUCTED

    CONSTRUCTED.clear()
    with pytest.raises(BundleError, match=rf"not on the allowlist: \['{type_name}'\]; refusing"):
        load_bundle(bundle)
    assert CONSTRUCTED == []


def test_save_refuses_untrusted_types_and_leaves_nothing(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    X, y, _ = iris  # noqa: N806
    evil = make_pipeline(FunctionTransformer(func=_double), StandardScaler()).fit(X, y)
    out = tmp_path / "models"
    with pytest.raises(
        BundleError, match=r"holds types the loader would refuse: \['tests\.test_bundle\._double'\]"
    ):
        _save(out, evil)
    assert _entries(out) == set()


# --------------------------------------------------------------------------- path safety (23)


@pytest.mark.parametrize(
    "rel", ["../outside.txt", "/etc/passwd", "plots/../../outside.txt", "plots\\p.txt", "", "."]
)
def test_unsafe_member_paths_are_refused(bundle: Path, rel: str) -> None:
    outside = bundle.parent / "outside.txt"
    outside.write_text("secret", encoding="utf-8")
    meta = _read_meta(bundle)
    meta["files"][rel] = sha256_file(outside)
    _write_meta(bundle, meta)
    with pytest.raises(BundleError, match=re.escape(f"lists unsafe file path {rel!r}; refusing")):
        load_bundle(bundle)


def test_symlinked_model_file_is_refused(bundle: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.skops"
    shutil.copyfile(bundle / MODEL_FILE, real)
    (bundle / MODEL_FILE).unlink()
    (bundle / MODEL_FILE).symlink_to(real)
    assert sha256_file(bundle / MODEL_FILE) == _read_meta(bundle)["files"][MODEL_FILE]
    with pytest.raises(BundleError, match=r"file 'model\.skops' is a symlink; refusing"):
        load_bundle(bundle)


def test_symlinked_directory_is_refused(bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(bundle / "plots", elsewhere)
    (bundle / "plots").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BundleError, match=r"file 'plots/p\.txt' is a symlink; refusing"):
        load_bundle(bundle)


# --------------------------------------------------------------------------- version, missing


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_other_schema_version_is_refused(bundle: Path, version: Any) -> None:
    meta = _read_meta(bundle)
    meta["schema_version"] = version
    _write_meta(bundle, meta)
    with pytest.raises(
        BundleError, match=rf"has schema_version {version!r}, this mlservice reads 1"
    ):
        load_bundle(bundle)


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle '.*nope' not found; train one"):
        load_bundle(tmp_path / "nope")


def test_directory_without_metadata(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"is not a model bundle: no metadata\.json"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{broken", r"metadata\.json is not valid JSON"),
        (b"[1, 2]", r"must hold an object"),
        (b"\xff\xfe\x00", r"metadata\.json is not valid JSON"),
    ],
)
def test_unreadable_metadata(bundle: Path, content: bytes, message: str) -> None:
    (bundle / METADATA_FILE).write_bytes(content)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_requirement_names_the_pip_command(bundle: Path) -> None:
    meta = _read_meta(bundle)
    meta["requirements"] = ["not_a_real_module_xyz"]
    _write_meta(bundle, meta)
    with pytest.raises(MissingExtraError) as info:
        load_bundle(bundle)
    assert isinstance(info.value, BundleError)
    assert isinstance(info.value, ImportError)
    assert "needs 'not_a_real_module_xyz', which is not installed" in str(info.value)
    assert "pip install 'mlservice[all]'" in str(info.value)


def test_installed_requirement_loads(bundle: Path) -> None:
    meta = _read_meta(bundle)
    meta["requirements"] = ["lightgbm", "numpy"]
    _write_meta(bundle, meta)
    assert load_bundle(bundle).metadata["requirements"] == ["lightgbm", "numpy"]


# --------------------------------------------------------------------------- atomic save (27)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_save_leaves_old_bundle_and_latest_intact(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline], error: BaseException
) -> None:
    X, _y, pipe = iris  # noqa: N806
    out = tmp_path / "models"
    old = _save(out, pipe)
    promote_latest(old)
    before = _entries(out)
    calls: list[Path] = []

    def explode(tmp: Path, meta: dict[str, Any]) -> None:
        calls.append(tmp)
        (tmp / "half-written.png").write_bytes(b"\x89PNG")
        raise error

    with pytest.raises(type(error)):
        _save(out, pipe, metadata=_meta(version="2.0.0"), write_extras=explode)
    assert len(calls) == 1
    assert calls[0].name.startswith(".tmp-bundle-")
    assert not calls[0].exists()
    assert _entries(out) == before == {old.name, LATEST_LINK}
    assert os.readlink(out / LATEST_LINK) == old.name
    loaded = load_bundle(out / LATEST_LINK)
    assert loaded.path == old.resolve()
    assert loaded.version == "1.0.0"
    np.testing.assert_array_equal(loaded.pipeline.predict(X), pipe.predict(X))


def test_failed_first_save_leaves_no_directory(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    def explode(tmp: Path, meta: dict[str, Any]) -> None:
        raise OSError("disk full")

    out = tmp_path / "models"
    with pytest.raises(OSError, match="disk full"):
        _save(out, iris[2], write_extras=explode)
    assert _entries(out) == set()


# --------------------------------------------------------------------------- promote_latest


def test_promote_latest_makes_a_relative_link_and_replaces_it(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    out = tmp_path / "models"
    first = _save(out, iris[2])
    second = _save(out, iris[2], metadata=_meta(version="1.1.0"))
    link = promote_latest(first)
    assert link == out / LATEST_LINK
    assert link.is_symlink()
    assert os.readlink(link) == first.name
    assert not os.path.isabs(os.readlink(link))
    assert link.resolve() == first.resolve()

    assert promote_latest(second) == link
    assert os.readlink(link) == second.name
    assert load_bundle(link).version == "1.1.0"
    assert _entries(out) == {first.name, second.name, LATEST_LINK}  # no temporary links left

    # relative: the link still works after the whole directory moves
    moved = tmp_path / "moved"
    out.rename(moved)
    assert load_bundle(moved / LATEST_LINK).path == (moved / second.name).resolve()


def test_promote_latest_custom_link_name(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    path = _save(tmp_path, iris[2])
    link = promote_latest(path, link_name="model_staging")
    assert link.name == "model_staging"
    assert os.readlink(link) == path.name


# --------------------------------------------------------------------------- update_bundle_files


def test_update_bundle_files_rehashes_and_stays_loadable(bundle: Path) -> None:
    meta = update_bundle_files(
        bundle,
        {"MODEL_CARD.md": "# new card\n", "plots/new.bin": b"\x00\x01"},
        metadata_updates={"mlflow": {"run_id": "abc"}},
    )
    assert (bundle / "MODEL_CARD.md").read_text(encoding="utf-8") == "# new card\n"
    assert (bundle / "plots" / "new.bin").read_bytes() == b"\x00\x01"
    assert meta["files"]["MODEL_CARD.md"] == hashlib.sha256(b"# new card\n").hexdigest()
    assert meta["files"]["plots/new.bin"] == hashlib.sha256(b"\x00\x01").hexdigest()
    assert meta["mlflow"] == {"run_id": "abc"}
    assert load_metadata(bundle) == meta
    assert load_bundle(bundle).metadata["mlflow"] == {"run_id": "abc"}
    assert not [p.name for p in bundle.rglob(".*")]  # no temporary files left


@pytest.mark.parametrize("rel", ["../escape.md", "/tmp/escape.md", "plots/../../escape.md"])
def test_update_bundle_files_refuses_unsafe_paths(bundle: Path, rel: str) -> None:
    before = _read_meta(bundle)
    with pytest.raises(BundleError, match="unsafe file path"):
        update_bundle_files(bundle, {rel: "x"})
    assert not (bundle.parent / "escape.md").exists()
    assert _read_meta(bundle) == before


def test_update_bundle_files_refuses_symlinks(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "victim.md"
    target.write_text("keep", encoding="utf-8")
    (bundle / "MODEL_CARD.md").unlink()
    (bundle / "MODEL_CARD.md").symlink_to(target)
    with pytest.raises(BundleError, match="is a symlink"):
        update_bundle_files(bundle, {"MODEL_CARD.md": "overwritten"})
    assert target.read_text(encoding="utf-8") == "keep"


# --------------------------------------------------------------------------- find_bundles


def test_find_bundles_newest_first_filtered_and_skipping_non_bundles(
    tmp_path: Path, iris: tuple[pd.DataFrame, pd.Series, Pipeline]
) -> None:
    out = tmp_path / "models"
    assert find_bundles(out) == []
    old = _save(out, iris[2], metadata=_meta(created_at="2020-01-01T00:00:00+00:00"))
    new = _save(out, iris[2], metadata=_meta(created_at="2021-01-01T00:00:00+00:00"))
    other = _save(out, iris[2], metadata=_meta(name="u", created_at="2019-01-01T00:00:00+00:00"))
    promote_latest(new)
    (out / "not-a-bundle").mkdir()
    (out / "broken").mkdir()
    (out / "broken" / METADATA_FILE).write_text("{", encoding="utf-8")
    hidden = out / ".tmp-bundle-abc"
    shutil.copytree(old, hidden)
    (out / "stray.txt").write_text("x", encoding="utf-8")

    assert [m["bundle_id"] for m in find_bundles(out)] == [new.name, old.name, other.name]
    assert [m["bundle_id"] for m in find_bundles(out, name="t")] == [new.name, old.name]
    assert [m["bundle_id"] for m in find_bundles(out, name="u")] == [other.name]
    assert find_bundles(out, name="zzz") == []


def test_a_save_removes_a_killed_save_leftover(tmp_path: Path, iris: Any) -> None:
    out = tmp_path / "models"
    stale = out / ".tmp-bundle-killed"
    (stale / "plots").mkdir(parents=True)
    (stale / "model.skops").write_bytes(b"half written")
    bundle = _save(out, iris[2])
    assert not stale.exists()
    assert _entries(out) == {bundle.name}


def test_concurrent_saves_of_one_version_get_distinct_names(tmp_path: Path, iris: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "models"
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(lambda _i: _save(out, iris[2]), range(3)))
    assert len({p.name for p in paths}) == 3
    for path in paths:
        assert load_bundle(path).metadata["bundle_id"] == path.name
