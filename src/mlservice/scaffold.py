"""``mlservice init``: scaffold an ML service project with the standard layout (see README.md).

Templates live in ``mlservice/scaffold_templates/`` (``*.tmpl``, ``{{ key }}`` placeholders);
notebooks are kept there as percent-format scripts (``# %%`` cells) and written as ``.ipynb``.
The starter is the penguins demo: its config, and its data written from ``palmerpenguins``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path

from mlservice.errors import MlserviceError

__all__ = ["LAYOUT", "ScaffoldError", "notebook_from_percent", "scaffold_project"]

#: Every path ``scaffold_project`` creates (``{package}`` is the project's import name).
LAYOUT: tuple[str, ...] = (
    "README.md",
    "pyproject.toml",
    "Dockerfile",
    "docker-compose.yml",
    "docker/mlflow.Dockerfile",
    ".dockerignore",
    ".gitignore",
    ".env.example",
    "MODEL_CARD.md",
    "src/{package}/__init__.py",
    "tests/test_model.py",
    "configs/model_config.yaml",
    "data/raw/penguins.csv",
    "data/processed/.gitkeep",
    "data/models/.gitkeep",
    "mlflow/.gitkeep",
    "notebooks/01_eda.ipynb",
    "notebooks/02_feature_engineering.ipynb",
    "notebooks/03_model_experiments.ipynb",
)
_TEMPLATE_FOR = {
    "src/{package}/__init__.py": "package/__init__.py.tmpl",
    ".dockerignore": "dockerignore.tmpl",
    ".gitignore": "gitignore.tmpl",
    ".env.example": "env.example.tmpl",
}
_RAW_DATA = "data/raw/penguins.csv"
_FALLBACK_MLFLOW = "3.1.4"  # MLflow server image when mlflow itself is not installed
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_RESERVED_PACKAGES = frozenset({"mlservice", "src", "tests", "test", "data", "notebooks"})
_TOOL_TIMEOUT_S = 120


class ScaffoldError(MlserviceError, ValueError):
    """The project directory cannot be scaffolded (not empty, or a needed tool is missing)."""


def scaffold_project(directory: Path, *, dvc: bool = False, force: bool = False) -> list[Path]:
    """Create the project layout in ``directory``; return the files written, sorted.

    A non-empty ``directory`` is refused unless ``force`` (then template files are overwritten
    and other files are left alone). ``dvc`` runs ``dvc init`` (after ``git init`` when the
    directory is not inside a git work tree) and ``dvc add data/raw/penguins.csv``.
    """
    root = Path(directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{str(root)!r} is a file; give a directory for the new project")
    if root.is_dir() and any(root.iterdir()) and not force:
        entries = sorted(p.name for p in root.iterdir())
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise ScaffoldError(
            f"directory {str(root)!r} is not empty ({shown}); choose a new directory, or pass "
            "--force to write the template files into it (existing files with the same names "
            "are overwritten)"
        )
    tools = _find_dvc_tools() if dvc else None
    values = _template_values(root)
    written: list[Path] = []
    for rel in LAYOUT:
        target = root / rel.format(package=values["package"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_content(rel, values))
        written.append(target)
    if tools is not None:
        written.append(_init_dvc(root, tools, force=force))
    return sorted(written)


# --------------------------------------------------------------------------- content


def _content(rel: str, values: dict[str, str]) -> bytes:
    if rel.endswith(".gitkeep"):
        return b""
    if rel == _RAW_DATA:
        from palmerpenguins import load_penguins

        return load_penguins().to_csv(index=False, lineterminator="\n").encode("utf-8")
    if rel == "configs/model_config.yaml":
        from mlservice.training.demo import DEMO_CONFIG

        return DEMO_CONFIG.encode("utf-8")
    if rel.endswith(".ipynb"):
        source = _render(_template(f"{rel.removesuffix('.ipynb')}.py.tmpl"), values)
        return notebook_from_percent(source).encode("utf-8")
    name = _TEMPLATE_FOR.get(rel, f"{rel}.tmpl")
    return _render(_template(name), values).encode("utf-8")


def _template(name: str) -> str:
    return (resources.files("mlservice") / "scaffold_templates" / name).read_text(encoding="utf-8")


def _render(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{ {key} }}}} has no value")
        return values[key]

    return _PLACEHOLDER.sub(replace, text)


def _template_values(root: Path) -> dict[str, str]:
    import yaml

    from mlservice.training.demo import DEMO_CONFIG

    raw_name = root.name or "ml-project"
    package = re.sub(r"\W+", "_", raw_name.lower()).strip("_") or "ml_project"
    if package[0].isdigit():
        package = f"project_{package}"
    if package in _RESERVED_PACKAGES:
        package = f"{package}_project"
    project = re.sub(r"[^a-z0-9.]+", "-", raw_name.lower()).strip("-.") or "ml-project"
    return {
        "project": project,
        "package": package,
        "model_name": str(yaml.safe_load(DEMO_CONFIG)["name"]),
        "mlservice_version": _version("mlservice") or "0.1.0",
        "mlflow_version": _version("mlflow") or _FALLBACK_MLFLOW,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def notebook_from_percent(source: str) -> str:
    """Convert a percent-format script (``# %%`` code cells, ``# %% [markdown]`` cells,
    ``# %% tags=["parameters"]``) to nbformat 4.5 JSON, without outputs."""
    cells: list[dict[str, object]] = []
    header: str | None = None
    body: list[str] = []

    def flush() -> None:
        if header is None:
            return
        lines = "\n".join(body).strip("\n").splitlines()
        markdown = "[markdown]" in header
        if markdown:
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        tags = re.search(r"tags=(\[.*\])", header)
        cell: dict[str, object] = {
            "cell_type": "markdown" if markdown else "code",
            "id": f"cell-{len(cells) + 1:02d}",
            "metadata": {"tags": json.loads(tags.group(1))} if tags else {},
            "source": [line + "\n" for line in lines[:-1]] + lines[-1:],
        }
        if not markdown:
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            header, body = line, []
        else:
            body.append(line)
    flush()
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- DVC


def _find_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # the venv's own tool, even when not activated
    return str(beside) if beside.is_file() else shutil.which(name)


def _find_dvc_tools() -> tuple[str, str | None]:
    dvc = _find_tool("dvc")
    if dvc is None:
        raise ScaffoldError(
            "--dvc needs DVC, which is not installed; pip install 'dvc>=3.50' and run again"
        )
    return dvc, shutil.which("git")


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        done = subprocess.run(
            args,
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScaffoldError(f"`{' '.join(args)}` could not run in {str(root)!r}: {exc}") from exc
    return done


def _init_dvc(root: Path, tools: tuple[str, str | None], *, force: bool) -> Path:
    """``dvc init`` + ``dvc add`` the raw data; return the ``.dvc`` file."""
    dvc, git = tools
    inside_git = git is not None and _run([git, "rev-parse", "--git-dir"], root).returncode == 0
    if git is not None and not inside_git:
        _check(_run([git, "init", "-q"], root), "git init")
    init = [dvc, "init", "-q"]
    if git is None:
        init.append("--no-scm")
    elif inside_git and _run([git, "rev-parse", "--show-toplevel"], root).stdout.strip() != str(
        root
    ):
        init.append("--subdir")  # a project inside a bigger repository
    if force and (root / ".dvc").exists():
        init.append("-f")
    _check(_run(init, root), "dvc init")
    _check(_run([dvc, "config", "core.analytics", "false"], root), "dvc config")
    _check(_run([dvc, "add", "-q", _RAW_DATA], root), f"dvc add {_RAW_DATA}")
    dvc_file = root / f"{_RAW_DATA}.dvc"
    if not dvc_file.is_file():
        raise ScaffoldError(f"dvc add did not write {str(dvc_file)!r}")
    return dvc_file


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise ScaffoldError(f"`{what}` failed (exit {done.returncode}): {detail}")
