"""Batch scoring: chunked CSV/Parquet equals in-process predictions; Dask equals chunked."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from palmerpenguins import load_penguins
from typer.testing import CliRunner

from mlservice.commands.predict import predict as predict_command
from mlservice.errors import DataError, SchemaError
from mlservice.inference import Predictor
from mlservice.inference.batch import (
    DEFAULT_CHUNK_SIZE,
    BatchScorer,
    score_file,
    score_file_dask,
)

# dask's own parquet reader still passes inplace= to pandas 3.1 (not our code)
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")

N_ROWS = 50_000
CHUNK = 7_000


def _penguin_rows(n: int, seed: int) -> pd.DataFrame:
    base = load_penguins()
    rng = np.random.default_rng(seed)
    frame = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    noise = rng.normal(0.0, 0.02, size=(n, len(numeric))) * frame[numeric].std().to_numpy()
    frame[numeric] = frame[numeric] + noise
    frame.insert(0, "row_id", np.arange(n, dtype=np.int64))
    return frame


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = _penguin_rows(N_ROWS, seed=7)
    path = tmp_path_factory.mktemp("batch") / "penguins_50k.parquet"
    frame.to_parquet(path, row_group_size=20_000, index=False)
    return path, frame


@pytest.fixture(scope="module")
def chunked_output(
    big_parquet: tuple[Path, pd.DataFrame],
    trained_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Any]:
    path, _frame = big_parquet
    out = tmp_path_factory.mktemp("out") / "scored.parquet"
    predictor = Predictor.from_path(trained_bundle)
    sizes: list[int] = []
    pipeline = predictor.bundle.pipeline
    original = pipeline.predict_proba

    def spy(X: pd.DataFrame) -> Any:  # noqa: N803
        sizes.append(len(X))
        return original(X)

    pipeline.predict_proba = spy  # instance attribute: counts every call into the model
    progress: list[tuple[int, int | None]] = []
    stats = score_file(
        predictor, path, out, chunk_size=CHUNK, id_columns=["row_id"],
        progress=lambda done, total: progress.append((done, total)),
    )
    return out, (stats, sizes, progress)


def test_chunked_parquet_equals_in_process_predictions(
    big_parquet: tuple[Path, pd.DataFrame], chunked_output: tuple[Path, Any], trained_bundle: Path
) -> None:
    _path, frame = big_parquet
    out, (stats, sizes, progress) = chunked_output
    # never loaded whole: every model call saw at most one chunk, one call per chunk
    assert stats.rows == N_ROWS and stats.chunks >= math.ceil(N_ROWS / CHUNK)
    assert max(sizes) <= CHUNK and sum(sizes) == N_ROWS
    assert stats.max_chunk_rows <= CHUNK and stats.pipeline_calls == len(sizes) == stats.chunks
    assert progress[-1] == (N_ROWS, N_ROWS) and len(progress) == stats.chunks

    scored = pd.read_parquet(out)
    assert scored.columns.tolist() == [
        "row_id", "prediction", "confidence", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo"
    ]
    assert scored["row_id"].tolist() == list(range(N_ROWS))  # order kept
    expected = Predictor.from_path(trained_bundle, runtime="sklearn").predict_frame(frame)
    assert scored["prediction"].tolist() == [r["prediction"] for r in expected]
    confidence = [r["confidence"] for r in expected]
    np.testing.assert_allclose(scored["confidence"], confidence, rtol=1e-12)
    for label in ("Adelie", "Chinstrap", "Gentoo"):
        np.testing.assert_allclose(
            scored[f"proba_{label}"], [r["probabilities"][label] for r in expected], rtol=1e-12
        )
    assert set(scored["prediction"]) == {"Adelie", "Chinstrap", "Gentoo"}


def test_csv_input_and_output_match_parquet(
    big_parquet: tuple[Path, pd.DataFrame], chunked_output: tuple[Path, Any],
    trained_bundle: Path, tmp_path: Path,
) -> None:
    _path, frame = big_parquet
    source = tmp_path / "in.csv"
    frame.head(20_000).to_csv(source, index=False)
    out = tmp_path / "scored.csv"
    stats = score_file(
        Predictor.from_path(trained_bundle), source, out, chunk_size=CHUNK, id_columns=["row_id"]
    )
    assert (stats.rows, stats.chunks, stats.max_chunk_rows) == (20_000, 3, CHUNK)
    from_csv = pd.read_csv(out)
    from_parquet = pd.read_parquet(chunked_output[0]).head(20_000)
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False, check_exact=True)


def test_dask_local_cluster_over_partitioned_parquet_equals_chunked(
    big_parquet: tuple[Path, pd.DataFrame], chunked_output: tuple[Path, Any],
    trained_bundle: Path, tmp_path: Path,
) -> None:
    _path, frame = big_parquet
    source = tmp_path / "parts"
    source.mkdir()
    for i, part in enumerate(np.array_split(frame.index.to_numpy(), 4)):
        frame.iloc[part].to_parquet(source / f"part-{i}.parquet", index=False)
    out = tmp_path / "dask_out"
    stats = score_file_dask(
        Predictor.from_path(trained_bundle), source, out, address="local", id_columns=["row_id"]
    )
    assert (stats.rows, stats.chunks, stats.max_chunk_rows) == (N_ROWS, 4, N_ROWS // 4)
    assert len(list(out.glob("*.parquet"))) == 4
    via_dask = pd.read_parquet(out).sort_values("row_id").reset_index(drop=True)
    chunked = pd.read_parquet(chunked_output[0])
    pd.testing.assert_frame_equal(via_dask, chunked, check_exact=True)
    with pytest.raises(DataError, match="exists; remove it"):
        score_file_dask(Predictor.from_path(trained_bundle), source, out, address="local")


def test_dask_scheduler_address_over_tcp(
    big_parquet: tuple[Path, pd.DataFrame], chunked_output: tuple[Path, Any],
    trained_bundle: Path, tmp_path: Path,
) -> None:
    from distributed import LocalCluster

    path, _frame = big_parquet
    predictor = Predictor.from_path(trained_bundle)
    with pytest.raises(DataError, match=r"must be 'local' or tcp://HOST:PORT"):
        score_file_dask(predictor, path, tmp_path / "x", address="http://127.0.0.1:8786")
    # a scheduler reached by its tcp:// address, as a remote cluster would be
    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, protocol="tcp", host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        stats = score_file_dask(
            predictor, path, tmp_path / "out", address=address, id_columns=["row_id"]
        )
    assert stats.rows == N_ROWS
    scored = pd.read_parquet(tmp_path / "out").sort_values("row_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(scored, pd.read_parquet(chunked_output[0]), check_exact=True)


def test_cli_chunk_size_default_is_the_library_default() -> None:
    default = inspect.signature(predict_command).parameters["chunk_size"].default
    assert default == DEFAULT_CHUNK_SIZE


def test_regression_bundle_scores_with_intervals(regression_bundle: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.drop(columns="target")
    source = tmp_path / "diabetes.parquet"
    frame.to_parquet(source, index=False)
    predictor = Predictor.from_path(regression_bundle)
    stats = score_file(predictor, source, tmp_path / "out.parquet", chunk_size=100)
    assert stats.chunks == math.ceil(len(frame) / 100)
    scored = pd.read_parquet(tmp_path / "out.parquet")
    expected = Predictor.from_path(regression_bundle, runtime="sklearn").predict_frame(frame)
    np.testing.assert_allclose(scored["prediction"], [r["prediction"] for r in expected])
    np.testing.assert_allclose(scored["interval_lower"], [r["interval"][0] for r in expected])
    np.testing.assert_allclose(scored["interval_upper"], [r["interval"][1] for r in expected])


def test_bad_value_in_a_later_chunk_names_its_row_and_leaves_no_output(
    trained_bundle: Path, tmp_path: Path
) -> None:
    frame = _penguin_rows(30, seed=1)
    frame.loc[23, "island"] = "Atlantis"
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    with pytest.raises(SchemaError, match=r"row 23, feature 'island' is not a known category"):
        score_file(Predictor.from_path(trained_bundle), source, out, chunk_size=10)
    assert list(tmp_path.iterdir()) == [source]  # no partial output, no temp file


def test_missing_feature_column_is_refused(trained_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    _penguin_rows(5, seed=2).drop(columns=["sex"]).to_parquet(source)
    with pytest.raises(SchemaError, match=r"lacks columns \['sex'\]"):
        score_file(Predictor.from_path(trained_bundle), source, tmp_path / "o.csv")
    with pytest.raises(SchemaError, match=r"clash with output columns"):
        BatchScorer(Predictor.from_path(trained_bundle), id_columns=["prediction"])


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="predict")(predict_command)
    app.command(name="noop")(lambda: None)  # two commands: Typer keeps "predict" a subcommand
    return app


def test_cli_predict_chunked_and_error_exit(trained_bundle: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    _penguin_rows(1_000, seed=3).to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    runner = CliRunner()
    result = runner.invoke(
        _cli(),
        ["predict", str(trained_bundle), str(source), str(out), "--chunk-size", "300",
         "--id-column", "row_id"],
    )
    assert result.exit_code == 0, result.output
    assert "scored 1,000 rows in 4 chunks" in result.output
    assert pq.read_metadata(out).num_rows == 1_000
    bad = runner.invoke(
        _cli(), ["predict", str(trained_bundle), str(source), str(tmp_path / "o.txt")]
    )
    assert bad.exit_code == 2
    assert "must be a .csv or .parquet file" in bad.output and "Traceback" not in bad.output


def test_batch_module_imports_no_training_stack() -> None:
    script = (
        "import json, sys\n"
        "import mlservice.inference.batch\n"
        "bad = ('dask', 'distributed', 'mlflow', 'optuna', 'matplotlib', 'mlservice.training')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad\n"
        "                        or m.startswith('mlservice.training'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_semicolon_cp1252_csv_scores_like_the_plain_csv(
    trained_bundle: Path, tmp_path: Path
) -> None:
    frame = _penguin_rows(1_000, seed=4)
    frame.insert(0, "código", [f"pingüino-{i}" for i in range(len(frame))])
    plain, european = tmp_path / "plain.csv", tmp_path / "europeo.csv"
    frame.to_csv(plain, index=False)
    frame.to_csv(european, sep=";", decimal=",", index=False, encoding="cp1252")
    predictor = Predictor.from_path(trained_bundle)
    expected = score_file(predictor, plain, tmp_path / "a.csv", id_columns=["código"])
    assert expected.read is not None and expected.read["sep"] == ","
    stats = score_file(
        predictor, european, tmp_path / "b.csv", chunk_size=300, id_columns=["código"],
        read={"decimal": ","},
    )
    assert stats.chunks == 4
    read = stats.read
    assert read is not None
    assert (read["sep"], read["decimal"], read["encoding"]) == (";", ",", "cp1252")
    assert any("read as cp1252" in note for note in stats.notes)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "b.csv"), pd.read_csv(tmp_path / "a.csv"), check_exact=True
    )
    without_decimal = tmp_path / "c.csv"
    with pytest.raises(SchemaError, match=r"'bill_length_mm'.*: pass --decimal ','$"):
        score_file(predictor, european, without_decimal, id_columns=["código"])
    assert not without_decimal.exists()
