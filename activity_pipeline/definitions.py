"""The project's definitions: `dg` finds them here, and so does `dagster ... -m activity_pipeline.definitions`.

What lives in `activity_pipeline/defs/` is found by `dg.load_from_defs_folder`: the `ActivityTenants`
component (`defs/tenants/defs.yaml`) builds each tenant's asset, checks, job, schedule and sensors, and the
DuckDB views over them all. The resources, which depend on the environment (a real tenant or the demo
tenant, for each tenant), are chosen here.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline import config
from activity_pipeline.defs.resources import resources_for
from activity_pipeline.mdca import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Dagster features this project relies on knowingly, each silenced by its own message and nothing wider:
# partitioned checks (a preview) make a check's verdict per day; BackfillPolicy (beta) keeps one day a run;
# Dagster itself passes `execution_type` (beta) when it copies checks that a component built.
ACCEPTED_WARNINGS = (
    r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    r"Parameter `backfill_policy` of function `asset` is currently in beta",
    r"Parameter `execution_type` of function `AssetsDefinition.__init__` is currently in beta",
)


def _accept_known_warnings() -> None:
    for message in ACCEPTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


_accept_known_warnings()


def build_defs(resources: Mapping[str, Any]) -> dg.Definitions:
    """The project's definitions with these resources.

    `defs` uses the resources the environment calls for; tests use the same definitions with theirs:

    >>> from activity_pipeline.defs.resources import ActivityStorage, DemoTenantResource
    >>> d = build_defs({"mdca_default": DemoTenantResource(), "storage": ActivityStorage(data_dir="/tmp/x")})
    >>> d.resolve_job_def("default_daily_activities").name
    'default_daily_activities'
    """
    # Also here, not only at import: a caller may have reset the filters since (pytest does, per test).
    with warnings.catch_warnings():
        _accept_known_warnings()
        found = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    return dg.Definitions.merge(found, dg.Definitions(resources=dict(resources)))


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions for this process's environment.

    Dagster asks for them several times in one run (six in a `dg launch` of the daily job); they are built
    once for each environment, tenants file and UTC day, so a run does not pay for loading them again.
    """
    tenants_file = os.environ.get("ACTIVITY_TENANTS_FILE", "").strip()
    try:
        version = os.stat(tenants_file).st_mtime_ns if tenants_file else 0
    except OSError:
        version = -1  # config.load() says what is wrong with it
    try:
        return _defs_for(tuple(sorted(os.environ.items())), version, dt.datetime.now(dt.UTC).date())
    except ConfigError as exc:
        raise _stop_loading(exc) from None


def _stop_loading(exc: ConfigError) -> BaseException:
    """A configuration error, printed first and alone: a person fixes a variable or a line of the tenants file,
    and a traceback through Dagster's loader would bury that. A command (`dg launch`, `dagster job execute`)
    then exits with status 2. A code server (the UI's and the daemon's) raises it instead, so that the UI shows
    it as the code location's error, where the person looking at the UI will see it."""
    print(f"activity_pipeline: configuration error: {exc}", file=sys.stderr, flush=True)
    if {"grpc", "code-server"} & set(sys.argv[1:3]):
        return ConfigError(str(exc))
    return SystemExit(2)


@functools.lru_cache(maxsize=4)
def _defs_for(environment: tuple[tuple[str, str], ...], tenants_file_version: int, today: dt.date) -> dg.Definitions:
    return build_defs(resources_for(config.load(dict(environment))))
