"""A verified bundle whose scikit-learn pipeline is deserialized only when something uses it.

Serving a bundle through its ONNX model never needs ``model.skops``: the server is ready once the
manifest's hashes check out and the onnxruntime session is built. Deserializing the pipeline
(skops, which imports every scikit-learn estimator module to know what it trusts) took longer
than the whole rest of the start-up and most of the memory, so it waits for the first user of
``Bundle.pipeline`` (batch scoring, a fallback to scikit-learn).

The checks are the same as ``load_bundle``'s, only split in time. When the bundle is opened: every
file's sha256, and the skops archive's structure and type allowlist (read from its schema,
nothing constructed), so a bundle that ``load_bundle`` would refuse is never served, whichever
runtime serves it. Right before ``model.skops`` is deserialized: the hash again and the
installed extras (a library such as LightGBM is needed only to run the pipeline, not the ONNX
graph). A failure to load is kept: later users get the same error without re-reading the file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mlservice.bundle import (
    MODEL_FILE,
    Bundle,
    audit_pipeline_types,
    check_requirements,
    load_pipeline,
    read_verified_metadata,
    sha256_file,
)
from mlservice.errors import BundleError

__all__ = ["LazyBundle", "open_verified_bundle"]


class LazyBundle(Bundle):
    """A ``Bundle`` whose ``pipeline`` is loaded (and checked) on first access, once."""

    def __init__(self, path: Path, metadata: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._pipeline: Any = None
        self._error: BaseException | None = None
        super().__init__(path=path, metadata=metadata, pipeline=None)

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            with self._lock:
                if self._error is not None:  # failed before: the same answer, no re-hash
                    raise self._error
                if self._pipeline is None:
                    try:
                        self._pipeline = self._load()
                    except Exception as exc:
                        self._error = exc
                        raise
        return self._pipeline

    @pipeline.setter
    def pipeline(self, value: Any) -> None:
        self._pipeline = value

    @property
    def pipeline_loaded(self) -> bool:
        return self._pipeline is not None

    def __repr__(self) -> str:  # the dataclass repr would load the pipeline
        return f"LazyBundle(path={str(self.path)!r}, pipeline_loaded={self.pipeline_loaded})"

    def _load(self) -> Any:
        model_path = self.path / MODEL_FILE
        expected = (self.metadata.get("files") or {}).get(MODEL_FILE)
        if sha256_file(model_path) != expected:
            raise BundleError(
                f"bundle {self.path.name!r}: file {MODEL_FILE!r} does not match its recorded "
                "sha256 (it changed after the bundle was opened); re-train or restore it"
            )
        check_requirements(self.path, self.metadata)
        return load_pipeline(self.path, model_path)


def open_verified_bundle(path: str | Path) -> LazyBundle:
    """Schema version, every file's hash and the skops type audit now; the pipeline
    deserialized on use."""
    real, metadata = read_verified_metadata(path)
    audit_pipeline_types(real, real / MODEL_FILE)
    return LazyBundle(real, metadata)
