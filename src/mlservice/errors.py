"""Errors raised by mlservice.

Every error a user can cause is an ``MlserviceError``; the CLI prints its message and exits 2,
the API maps it to a 4xx/503 in one handler. The tree::

    MlserviceError
    ├── ConfigError          invalid YAML / config values (lists every problem with its key path)
    ├── DataError            unreadable dataset, missing columns, raw data changed  (ValueError)
    ├── BundleError          missing / tampered / unknown-typed / incompatible bundle
    │   └── MissingExtraError a bundle or command needs an extra that is not installed
    ├── SchemaError          input that does not match the feature schema (ValueError)
    ├── TrackingError        MLflow tracking store unreachable or refusing
    ├── TargetsNotMetError   the quality gate failed (CLI exit 3)
    └── LLMError             LLM provider missing, refused, unreachable or unparsable output
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "LLMError",
    "MissingExtraError",
    "MlserviceError",
    "SchemaError",
    "TargetsNotMetError",
    "TrackingError",
]


class MlserviceError(Exception):
    """Base class of every error mlservice raises on purpose."""


class ConfigError(MlserviceError, ValueError):
    """The config is invalid; ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        self.problems: list[tuple[str, str]] = problems or []
        if self.problems:
            lines = "\n".join(f"  {path}: {msg}" for path, msg in self.problems)
            noun = "problem" if len(self.problems) == 1 else "problems"
            message = f"{message}: {len(self.problems)} {noun}\n{lines}"
        super().__init__(message)


class DataError(MlserviceError, ValueError):
    """The dataset cannot be read or does not fit the config."""


class BundleError(MlserviceError):
    """A model bundle is missing, tampered with, or cannot be loaded safely."""


class MissingExtraError(BundleError, ImportError):
    """An optional dependency is missing; the message names the pip command that fixes it."""


class SchemaError(MlserviceError, ValueError):
    """Input does not match the model's feature schema."""


class TrackingError(MlserviceError):
    """The MLflow tracking store cannot be reached or refused a call."""


class TargetsNotMetError(MlserviceError):
    """The trained model fell short of its targets (CLI exit code 3)."""


class LLMError(MlserviceError):
    """The LLM provider is not configured, refused, unreachable, or answered unparsable output."""
