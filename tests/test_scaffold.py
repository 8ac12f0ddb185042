"""Tests of ``mlservice init`` (mlservice.scaffold): the layout, and that the project works.

One project is scaffolded with ``--dvc`` per module; in it the CLI trains, the project's own
tests pass, the notebooks execute with nbclient and ``docker compose config`` accepts the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from mlservice.commands.init import init
from mlservice.scaffold import LAYOUT, ScaffoldError, notebook_from_percent, scaffold_project

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "penguins"
MLSERVICE = Path(sys.executable).parent / "mlservice"
NOTEBOOKS = ("01_eda", "02_feature_engineering", "03_model_experiments")
#: The standard project layout, as a user reads it in the README.
PROJECT_LAYOUT = (
    "src",
    "configs/model_config.yaml",
    "data/raw",
    "data/processed",
    "data/models",
    "notebooks/01_eda.ipynb",
    "notebooks/02_feature_engineering.ipynb",
    "notebooks/03_model_experiments.ipynb",
    "tests",
    "mlflow",
    "Dockerfile",
    "docker-compose.yml",
    "pyproject.toml",
    "MODEL_CARD.md",
    "README.md",
)
TIMEOUT = 300
FAST_TRAIN = ("--set", "tracking.enabled=false", "--set", "cv.folds=2")


#: One OpenMP thread per process: on a small shared machine, thread oversubscription makes
#: gradient boosting several times slower.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **QUIET_ENV},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init") / "penguin_service"
    written = scaffold_project(root, dvc=True)
    assert root / "data/raw/penguins.csv.dvc" in written
    return root


# --------------------------------------------------------------------------- layout


def test_init_creates_the_spec_layout(project: Path) -> None:
    missing = [rel for rel in PROJECT_LAYOUT if not (project / rel).exists()]
    assert missing == []
    assert (project / "src/penguin_service/__init__.py").is_file()
    assert (project / "tests/test_model.py").is_file()
    assert (project / "data/raw/penguins.csv").stat().st_size > 10_000
    assert yaml.safe_load((project / "configs/model_config.yaml").read_text())["targets"]


def test_example_is_a_fresh_init(tmp_path: Path) -> None:
    fresh = tmp_path / EXAMPLE.name
    scaffold_project(fresh)
    stale = [
        rel
        for rel in (r.format(package="penguins") for r in LAYOUT)
        if (EXAMPLE / rel).read_bytes() != (fresh / rel).read_bytes()
    ]
    assert stale == [], "run `python examples/regenerate.py` and commit examples/penguins"
    assert not (EXAMPLE / ".dvc").exists()


def test_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match=r"is not empty \(notes.txt\).*--force"):
        scaffold_project(tmp_path)
    assert not (tmp_path / "README.md").exists()
    scaffold_project(tmp_path, force=True)
    assert (tmp_path / "README.md").is_file()
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("My Project-2", "my_project_2"),
        ("2024-churn", "project_2024_churn"),
        ("mlservice", "mlservice_project"),
    ],
)
def test_package_name_is_a_python_identifier(tmp_path: Path, name: str, package: str) -> None:
    scaffold_project(tmp_path / name)
    assert (tmp_path / name / "src" / package / "__init__.py").is_file()


def test_init_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command(name="init")(init)
    app.command(name="noop")(lambda: None)
    target = tmp_path / "svc"
    result = CliRunner().invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert "created 19 files" in result.output
    again = CliRunner().invoke(app, ["init", str(target)])
    assert isinstance(again.exception, ScaffoldError)


def test_notebook_from_percent_cells() -> None:
    source = '# %% [markdown]\n# # Title\n#\n# text\n\n# %% tags=["parameters"]\nA = 1\n\n# %%\nA\n'
    notebook = json.loads(notebook_from_percent(source))
    cells = notebook["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code"]
    assert cells[0]["source"] == ["# Title\n", "\n", "text"]
    assert cells[1]["metadata"] == {"tags": ["parameters"]}
    assert cells[2]["outputs"] == [] and cells[2]["execution_count"] is None
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] == 5


# --------------------------------------------------------------------------- serving files


def test_dockerfile_serves_the_bundle_with_the_base_install(project: Path) -> None:
    text = (project / "Dockerfile").read_text()
    assert re.search(r'^ARG MLSERVICE="mlservice>=[0-9.]+"$', text, re.MULTILINE)  # no extras
    assert 'RUN pip install "${MLSERVICE}"' in text
    assert "COPY --chown=app:app ${BUNDLE}/ /app/data/models/model_latest/" in text
    assert "\nUSER app\n" in text
    assert "HEALTHCHECK" in text and "/health" in text
    assert 'CMD ["mlservice", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"], Path.cwd()).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (apt: docker-compose)")


def test_compose_config_is_valid_and_needs_the_password(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    compose = [*_compose(), "-f", "docker-compose.yml", "config"]
    refused = subprocess.run(
        compose, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD" in refused.stderr + refused.stdout
    ok = subprocess.run(
        compose,
        cwd=project,
        env={**env, "POSTGRES_PASSWORD": "s3cretpw"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    config = yaml.safe_load(ok.stdout)
    assert set(config["services"]) == {"api", "mlflow", "postgres"}
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cretpw"
    assert "healthcheck" in config["services"]["postgres"]
    assert "s3cretpw" not in (project / "docker-compose.yml").read_text()


# --------------------------------------------------------------------------- the project works


def test_train_in_the_project_records_the_dvc_md5(project: Path) -> None:
    result = _run(
        [str(MLSERVICE), "train", "configs/model_config.yaml", *FAST_TRAIN],
        project,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    latest = project / "data/models/model_latest"
    metadata = json.loads((latest / "metadata.json").read_text())
    dvc_meta = yaml.safe_load((project / "data/raw/penguins.csv.dvc").read_text())
    assert metadata["data"]["fingerprint"]["dvc_md5"] == dvc_meta["outs"][0]["md5"]
    assert (latest / "MODEL_CARD.md").is_file()


def test_project_tests_pass(project: Path) -> None:
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_top_to_bottom(project: Path, name: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(project / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells[-1].cell_type == "markdown"
    assert notebook.cells[-1].source.startswith("## Conclusions")
    for index, cell in enumerate(notebook.cells):  # papermill-style parameters: no MLflow here
        if "parameters" in cell.metadata.get("tags", []):
            notebook.cells.insert(index + 1, nbformat.v4.new_code_cell("TRACKING = False"))
            break
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=TIMEOUT,
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    client.execute(env={**os.environ, **QUIET_ENV})  # raises CellExecutionError on failure
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if name != "02_feature_engineering":
        assert any("image/png" in o.get("data", {}) for o in outputs)
    if name == "01_eda":
        assert (project / "reports" / "eda.html").is_file()
