# Every target works on a fresh machine that has only python3: the venv is built on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Headless runs, `make ui` and the daemon share one instance: its run history, pools and schedules.
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# Absolute, so that the UI, the daemon and headless runs write the same folder wherever they start.
export ACTIVITY_DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test lint bench ui clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m activity_pipeline.demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg check defs
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m bench.run_all

ui: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data/activities data/*.duckdb
