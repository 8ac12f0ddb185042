"""Serve a model version of the MLflow registry: ``models:/NAME@ALIAS`` or ``models:/NAME/N``.

Training logs the whole bundle directory as artifacts of its run, under ``bundle/``
(``mlservice.training.tracking``), and registers the scikit-learn model of the same run. A
registry URI is served by resolving the version through the tracking server, downloading that
run's ``bundle/`` into a local cache (``CACHE_ENV`` or ``~/.cache/mlservice/registry``) and
verifying every file's sha256 exactly as for a local bundle. The served model is then the very
bundle that training saved, ONNX graph and all; nothing of the MLflow model format is used.

Only ``mlflow-skinny``'s client API is used (``MlflowClient``, ``mlflow.artifacts``), imported
inside the functions: a server given a plain bundle path never imports MLflow. A watcher can
poll ``registry_watch_key`` (one registry call, no download) and resolve again when it changes:
that is when the alias moved to another version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlservice.bundle import read_verified_metadata
from mlservice.errors import BundleError, ConfigError, TrackingError

__all__ = [
    "ARTIFACT_PATH",
    "CACHE_ENV",
    "RegistryVersion",
    "default_cache_dir",
    "is_registry_uri",
    "parse_registry_uri",
    "registry_watch_key",
    "resolve_registry_uri",
    "resolve_registry_version",
]

#: Where training logs the bundle directory among its run's artifacts.
ARTIFACT_PATH = "bundle"
#: The variable naming the download cache directory.
CACHE_ENV = "MLSERVICE_REGISTRY_CACHE"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))/?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TMP_PREFIX = ".download-"


@dataclass(frozen=True)
class RegistryVersion:
    """One model version of the registry, as an alias or a number resolved it."""

    name: str
    version: str
    run_id: str
    alias: str | None = None

    @property
    def key(self) -> str:
        """Changes exactly when another version (or run) is meant: what a watcher compares."""
        return f"{self.name}/{self.version}/{self.run_id}"


def is_registry_uri(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a registry model (``models:/...``) rather than a directory."""
    return str(value).startswith("models:/")


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = _URI.match(uri.strip())
    if match is None:
        raise ConfigError(
            f"{uri!r} is not a registry model URI; use models:/NAME@ALIAS (e.g. "
            "models:/penguins@champion) or models:/NAME/VERSION"
        )
    return match["name"], match["alias"], match["version"]


def default_cache_dir() -> Path:
    """``$MLSERVICE_REGISTRY_CACHE``, else ``$XDG_CACHE_HOME/mlservice/registry``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlservice" / "registry"


def _client(tracking_uri: str | None) -> Any:
    # Bounded retries: MLflow's defaults (7 retries, 120 s timeouts) hang a start for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise TrackingError(
            "serving a models:/ URI needs the MLflow client: pip install mlflow-skinny"
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_registry_version(uri: str, tracking_uri: str | None = None) -> RegistryVersion:
    """The model version ``uri`` names now (one registry call; nothing downloaded)."""
    name, alias, version = parse_registry_uri(uri)
    client = _client(tracking_uri)
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias is not None
            else client.get_model_version(name, str(version))
        )
    except Exception as exc:  # MLflow raises its own types and plain connection errors
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(f"cannot resolve {uri!r} in the MLflow registry: {reason}") from exc
    run_id = getattr(found, "run_id", None)
    if not run_id:
        raise BundleError(
            f"{uri!r} resolves to version {found.version} of {name!r}, which has no training "
            "run: it was not registered by `mlservice train`, so there is no bundle to serve"
        )
    return RegistryVersion(name=name, version=str(found.version), run_id=str(run_id), alias=alias)


def registry_watch_key(uri: str, tracking_uri: str | None = None) -> str:
    """A string that changes when ``uri`` (an alias) points to another version."""
    return resolve_registry_version(uri, tracking_uri).key


def _target_dir(cache_dir: Path, found: RegistryVersion) -> Path:
    name = _UNSAFE.sub("_", found.name).strip("._") or "model"
    return cache_dir / name / f"v{found.version}-{_UNSAFE.sub('_', found.run_id)[:32]}"


def _verified(path: Path, found: RegistryVersion, tags: dict[str, str] | None) -> Path:
    """``path`` after the bundle checks (schema version, every file's sha256, the run's id)."""
    real, metadata = read_verified_metadata(path)
    expected = (tags or {}).get("bundle_id")
    if expected and metadata.get("bundle_id") != expected:
        raise BundleError(
            f"the bundle logged by run {found.run_id} is {metadata.get('bundle_id')!r}, but the "
            f"run was tagged with bundle {expected!r}; refusing it"
        )
    if str(metadata.get("name")) != found.name:
        raise BundleError(
            f"the bundle of {found.name!r} version {found.version} is named "
            f"{metadata.get('name')!r}; refusing it"
        )
    return real


def _cached(target: Path, found: RegistryVersion) -> Path | None:
    """The cached bundle when it is complete and verifies; a damaged one is removed."""
    if not target.is_dir():
        return None
    try:
        return _verified(target, found, None)
    except BundleError:
        shutil.rmtree(target, ignore_errors=True)
        return None


def _download(found: RegistryVersion, tracking_uri: str | None, staging: Path) -> Path:
    from mlflow.artifacts import download_artifacts

    try:
        local = download_artifacts(
            run_id=found.run_id,
            artifact_path=ARTIFACT_PATH,
            dst_path=str(staging),
            tracking_uri=tracking_uri,
        )
    except Exception as exc:  # MLflow raises its own types and plain I/O errors
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(
            f"cannot download the bundle of {found.name!r} version {found.version} (run "
            f"{found.run_id}, artifacts {ARTIFACT_PATH!r}): {reason}"
        ) from exc
    return Path(local)


def resolve_registry_uri(
    uri: str,
    tracking_uri: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The local, verified bundle directory of the registry model ``uri``.

    The version is resolved now (an alias may have moved); its bundle is downloaded once per
    version into ``cache_dir`` (default ``default_cache_dir()``), written beside its final
    place and renamed into it, so concurrent servers never see half a bundle. A cached copy
    is verified again on every call and downloaded anew when it no longer verifies.
    ``tracking_uri`` defaults to MLflow's own (``MLFLOW_TRACKING_URI``).

    Raises ``ConfigError`` for a malformed URI, ``TrackingError`` when the registry or the
    artifact store cannot be reached or refuses, ``BundleError`` when the download fails
    verification (a file changed, a bundle of another run or model).
    """
    found = resolve_registry_version(uri, tracking_uri)
    target = _target_dir(Path(cache_dir) if cache_dir else default_cache_dir(), found)
    hit = _cached(target, found)
    if hit is not None:
        return hit
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=target.parent))
    try:
        local = _download(found, tracking_uri, staging)
        tags = _run_tags(found, tracking_uri)
        _verified(local, found, tags)
        try:
            local.rename(target)
        except OSError:  # another process put the same version in place first
            hit = _cached(target, found)
            if hit is None:
                raise
            return hit
        return _verified(target, found, tags)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_tags(found: RegistryVersion, tracking_uri: str | None) -> dict[str, str]:
    """The run's tags (``bundle_id`` names the bundle it logged); empty when unreadable."""
    try:
        run = _client(tracking_uri).get_run(found.run_id)
    except Exception:  # the tags are a cross-check; the hashes are the verification
        return {}
    return {str(k): str(v) for k, v in (run.data.tags or {}).items()}
