"""Content fingerprints of datasets: sha256 of the file, and DVC's md5 when DVC tracks it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import yaml

__all__ = ["dvc_md5", "fingerprint_file", "fingerprint_frame"]

_CHUNK = 1 << 20


def fingerprint_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 of a DataFrame's contents and column names (for builtin datasets with no file)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC recorded for ``path`` in ``path.dvc``, or None when DVC does not track it."""
    dvc_file = path.with_name(path.name + ".dvc")
    if not dvc_file.is_file():
        return None
    try:
        meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    for out in meta.get("outs", []) or []:
        if isinstance(out, dict) and out.get("md5"):
            return str(out["md5"])
    return None
