"""Model bundles: save atomically, load safely.

A bundle is a directory ``model_v{version}_{YYYY-MM-DD}[-N]/`` holding ``model.skops``, optional
``model.onnx``, ``metadata.json`` (with the sha256 of every other file), ``MODEL_CARD.md`` and
``plots/``. It is written into a temporary directory on the same filesystem, fsynced, and renamed
into place, so readers only ever see complete bundles. ``model_latest`` is a relative symlink that
is replaced atomically (new link, then ``os.replace``).

Loading never runs pickle: paths and hashes are checked first, then the skops file's types must be
in ``TRUSTED_TYPES`` before skops deserializes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from mlservice.errors import BundleError, MissingExtraError

__all__ = [
    "LATEST_LINK",
    "MAX_METADATA_BYTES",
    "METADATA_FILE",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "TRUSTED_TYPES",
    "Bundle",
    "audit_pipeline_types",
    "check_requirements",
    "find_bundles",
    "load_bundle",
    "load_metadata",
    "load_pipeline",
    "promote_latest",
    "read_verified_metadata",
    "resolve_bundle_path",
    "save_bundle",
    "sha256_file",
    "update_bundle_files",
]

SCHEMA_VERSION = 1
MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
LATEST_LINK = "model_latest"
#: The largest ``metadata.json`` read (a real one is a few hundred kB at most).
MAX_METADATA_BYTES = 64 * 1024 * 1024
_TMP_PREFIX = ".tmp-bundle-"
_LOCK_FILE = ".save.lock"

#: Types skops may construct beyond its own defaults. An explicit list: never ``trusted=True``.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.dtype",
        "collections.OrderedDict",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.link.Interval",
        "sklearn.model_selection._split.KFold",  # the target encoder's seeded folds
        "mlservice.pipelines.features.DatetimeFeatures",
        "mlservice.pipelines.features.Float32Values",
        "mlservice.llm.embeddings.TextEmbedder",
        "mlservice.pipelines.timeseries.DeltaRegressor",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.sklearn.LGBMRanker",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.sklearn.XGBRanker",
    }
)

#: Module a bundle needs → the extra that installs it.
_EXTRA_FOR_MODULE = {"lightgbm": "train", "xgboost": "train", "sentence_transformers": "text"}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded, verified bundle: the fitted pipeline and its metadata."""

    path: Path
    metadata: dict[str, Any]
    pipeline: Any

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(path)
    _fsync_dir(root)


def _hash_files(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != METADATA_FILE
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _bundle_dir_name(version: str, created: datetime, parent: Path) -> str:
    base = f"model_v{version}_{created:%Y-%m-%d}"
    name, n = base, 1
    while (parent / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def save_bundle(
    *,
    output_dir: Path,
    pipeline: Any,
    metadata: dict[str, Any],
    write_extras: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Path:
    """Write a new bundle atomically and return its final path.

    ``write_extras(tmp_dir, metadata)`` may add files (plots, card, onnx) and fill metadata
    before the hashes are taken; on any error the temporary directory is removed.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    # One save at a time per output dir: the final name is chosen and taken under the lock, and
    # any temp dir found while holding it is the leftover of a killed save.
    with (output_dir / _LOCK_FILE).open("a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        for stale in output_dir.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        return _save_locked(output_dir, pipeline, metadata, write_extras)


def _save_locked(
    output_dir: Path,
    pipeline: Any,
    metadata: dict[str, Any],
    write_extras: Callable[[Path, dict[str, Any]], None] | None,
) -> Path:
    import skops.io as sio

    created = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=output_dir))
    try:
        final_name = _bundle_dir_name(str(metadata["version"]), created, output_dir)
        metadata = {
            "schema_version": SCHEMA_VERSION,
            **metadata,
            "bundle_id": final_name,
            "created_at": metadata.get("created_at") or created.isoformat(),
        }
        sio.dump(pipeline, tmp / MODEL_FILE)
        untrusted = set(sio.get_untrusted_types(file=tmp / MODEL_FILE)) - TRUSTED_TYPES
        if untrusted:
            raise BundleError(
                f"the pipeline holds types the loader would refuse: {sorted(untrusted)}; "
                "add them to mlservice.bundle.TRUSTED_TYPES only if they are safe to construct"
            )
        if write_extras is not None:
            write_extras(tmp, metadata)
        metadata["files"] = _hash_files(tmp)
        _write_json_atomic(tmp / METADATA_FILE, metadata)  # manifest last
        _fsync_tree(tmp)
        final = output_dir / final_name
        # os.rename of a directory onto a non-existent name is atomic on POSIX.
        os.rename(tmp, final)
        _fsync_dir(output_dir)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def promote_latest(bundle_path: Path, *, link_name: str = LATEST_LINK) -> Path:
    """Point ``<output_dir>/model_latest`` at ``bundle_path`` (relative link, atomic swap)."""
    parent = bundle_path.parent
    link = parent / link_name
    tmp_link = parent / f".{link_name}.{uuid.uuid4().hex}"
    os.symlink(bundle_path.name, tmp_link)
    try:
        os.replace(tmp_link, link)
    except BaseException:
        tmp_link.unlink(missing_ok=True)
        raise
    _fsync_dir(parent)
    return link


def update_bundle_files(
    bundle_path: Path, files: dict[str, str | bytes], metadata_updates: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Replace text files in an existing bundle (card, …) and re-record their hashes atomically."""
    metadata = load_metadata(bundle_path)
    for rel, content in files.items():
        if rel == METADATA_FILE:
            raise BundleError(f"{METADATA_FILE} is written by update_bundle_files itself")
        target = _safe_member(bundle_path, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        data = content.encode("utf-8") if isinstance(content, str) else content
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        metadata.setdefault("files", {})[rel] = sha256_file(target)
    metadata.update(metadata_updates or {})
    _write_json_atomic(bundle_path / METADATA_FILE, metadata)
    return metadata


def _safe_member(root: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in rel:
        raise BundleError(f"bundle {str(root)!r} lists unsafe file path {rel!r}; refusing it")
    path = root.joinpath(*pure.parts)
    for parent in [path, *path.parents]:
        if parent == root:
            break
        if parent.is_symlink():
            raise BundleError(f"bundle {str(root)!r} file {rel!r} is a symlink; refusing it")
    return path


def load_metadata(path: Path) -> dict[str, Any]:
    """Read ``metadata.json`` of a bundle directory (no verification)."""
    meta_path = Path(path) / METADATA_FILE
    if not meta_path.is_file():
        raise BundleError(
            f"{str(path)!r} is not a model bundle: no {METADATA_FILE}. "
            "Train one with `mlservice train CONFIG`."
        )
    try:
        size = meta_path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise BundleError(
                f"bundle {str(path)!r}: {METADATA_FILE} is {size} bytes, more than the "
                f"{MAX_METADATA_BYTES} a bundle's metadata may hold; the file is not ours"
            )
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers past Python's digit limit;
        # RecursionError, nesting deeper than the parser's stack.
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BundleError(
            f"bundle {str(path)!r}: {METADATA_FILE} is not valid JSON: {reason}"
        ) from exc
    if not isinstance(data, dict):
        raise BundleError(f"bundle {str(path)!r}: {METADATA_FILE} must hold an object")
    return data


def _verify_files(path: Path, metadata: dict[str, Any]) -> None:
    files = metadata.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"bundle {str(path)!r}: {METADATA_FILE} has no hash for {MODEL_FILE}")
    for rel, expected in files.items():
        member = _safe_member(path, str(rel))
        if not member.is_file():
            raise BundleError(f"bundle {str(path)!r} is missing file {rel!r} listed in metadata")
        actual = sha256_file(member)
        if actual != expected:
            raise BundleError(
                f"bundle {str(path)!r}: file {rel!r} does not match its recorded sha256 "
                f"(expected {str(expected)[:12]}…, got {actual[:12]}…); the bundle was modified "
                "or corrupted. Re-train or restore it."
            )


def _check_requirements(path: Path, metadata: dict[str, Any]) -> None:
    requirements = metadata.get("requirements") or []
    if not isinstance(requirements, list):
        raise BundleError(f"bundle {str(path)!r}: 'requirements' in {METADATA_FILE} must be a list")
    for module in requirements:
        if importlib.util.find_spec(str(module)) is None:
            extra = _EXTRA_FOR_MODULE.get(str(module), "all")
            raise MissingExtraError(
                f"bundle {str(path)!r} needs {module!r}, which is not installed: "
                f"pip install 'mlservice[{extra}]'"
            )


@contextlib.contextmanager
def _version_warnings_as_errors() -> Iterator[None]:
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        yield


#: Loaders of skops schema nodes that only rebuild data (no code named by the file runs).
_DATA_LOADERS = frozenset({
    "DictNode", "ListNode", "TupleNode", "SliceNode", "JsonNode", "DTypeNode", "NdArrayNode",
    "SparseMatrixNode", "RandomGeneratorNode", "RandomStateNode",
})
#: Classes our training puts in a pipeline (skops trusts them by default as estimators).
_PIPELINE_TYPES = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._target_encoder.TargetEncoder",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.RobustScaler",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
})
_SCALARS = frozenset({"dict", "list", "tuple", "str", "int", "float", "bool", "NoneType",
                      "slice", "bytes"})  # fmt: skip


def _known_node(node: dict[str, Any]) -> bool:
    """Whether one schema node is a type our training writes, rebuilt without running code."""
    module, name = str(node.get("__module__")), str(node.get("__class__"))
    loader, full = node.get("__loader__"), f"{module}.{name}"
    if module == "builtins":
        return name in _SCALARS and loader in (_DATA_LOADERS | {"TypeNode"})
    if module.split(".")[0] == "numpy":
        return loader in (_DATA_LOADERS | {"TypeNode"})
    if loader not in ("ObjectNode", "LossNode"):
        return False
    return full in _PIPELINE_TYPES or full in TRUSTED_TYPES or module.startswith("sklearn._loss.")


def _only_known_types(schema: Any) -> bool:
    """Every node of a skops schema is ``_known_node`` (an iterative walk: no recursion limit)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and not _known_node(node):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _skops_schema(path: Path, model_path: Path) -> Any:
    """The schema of a skops archive; anything else (e.g. a pickle) stops here, before any
    deserializer sees it."""
    if not zipfile.is_zipfile(model_path):
        raise BundleError(
            f"bundle {str(path)!r}: {MODEL_FILE!r} is not a skops archive; refusing to load it"
        )
    with zipfile.ZipFile(model_path) as archive:
        if "schema.json" not in archive.namelist():
            raise BundleError(f"bundle {str(path)!r}: {MODEL_FILE!r} has no skops schema")
        try:
            return json.loads(archive.read("schema.json"))
        except (ValueError, RecursionError) as exc:
            raise BundleError(
                f"bundle {str(path)!r}: {MODEL_FILE!r} cannot be read: its skops schema is not "
                "valid JSON"
            ) from exc


def _untrusted_types(path: Path, model_path: Path) -> list[str]:
    """skops's own audit: the types it does not trust, refused unless we allow them."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=model_path)
    except Exception as exc:
        raise BundleError(f"bundle {str(path)!r}: {MODEL_FILE!r} cannot be read: {exc}") from exc
    unknown = sorted(set(untrusted) - TRUSTED_TYPES)
    if unknown:
        raise BundleError(
            f"bundle {str(path)!r}: {MODEL_FILE!r} contains types that are not on the allowlist: "
            f"{unknown}; refusing to load it"
        )
    return list(untrusted)


def _audit_skops(path: Path, model_path: Path) -> None:
    """The checks made before deserializing, without deserializing; nothing constructed."""
    schema = _skops_schema(path, model_path)
    if _only_known_types(schema):
        # Written by hand because ``skops.io`` itself costs seconds to import (it imports every
        # scikit-learn estimator, and torch where installed, to build its trusted list): the
        # schema holds only data nodes and the classes our training writes, which skops trusts
        # by default or we allow (TRUSTED_TYPES). Anything else takes skops's own audit.
        return
    _untrusted_types(path, model_path)


def _load_skops(path: Path, model_path: Path) -> Any:
    import skops.io as sio

    _skops_schema(path, model_path)
    untrusted = _untrusted_types(path, model_path)
    try:
        with _version_warnings_as_errors():
            return sio.load(model_path, trusted=list(untrusted))
    except Warning as exc:
        raise BundleError(
            f"bundle {str(path)!r} was saved with another scikit-learn version ({exc}); "
            "re-train it or install the version recorded in metadata.json"
        ) from exc
    except Exception as exc:
        raise BundleError(f"bundle {str(path)!r}: {MODEL_FILE!r} failed to load: {exc}") from exc


def resolve_bundle_path(path: str | Path) -> Path:
    """Follow ``model_latest`` and friends to the real bundle directory."""
    path = Path(path)
    if not path.exists():
        raise BundleError(
            f"bundle {str(path)!r} not found; train one with `mlservice train CONFIG` "
            "or pass an existing bundle directory"
        )
    return path.resolve()


def read_verified_metadata(
    path: str | Path, *, verify: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The real bundle directory and its metadata, schema version and file hashes checked."""
    real = resolve_bundle_path(path)
    metadata = load_metadata(real)
    version = metadata.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {str(path)!r} has schema_version {version!r}, this mlservice reads "
            f"{SCHEMA_VERSION}. Re-train it with this version of mlservice."
        )
    if verify:
        _verify_files(real, metadata)
    return real, metadata


# Public names for the serving layer's lazy loader (inference/lazy_bundle.py).
def check_requirements(path: Path, metadata: dict[str, Any]) -> None:
    """Refuse a bundle whose libraries are not installed, naming the pip command."""
    _check_requirements(path, metadata)


def audit_pipeline_types(path: Path, model_path: Path) -> None:
    """The checks ``load_pipeline`` makes before deserializing (skops archive, allowlisted
    types), without deserializing: a server that serves the ONNX graph runs them at start."""
    _audit_skops(path, model_path)


def load_pipeline(path: Path, model_path: Path) -> Any:
    """Deserialize ``model.skops`` after the zip/schema and type-allowlist checks."""
    return _load_skops(path, model_path)


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load a bundle after checking its schema version, file hashes and skops types."""
    real, metadata = read_verified_metadata(path, verify=verify)
    check_requirements(real, metadata)
    pipeline = load_pipeline(real, real / MODEL_FILE)
    return Bundle(path=real, metadata=metadata, pipeline=pipeline)


def find_bundles(output_dir: Path, *, name: str | None = None) -> list[dict[str, Any]]:
    """Metadata of the bundles in ``output_dir`` (optionally one model name), newest first."""
    found: list[dict[str, Any]] = []
    if not output_dir.is_dir():
        return found
    for child in output_dir.iterdir():
        if child.is_symlink() or not child.is_dir() or child.name.startswith("."):
            continue
        try:
            meta = load_metadata(child)
        except BundleError:
            continue
        if name is None or meta.get("name") == name:
            found.append(meta)
    return sorted(found, key=lambda m: str(m.get("created_at", "")), reverse=True)
