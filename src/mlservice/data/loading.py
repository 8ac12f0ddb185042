"""Read a dataset named by the config: CSV, Parquet, or ``builtin:<name>``. Never writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlservice.config import DataConfig
from mlservice.data.fingerprint import dvc_md5, fingerprint_file, fingerprint_frame
from mlservice.errors import DataError

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset"]


def _sklearn_loader(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame: pd.DataFrame = bunch.frame.copy()
        names = getattr(bunch, "target_names", None)
        # Classification sets ship integer codes; labels with names read better everywhere.
        if names is not None and len(names) and frame["target"].dtype.kind in "iu":
            frame["target"] = pd.Series(list(names)).to_numpy()[frame["target"].to_numpy()]
        return frame

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


#: Datasets that ship inside installed packages (no download).
BUILTIN_DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "breast_cancer": _sklearn_loader("breast_cancer"),
    "diabetes": _sklearn_loader("diabetes"),
    "iris": _sklearn_loader("iris"),
    "wine": _sklearn_loader("wine"),
    "digits": _sklearn_loader("digits"),
    "penguins": _penguins,
}


@dataclass
class Dataset:
    """A loaded dataset and where it came from."""

    frame: pd.DataFrame
    source: str
    path: Path | None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def verify_unchanged(self) -> None:
        """Raise ``DataError`` if the raw file changed since it was loaded."""
        if self.path is None:
            return
        now = fingerprint_file(self.path)
        if now != self.fingerprint["sha256"]:
            raise DataError(
                f"raw data {str(self.path)!r} changed during training "
                f"(sha256 {self.fingerprint['sha256'][:12]}… → {now[:12]}…); "
                "raw data must stay immutable, write derived data to data/processed"
            )


def _read_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read dataset {str(path)!r}: {exc}") from exc


def load_dataset(config: DataConfig, *, base_dir: Path | None = None) -> Dataset:
    """Load and check the dataset of ``config``; relative paths resolve against ``base_dir``."""
    source = config.source
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        loader = BUILTIN_DATASETS.get(name)
        if loader is None:
            raise DataError(
                f"unknown builtin dataset {name!r}; available: {sorted(BUILTIN_DATASETS)}"
            )
        frame = loader()
        dataset = Dataset(
            frame, source, None, {"sha256": fingerprint_frame(frame), "dvc_md5": None}
        )
    else:
        path = Path(source)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise DataError(f"dataset {source!r} not found (looked at {str(path)!r})")
        sha = fingerprint_file(path)
        frame = _read_file(path)
        dataset = Dataset(frame, source, path, {"sha256": sha, "dvc_md5": dvc_md5(path)})
    _check_columns(dataset.frame, config)
    return dataset


def _check_columns(frame: pd.DataFrame, config: DataConfig) -> None:
    columns = [str(c) for c in frame.columns]
    wanted = [config.target, *(config.features or []), *config.drop]
    wanted += [c for c in (config.time_column, config.group_column) if c]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise DataError(
            f"dataset {config.source!r} has no column(s) {missing}; it has {columns}. "
            "Fix data.target / data.features / data.drop in the config."
        )
    if frame.empty:
        raise DataError(f"dataset {config.source!r} has no rows")
    if frame[config.target].isna().all():
        raise DataError(f"target column {config.target!r} is empty")
