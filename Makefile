# Two commands: `make demo` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: audit soak bench demo test lint typecheck pytest serve-smoke system-deps install-demo install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files re-run the install when pyproject.toml changes.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[train]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[all,dev]"
	touch $@ $(VENV)/.demo-installed

install-demo: $(VENV)/.demo-installed
install-dev: $(VENV)/.dev-installed

demo: install-demo
	$(BIN)/mlservice demo

lint: install-dev
	$(BIN)/ruff check src tests bench scripts

typecheck: install-dev
	$(BIN)/mypy

# One OpenMP/BLAS thread per process: the machine has 2 cores and the suite runs servers too.
pytest: install-dev
	OMP_NUM_THREADS=1 $(BIN)/pytest --cov=mlservice --cov-report=term --cov-report=xml:reports/coverage.xml \
		--cov-fail-under=85 --junitxml=reports/junit.xml

# The base install alone (no extras) must serve a bundle: a second venv with `pip install .`.
BASE_VENV := .venv-base
$(BASE_VENV)/.installed: pyproject.toml $(shell find src -name '*.py' 2>/dev/null)
	rm -rf $(BASE_VENV)
	$(PYTHON) -m venv $(BASE_VENV)
	$(BASE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BASE_VENV)/bin/python -m pip install --quiet .
	touch $@

serve-smoke: install-dev $(BASE_VENV)/.installed
	$(BIN)/python scripts/base_install_smoke.py --base-venv $(BASE_VENV)

# Debian tools the tests drive for real: a compose client (parses compose files; no engine) and
# Chromium (headless browser tests). Installed only when missing.
system-deps:
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1 \
	    || ! command -v chromium >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose chromium \
	    >/dev/null; fi

# pip-audit of the installed set (.venv): network trouble never fails the build.
# Report: reports/pip-audit.json (AUDIT_STRICT=1 fails on vulnerabilities with a released fix).
audit: install-dev
	@mkdir -p reports && rm -f reports/pip-audit.json
	-timeout 300 $(BIN)/pip-audit --skip-editable --progress-spinner off --timeout 15 \
		--format json --output reports/pip-audit.json
	$(BIN)/python scripts/pip_audit_summary.py reports/pip-audit.json

# Soak: wrk drives `mlservice serve` for SOAK_DURATION s (e.g. make soak SOAK_DURATION=60).
SOAK_DURATION ?= 600
soak: install-dev
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.soak --duration $(SOAK_DURATION)

test: system-deps lint typecheck pytest serve-smoke audit

# Benchmarks (not part of `make test`): ratios against a baseline measured in the same run.
bench: install-dev
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.batch_scoring
	$(BIN)/python -m bench.explain
	$(BIN)/python -m bench.real_tables

clean:
	rm -rf $(VENV) $(BASE_VENV) .pytest_cache .mypy_cache .ruff_cache reports/coverage.xml reports/junit.xml
