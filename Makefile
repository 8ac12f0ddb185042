# Two commands: `make demo` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test lint typecheck pytest install-demo install-dev clean

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
	$(BIN)/ruff check src tests

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/pytest --cov=mlservice --cov-report=term --cov-report=xml:reports/coverage.xml \
		--cov-fail-under=85 --junitxml=reports/junit.xml

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache reports/coverage.xml reports/junit.xml
