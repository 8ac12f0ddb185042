"""Content fingerprints of datasets: sha256 of the file, and its DVC lineage when DVC tracks it.

The md5 a ``.dvc`` file records is only what the data was at ``dvc add`` time: ``dvc_lineage``
hashes the file as DVC does (md5 of the bytes of a single file) and compares, so a file changed
since ``dvc add`` is never recorded under the stale md5.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

__all__ = [
    "DvcLineage",
    "dvc_lineage",
    "dvc_md5",
    "fingerprint_file",
    "fingerprint_frame",
    "md5_file",
]

_CHUNK = 1 << 20

DvcState = Literal["tracked", "modified", "untracked"]


def fingerprint_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: Path, *, dos2unix: bool = False) -> str:
    """md5 of a file's bytes (DVC 3); ``dos2unix`` hashes CRLF as LF, as DVC 2 did for text."""
    digest = hashlib.md5(usedforsecurity=False)
    carry = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            if dos2unix:
                chunk = carry + chunk
                carry = b"\r" if chunk.endswith(b"\r") else b""
                chunk = chunk[: len(chunk) - len(carry)].replace(b"\r\n", b"\n")
            digest.update(chunk)
    digest.update(carry)
    return digest.hexdigest()


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 of a DataFrame's contents and column names (for builtin datasets with no file)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class DvcLineage:
    """What DVC says about a data file, checked against the file itself.

    ``state``: ``tracked`` (the file is what ``dvc add`` recorded), ``modified`` (it changed
    since) or ``untracked`` (no usable ``.dvc`` file). ``md5`` is the data's md5 only when it
    matches the record; ``recorded_md5`` is what the ``.dvc`` file says.
    """

    state: DvcState
    md5: str | None = None
    recorded_md5: str | None = None
    actual_md5: str | None = None
    dvc_file: str | None = None

    def fields(self) -> dict[str, Any]:
        """The keys recorded in ``metadata.json`` under ``data.fingerprint``."""
        return {
            "dvc_md5": self.md5,
            "dvc_recorded_md5": self.recorded_md5,
            "dvc_state": self.state,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recorded_out(path: Path, dvc_file: Path) -> dict[str, Any] | None:
    """The ``outs`` entry of ``dvc_file`` for ``path`` (None when the file is unusable)."""
    try:
        meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    outs = meta.get("outs") if isinstance(meta, dict) else None
    candidates = [o for o in outs or [] if isinstance(o, dict) and o.get("md5")]
    for out in candidates:
        if str(out.get("path", path.name)) == path.name:
            return out
    return candidates[0] if len(candidates) == 1 else None


def dvc_lineage(path: Path) -> DvcLineage:
    """Compare ``path`` with the md5 its ``path.dvc`` file recorded (see ``DvcLineage``)."""
    dvc_file = path.with_name(path.name + ".dvc")
    if not dvc_file.is_file():
        return DvcLineage("untracked")
    out = _recorded_out(path, dvc_file)
    if out is None:
        return DvcLineage("untracked", dvc_file=str(dvc_file))
    recorded = str(out["md5"])
    actual = md5_file(path)
    # DVC 2 .dvc files (no "hash: md5") hashed text files with CRLF read as LF
    legacy = out.get("hash") != "md5" and actual != recorded
    if legacy and md5_file(path, dos2unix=True) == recorded:
        actual = recorded
    state: DvcState = "tracked" if actual == recorded else "modified"
    return DvcLineage(
        state,
        md5=recorded if state == "tracked" else None,
        recorded_md5=recorded,
        actual_md5=actual,
        dvc_file=str(dvc_file),
    )


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC recorded for ``path``, only when the file still matches it; else None."""
    return dvc_lineage(path).md5
