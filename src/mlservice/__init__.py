"""mlservice: a dataset and one YAML file → a tracked, quality-gated, documented, served model."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mlservice")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
