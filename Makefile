# Developer entry points. `make test` is what CI runs (through .ci/run).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: venv demo test matrix lint bench clean chromium

venv: $(STAMP)

# Reinstalls whenever pyproject.toml (dependencies, extras, entry points) changes.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: venv
	$(BIN)/dfcore demo

test: venv chromium
	$(BIN)/python -m pytest -q $(ARGS)

# The dashboard's browser tests drive Debian's Chromium (Playwright from PyPI, no browser
# download). Installed here when missing and apt-get can run; without it those tests skip,
# and fail under CI=true.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium ) >/dev/null 2>&1 \
	  || echo "Chromium is not installed and could not be (apt-get install chromium): the browser tests will skip"; }

# The matrix (tox.ini): Django and Flask cells, lint, typing. pyenv's interpreters are put on
# PATH so tox finds 3.12. A cell whose Python is missing is skipped, but fails under CI=true.
# One cell: make matrix TOXARGS="-e py311-django42"
PYENV_BINS := $(shell ls -d $(HOME)/.pyenv/versions/3.1[123]*/bin 2>/dev/null | tr '\n' ':')
TOXARGS ?=
matrix: venv
	PATH="$(PYENV_BINS)$$PATH" $(BIN)/tox $(if $(filter true,$(CI)),--skip-missing-interpreters false) $(TOXARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy dfcore

bench: venv
	$(BIN)/python bench/burst.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .df
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
