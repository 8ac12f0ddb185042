"""Serving never imports training, tracking or plotting (STYLE §1), checked in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("mlflow", "optuna", "matplotlib", "mlservice.training", "mlservice.reports")

_SCRIPT = """
import json, os, sys
FORBIDDEN = {forbidden!r}

def loaded():
    return sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))

report = {{}}
import mlservice.api
import mlservice.api.main as main
report["after_import"] = loaded()
report["app_built_at_import"] = "app" in vars(main)

from fastapi.testclient import TestClient
from mlservice.api import create_app
app = create_app(os.environ["MLSERVICE_BUNDLE"])
with TestClient(app) as client:
    report["ready"] = client.get("/health/ready").status_code
    report["docs"] = client.get("/docs").status_code
report["after_create_app"] = loaded()

lazy = main.app  # built on first access, from MLSERVICE_BUNDLE
report["lazy_app"] = type(lazy).__name__
report["lazy_cached"] = main.app is lazy
report["after_lazy_app"] = loaded()
print(json.dumps(report))
"""


def test_serving_imports_no_training_stack(trained_bundle: Path) -> None:
    env = {**os.environ, "MLSERVICE_BUNDLE": str(trained_bundle)}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(forbidden=FORBIDDEN)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["app_built_at_import"] is False
    assert report["ready"] == 200 and report["docs"] == 200
    assert report["after_create_app"] == []
    assert report["lazy_app"] == "FastAPI" and report["lazy_cached"] is True
    assert report["after_lazy_app"] == []


def test_unknown_module_attribute_is_an_attribute_error() -> None:
    import mlservice.api.main as main

    with pytest.raises(AttributeError, match="has no attribute 'not_there'"):
        main.not_there  # noqa: B018
