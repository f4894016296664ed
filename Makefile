# Two commands do everything on a fresh machine:
#   make run   creates .venv and runs the pipeline (dvc repro on the embedded default, offline)
#   make test  creates .venv and runs the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: env run test test-fast bench clean-env

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

env: $(STAMP)

run: env
	dvc repro
	dvc metrics show

# The tests run on pytest-xdist: a worker per core (at most 4), each test file on one worker,
# each worker's share of the cores for torch in it and in the stages it starts; the default run
# builds beside them from the start (tests/workers.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile

test: env
	python -m pytest $(XDIST)

test-fast: env
	python -m pytest $(XDIST) -m "not slow"

bench: env
	python benchmarks/feature_statistics.py

clean-env:
	rm -rf $(VENV)
