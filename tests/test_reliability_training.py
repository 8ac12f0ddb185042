"""Training faults (docs/reliability.md items 16, 26, 27, 30): the previous bundle survives.

Each test starts from an output directory holding a good bundle that ``model_latest`` points at,
and raw data in a directory mounted read-only (a read-only bind mount: ``chmod`` alone does not
stop root). Then one real fault hits a real training: a ``SIGKILL`` of a ``mlservice train``
process caught in the middle of ``save_bundle``, an estimator whose fit raises, an MLflow
tracking server that is not there (a closed port), and a full disk (the output directory on a
tmpfs too small for a second bundle). Afterwards: the previous bundle is byte-identical and
loadable, ``model_latest`` still points at it (or, when only tracking failed, at the new and
complete bundle), no partial bundle is visible, and the raw data has the same sha256.

Mounting needs root, which this project's machines and CI run as.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlservice.bundle import (
    LATEST_LINK,
    METADATA_FILE,
    MODEL_FILE,
    find_bundles,
    load_bundle,
    promote_latest,
)
from mlservice.errors import BundleError
from mlservice.training import train
from tests.conftest import make_config, write_config

_POLL_S = 0.005
_TRAIN_LIMIT_S = 180.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (symlinks as their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = _sha256(path)
    return out


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"mount {' '.join(args)} failed (needs root): {result.stderr}"


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


@pytest.fixture()
def raw_csv(tmp_path: Path, penguins_csv: Path) -> Iterator[Path]:
    """The penguins CSV in ``tmp_path/raw``, mounted read-only for the test."""
    raw = tmp_path / "raw"
    raw.mkdir()
    csv = raw / "penguins.csv"
    shutil.copyfile(penguins_csv, csv)
    _mount("--bind", str(raw), str(raw))
    try:
        _mount("-o", "remount,bind,ro", str(raw))
        with pytest.raises(OSError) as refused:  # the premise: nobody, root included, writes
            (raw / "probe").write_text("x", encoding="utf-8")
        assert refused.value.errno == errno.EROFS
        yield csv
    finally:
        _umount(raw)


@dataclass
class Previous:
    """The output directory and its good bundle, with the sha256 of every file."""

    out: Path
    bundle: Path
    files: dict[str, str]

    def assert_intact(self, *, latest_is_previous: bool = True) -> None:
        assert _tree(self.bundle) == self.files  # byte-identical
        loaded = load_bundle(self.bundle)  # and still verifies and loads
        assert loaded.version == "1.0.0"
        if latest_is_previous:
            assert os.readlink(self.out / LATEST_LINK) == self.bundle.name
            assert load_bundle(self.out / LATEST_LINK).path == self.bundle.resolve()

    def visible(self) -> set[str]:
        return {p.name for p in self.out.iterdir() if not p.name.startswith(".")}

    def hidden(self) -> list[Path]:
        """Hidden leftovers (temp dirs, temp links); a lock file would not be one."""
        return sorted(p for p in self.out.iterdir()
                      if p.name.startswith(".") and not p.name.endswith(".lock"))


def _previous(out: Path, trained_bundle: Path) -> Previous:
    bundle = Path(shutil.copytree(trained_bundle, out / trained_bundle.name))
    promote_latest(bundle)
    return Previous(out, bundle, _tree(bundle))


@pytest.fixture()
def previous(tmp_path: Path, trained_bundle: Path) -> Previous:
    out = tmp_path / "models"
    out.mkdir()
    return _previous(out, trained_bundle)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -------------------------------------------------------------------- killed mid-save (27)
def test_sigkill_mid_save_leaves_the_previous_bundle_and_latest(
    tmp_path: Path, raw_csv: Path, previous: Previous
) -> None:
    raw_before = _sha256(raw_csv)
    config = write_config(tmp_path / "config.yaml",
                          make_config(tmp_path, **{"data.source": str(raw_csv)}))
    log_path = tmp_path / "train.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from mlservice.cli import main; main()", "train",
             str(config)],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
        caught: Path | None = None
        deadline = time.monotonic() + _TRAIN_LIMIT_S
        try:
            # save_bundle writes the model into a hidden temp dir, then extras (plots, card:
            # seconds), then the manifest, then renames: kill once the model file is there.
            while caught is None and process.poll() is None and time.monotonic() < deadline:
                caught = next((t for t in previous.out.glob(".tmp-bundle-*")
                               if (t / MODEL_FILE).exists()), None)
                if caught is None:
                    time.sleep(_POLL_S)  # poll interval, not synchronization
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(timeout=30)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert caught is not None, f"never saw a bundle being saved:\n{output[-3000:]}"
    assert process.returncode == -signal.SIGKILL, output[-3000:]

    previous.assert_intact()
    assert previous.visible() == {previous.bundle.name, LATEST_LINK}
    assert [m["bundle_id"] for m in find_bundles(previous.out)] == [previous.bundle.name]
    # What a kill leaves is the hidden temp dir, without a manifest: no loader takes it.
    assert previous.hidden() == [caught]
    assert not (caught / METADATA_FILE).exists()
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(caught)
    assert _sha256(raw_csv) == raw_before


# ---------------------------------------------------------------- exception mid-fit (30)
def test_exception_mid_fit_leaves_no_bundle(
    tmp_path: Path, raw_csv: Path, previous: Previous
) -> None:
    raw_before = _sha256(raw_csv)
    # Each parameter is valid alone; RandomForest refuses the pair only inside fit().
    config = make_config(tmp_path, **{
        "data.source": str(raw_csv),
        "model.params": {"n_estimators": 30, "bootstrap": False, "oob_score": True},
    })
    with pytest.raises(ValueError, match="only available if bootstrap=True"):
        train(config, base_dir=tmp_path)
    previous.assert_intact()
    assert previous.visible() == {previous.bundle.name, LATEST_LINK}
    assert previous.hidden() == []
    assert _sha256(raw_csv) == raw_before


# ----------------------------------------------------------- tracking server down (16, 26)
def test_tracking_server_down_is_bounded_and_leaves_complete_bundles_only(
    tmp_path: Path, raw_csv: Path, previous: Previous
) -> None:
    raw_before = _sha256(raw_csv)
    uri = f"http://127.0.0.1:{_closed_port()}"
    config = make_config(tmp_path, **{"data.source": str(raw_csv),
                                      "tracking": {"uri": uri, "timeout_s": 2}})
    outside = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("models/")}
    started = time.monotonic()
    result = train(config, base_dir=tmp_path)
    took = time.monotonic() - started

    assert took < 90  # the MLflow client's defaults (7 retries, 120 s timeout) would hang
    assert result.tracking is None
    assert result.tracking_error is not None and "unreachable" in result.tracking_error
    # The bundle is saved whole as a candidate, but an untracked model is not promoted:
    # model_latest keeps pointing at the previous (tracked) bundle.
    assert "model_latest was not moved" in result.tracking_error
    assert result.promoted is False
    previous.assert_intact()
    new = result.bundle_path
    assert load_bundle(new).metadata["mlflow"] is None
    assert previous.visible() == {previous.bundle.name, new.name, LATEST_LINK}
    assert previous.hidden() == []
    # Training wrote under the output directory only; the raw data is the same bytes.
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("models/")} == outside
    assert _sha256(raw_csv) == raw_before


# ---------------------------------------------------------------- disk full mid-save (27)
@pytest.fixture()
def full_disk(tmp_path: Path, trained_bundle: Path) -> Iterator[Previous]:
    """The output dir on a tmpfs with room for the previous bundle and 256 KiB more."""
    page = 4096
    used = sum(-(-p.stat().st_size // page) * page for p in trained_bundle.rglob("*")
               if p.is_file())
    out = tmp_path / "models"
    out.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={used + 64 * page}", "tmpfs", str(out))
    try:
        yield _previous(out, trained_bundle)
    finally:
        _umount(out)


def test_disk_full_mid_save_leaves_the_previous_bundle_and_latest(
    tmp_path: Path, raw_csv: Path, full_disk: Previous
) -> None:
    raw_before = _sha256(raw_csv)
    config = make_config(tmp_path, **{"data.source": str(raw_csv)})
    with pytest.raises(OSError) as failed:
        train(config, base_dir=tmp_path)
    assert failed.value.errno == errno.ENOSPC
    assert "save_bundle" in [frame.name for frame in traceback.extract_tb(failed.tb)]
    full_disk.assert_intact()
    assert full_disk.visible() == {full_disk.bundle.name, LATEST_LINK}
    assert full_disk.hidden() == []  # save_bundle removed its temp dir
    assert _sha256(raw_csv) == raw_before


# ----------------------------------------------------------------- what a bundle records (29)
def test_metadata_records_data_hash_git_sha_versions_and_cv_score(
    tmp_path: Path, raw_csv: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README").write_text("a project under git\n", encoding="utf-8")
    git = ["git", "-C", str(project), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "README"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    config = make_config(project, **{"data.source": str(raw_csv)})
    meta = load_bundle(train(config, base_dir=project).bundle_path).metadata
    assert meta["data"]["fingerprint"]["sha256"] == _sha256(raw_csv)
    assert meta["git_commit"] == head
    assert meta["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"mlservice", "scikit-learn", "numpy", "pandas", "skops"} <= set(meta["versions"])
    assert all(meta["versions"][k] for k in ("scikit-learn", "numpy", "skops"))
    cv = meta["metrics"]["cv"]["accuracy"]
    assert 0.8 <= cv["mean"] <= 1.0 and cv["std"] >= 0
