"""A verified bundle whose scikit-learn pipeline is deserialized only when something uses it.

Serving a bundle through its ONNX model never needs ``model.skops``: the server is ready once the
manifest's hashes check out and the onnxruntime session is built. Deserializing the pipeline
(skops, which imports every scikit-learn estimator module to know what it trusts) took longer
than the whole rest of the start-up and most of the memory, so it waits for the first user of
``Bundle.pipeline`` (batch scoring, a fallback to scikit-learn).

The checks are the same as ``load_bundle``'s, only split in time: every file's sha256 when the
bundle is opened; the hash again, the installed extras and the skops type allowlist right before
``model.skops`` is deserialized.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mlservice.bundle import (
    MODEL_FILE,
    Bundle,
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
        super().__init__(path=path, metadata=metadata, pipeline=None)

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    self._pipeline = self._load()
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
    """Schema version and every file's hash checked now; the pipeline deserialized on use."""
    real, metadata = read_verified_metadata(path)
    return LazyBundle(real, metadata)
