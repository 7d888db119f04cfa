# Every target works on a fresh machine that has only python3: the venv is built on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Headless runs, `make ui` and the daemon share one instance: its run history, pools and schedules.
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# Absolute, so that the UI, the daemon and headless runs write the same folder wherever they start.
export ACTIVITY_DATA_DIR ?= $(CURDIR)/data

# The UI's port: make ui PORT=3001
PORT ?= 3000

.PHONY: demo test lint bench ui run backfill clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# The instance's settings live in deploy/local/, not at the top: Dagster warns about a dagster.yaml in the
# folder it starts in whenever DAGSTER_HOME points elsewhere.
$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $@

demo: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m activity_pipeline.demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg check defs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m bench.run_all

ui: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev --port $(PORT)

# One day of the daily job (scan, checks, views), headless, into the instance `make ui` shows:
#   make run DAY=2026-11-24
run: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	@test -n "$(DAY)" || { echo "usage: make run DAY=YYYY-MM-DD" >&2; exit 2; }
	$(BIN)/dg launch --job daily_activities --partition $(DAY)

# Days FROM..TO (inclusive), one run each, oldest first, into the same instance; goes on past a failed day
# and fails at the end if any did:  make backfill FROM=2026-11-01 TO=2026-11-24
backfill: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD" >&2; exit 2; }
	@days=$$($(BIN)/python -m activity_pipeline.days $(FROM) $(TO)) || exit 2; failed=""; \
	for day in $$days; do \
	  echo "== $$day"; $(BIN)/dg launch --job daily_activities --partition $$day || failed="$$failed $$day"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed (make run DAY=... re-runs one)" >&2; exit 1; fi

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data/activities data/*.duckdb
