# Every target works on a fresh machine that has only python3: the venv is built on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Headless runs, `make ui` and the daemon share one instance: its run history, pools and schedules. The one
# DAGSTER_HOME names (a production instance: deploy/dagster.yaml), else .dagster_home/ here.
DEFAULT_DAGSTER_HOME := $(CURDIR)/.dagster_home
export DAGSTER_HOME ?= $(DEFAULT_DAGSTER_HOME)
# Absolute, so that the UI, the daemon and headless runs write the same folder wherever they start.
export ACTIVITY_DATA_DIR ?= $(CURDIR)/data

# Headless runs log at INFO (progress, warnings, errors), not every engine event, one short line each; an expected
# failure is its cause on one line (activity_pipeline/components/console.py).
RUN_LOGS := {"loggers": {"brief": {"config": {"log_level": "INFO"}}}}

# The UI's port: make ui PORT=3001; and the address it listens on, this machine only unless UI_HOST says otherwise
# (the UI has no login of its own: docs/deployment.md).
PORT ?= 3000
UI_HOST ?= 127.0.0.1

# With no tenant configured, the demo, the UI and headless runs read two built-in demo tenants side by side.
# (Tenants listed in the component's own YAML, activity_pipeline/defs/tenants/defs.yaml, count as configured; so do
# credential variables without MDCA_API_URL, which the configuration check then names as a mistake.)
ifeq ($(strip $(ACTIVITY_TENANTS_FILE)$(MDCA_API_URL)$(MDCA_API_TOKEN)$(MDCA_TENANT_ID)$(MDCA_CLIENT_ID)$(MDCA_CLIENT_SECRET)$(shell grep -s '^  tenants:' activity_pipeline/defs/tenants/defs.yaml)),)
demo ui run backfill compact check retention tenants verify upgrade: export ACTIVITY_TENANTS_FILE := $(CURDIR)/deploy/local/demo-tenants.yaml
endif

.PHONY: help demo test lint bench ui run backfill compact check retention tenants verify upgrade daemon-check clean
.DEFAULT_GOAL := help

# `make` or `make help`: each target with the `##` note on its rule line.
help:  ## this list
	@echo "make <target>   (every target builds .venv on first use; needs only python3)"
	@grep -E '^[a-z][a-z_-]*:.*  ## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z_-]+):.*  ## /  \1\t/' | expand -t 16

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
# The instance's databases are created here, once: runs that start together on a new SQLite instance (two
# tenants, say) would race to create them and one would fail. An instance DAGSTER_HOME names keeps its own
# settings: they are written only where it has none.
$(DAGSTER_HOME)/dagster.yaml: $(if $(filter $(DEFAULT_DAGSTER_HOME),$(DAGSTER_HOME)),deploy/local/dagster.yaml) | $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $@
	$(BIN)/dagster instance migrate >/dev/null

# One run, in the background of the recipe's shell so that a signal to make reaches it: make passes SIGTERM to
# the shell, which passes it on (trap); on SIGINT make passes nothing and the run sees make stop by itself
# (activity_pipeline.launch.stop_with_make). The run ends as interrupted, the day intact; the loop ends with it.
launch_run = $(BIN)/python -m activity_pipeline.launch $(1) $(2) --config-json '$(RUN_LOGS)' $(3) & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid; exit 130' TERM INT HUP; wait $$pid; rc=$$?; trap - TERM INT HUP; \
	[ $$rc -ne 130 ] || exit 130
RUN_TAGS = $(if $(FULL_RESCAN),--tag activity_pipeline/full_rescan=true) $(if $(ALLOW_SHORTER),--tag activity_pipeline/allow_shorter=true)

demo: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## run the daily job for the last 3 days of the demo tenants (or yours), then show what landed
	$(BIN)/python -m activity_pipeline.demo

lint: $(VENV)/.installed-dev  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(DAGSTER_HOME)/dagster.yaml  ## lint, dg check defs, pytest (PYTEST_ARGS='-m "not object_storage and not postgres and not browser"' for the quick ones)
	$(BIN)/dg check defs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev $(DAGSTER_HOME)/dagster.yaml  ## the benchmarks (about three hours: intraday's lag takes one); rewrites bench/RESULTS.md
	$(BIN)/python -m bench.run_all

ui: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI and daemon over the same instance: http://127.0.0.1:3000 (PORT=3001 for another; loopback only unless UI_HOST=)
	$(BIN)/python -m activity_pipeline.ui --host $(UI_HOST) --port $(PORT)

# The configured tenants, one a line, after checking the whole configuration without a request (every mistake at
# once, exit 2); PROBE=1 also makes one cheap authenticated request per tenant, each one's result on its line.
tenants: $(VENV)/.installed  ## [PROBE=1]: check the configuration (every mistake at once); list the tenants, one a line
	@$(BIN)/python -m activity_pipeline.$(if $(PROBE),probe,config)

# The tenants a target runs for (TENANT=, else every configured one), each checked, and DAY checked against
# each one's partitions; leaves them in $$tenants.
tenants_for_day = configured=$$($(BIN)/python -m activity_pipeline.config --names) || exit 2; tenants="$(TENANT)"; \
	[ -n "$$tenants" ] || tenants="$$configured"; \
	for t in $$tenants; do echo "$$configured" | grep -qx "$$t" || \
	  { echo "no tenant named $$t; configured: "$$configured >&2; exit 2; }; done; \
	$(BIN)/python -m activity_pipeline.components.partitions $(DAY) $$tenants || exit 2;

# One day of each tenant's daily job (scan, checks, views), headless, into the instance `make ui` shows;
# TENANT= picks one; FULL_RESCAN=1 scans a stored day anew (ALLOW_SHORTER=1 lets it hold fewer activities):
#   make run DAY=2026-11-24 [TENANT=contoso] [FULL_RESCAN=1 [ALLOW_SHORTER=1]]
run: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## DAY=YYYY-MM-DD [TENANT=name] [FULL_RESCAN=1]: one day of each tenant's daily job (or one tenant's), headless
	@test -n "$(DAY)" || { echo "usage: make run DAY=YYYY-MM-DD [TENANT=name] [FULL_RESCAN=1]" >&2; exit 2; }
	@$(tenants_for_day) \
	failed=""; for t in $$tenants; do \
	  echo "== $$t $(DAY)"; $(call launch_run,daily_activities,"$(DAY)|$$t",$(RUN_TAGS)); \
	  $(BIN)/python -m activity_pipeline.run_summary daily_activities $(DAY) $$t || rc=1; [ $$rc -eq 0 ] || failed="$$failed $$t:$(DAY)"; \
	done; \
	if [ -n "$$failed" ]; then $(BIN)/python -m activity_pipeline.run_summary --failed daily_activities $$failed; exit 1; fi

# One stored day of each tenant (or the one named) compacted now, whether or not it has settled: rewritten as one
# file of large row groups ordered by timestamp, verified, swapped in (docs/operations.md#compaction):
#   make compact DAY=2026-11-24 [TENANT=contoso]
compact: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## DAY=YYYY-MM-DD [TENANT=name]: compact one stored day of each tenant (or one tenant's)
	@test -n "$(DAY)" || { echo "usage: make compact DAY=YYYY-MM-DD [TENANT=name]" >&2; exit 2; }
	@$(tenants_for_day) \
	failed=""; for t in $$tenants; do \
	  echo "== $$t $(DAY) compaction"; $(call launch_run,compact_day,"$(DAY)|$$t"); \
	  [ $$rc -eq 0 ] || failed="$$failed $$t:$(DAY)"; \
	done; \
	if [ -n "$$failed" ]; then $(BIN)/python -m activity_pipeline.run_summary --failed compact_day $$failed; exit 1; fi

# A stored day's checks alone, for each tenant (or the one named), against the service's count now; the day is not
# collected (docs/checks.md):  make check DAY=2026-11-24 [TENANT=contoso]
check: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## DAY=YYYY-MM-DD [TENANT=name]: a stored day's checks alone, against the service now
	@test -n "$(DAY)" || { echo "usage: make check DAY=YYYY-MM-DD [TENANT=name]" >&2; exit 2; }
	@$(tenants_for_day) \
	failed=""; for t in $$tenants; do \
	  echo "== $$t $(DAY) checks"; $(call launch_run,check_day,"$(DAY)|$$t"); \
	  $(BIN)/python -m activity_pipeline.run_summary check_day $(DAY) $$t || rc=1; [ $$rc -eq 0 ] || failed="$$failed $$t:$(DAY)"; \
	done; \
	if [ -n "$$failed" ]; then $(BIN)/python -m activity_pipeline.run_summary --failed check_day $$failed; exit 1; fi

# Each tenant's days older than its keep_days deleted now (or one tenant's), each with an audit record; the DuckDB
# file shows it at once (docs/operations.md#retention-keep_days):  make retention [TENANT=contoso]
retention: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## [TENANT=name]: delete the days older than each tenant's keep_days now
	@$(BIN)/python -m activity_pipeline.config --names >/dev/null || exit 2
	@$(call launch_run,retention,,--config-json '{"ops": {"delete_expired_days": {"config": {"tenant": "$(TENANT)"}}}}'); \
	[ $$rc -ne 2 ] || exit 2; $(BIN)/python -m activity_pipeline.run_summary --job retention

# Days FROM..TO (inclusive), one run per tenant and day, oldest first, into the same instance; goes on past a
# failed run and fails at the end if any did:  make backfill FROM=2026-11-01 TO=2026-11-24 [TENANT=contoso]
backfill: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## FROM=YYYY-MM-DD TO=YYYY-MM-DD [TENANT=name]: days FROM..TO, one run per tenant and day
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD [TENANT=name]" >&2; exit 2; }
	@days=$$($(BIN)/python -m activity_pipeline.days $(FROM) $(TO)) || exit 2; \
	configured=$$($(BIN)/python -m activity_pipeline.config --names) || exit 2; tenants="$(TENANT)"; \
	[ -n "$$tenants" ] || tenants="$$configured"; \
	for t in $$tenants; do echo "$$configured" | grep -qx "$$t" || \
	  { echo "no tenant named $$t; configured: "$$configured >&2; exit 2; }; done; \
	failed=""; for day in $$days; do for t in $$tenants; do \
	  echo "== $$t $$day"; $(call launch_run,daily_activities,"$$day|$$t"); \
	  $(BIN)/python -m activity_pipeline.run_summary daily_activities $$day $$t || rc=1; [ $$rc -eq 0 ] || failed="$$failed $$t:$$day"; \
	done; done; \
	if [ -n "$$failed" ]; then echo "make run DAY=... TENANT=... re-runs one day of one tenant" >&2; \
	  $(BIN)/python -m activity_pipeline.run_summary --failed daily_activities $$failed; exit 1; fi

# Every stored day (or the one named) read again whole against the digests taken when it was written; exit 1
# naming each damaged day and its repair:  make verify [DAY=2026-11-24] [TENANT=contoso]
verify: $(VENV)/.installed  ## [DAY=YYYY-MM-DD] [TENANT=name]: read stored days again, against their digests; exit 1 naming each damaged day and its repair
	@$(BIN)/python -m activity_pipeline.verify $(if $(DAY),--day $(DAY)) $(if $(TENANT),--tenant $(TENANT))

upgrade: $(VENV)/.installed  ## [DAY=YYYY-MM-DD] [TENANT=name]: derive stored days' typed columns again from raw, where they are of an older version
	@$(BIN)/python -m activity_pipeline.upgrade $(if $(DAY),--day $(DAY)) $(if $(TENANT),--tenant $(TENANT))

# Whether the daemon is running now, from its heartbeats (exit 1 naming each stale one); unlike
# `dagster-daemon liveness-check`, which says "live" for 30 minutes after the daemon died.
daemon-check: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml  ## is the daemon running now? (its heartbeats within 2 minutes; exit 1 if not)
	@$(BIN)/python -m activity_pipeline.daemon_check

clean:  ## remove the venv, the instance (.dagster_home/ only), the emulators and the default data folder (data/)
	rm -rf $(VENV) $(DEFAULT_DAGSTER_HOME) .azurite data
