"""The project's definitions: `dg` finds them here, and so does `dagster ... -m activity_pipeline.definitions`.

Everything is in `activity_pipeline/defs/`, found by `dg.load_from_defs_folder`: the `ActivityTenants`
component (`defs/tenants/defs.yaml`, its type in `components/`) reads the configuration once and builds the
`activities` asset partitioned by day and tenant, its checks, jobs, schedules, sensors and resources, and the
DuckDB views over them all.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline import config
from activity_pipeline.components.tenants import tenants_definitions
from activity_pipeline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Dagster features this project relies on knowingly, each silenced by its own message and nothing wider:
# partitioned checks (a preview) make a check's verdict per day; BackfillPolicy (beta) keeps one day a run;
# Dagster itself passes `execution_type` (beta) when it copies checks that a component built, and `owners` (beta)
# when it copies a sensor that targets an op job (the compaction sensors).
ACCEPTED_WARNINGS = (
    r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
    r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    r"Parameter `backfill_policy` of function `asset` is currently in beta",
    r"Parameter `execution_type` of function `AssetsDefinition.__init__` is currently in beta",
)


def _accept_known_warnings() -> None:
    for message in ACCEPTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


_accept_known_warnings()


def build_defs(resources: Mapping[str, Any], settings: config.PipelineConfig | None = None) -> dg.Definitions:
    """The project's definitions with these resources instead of the configuration's: the seam tests and
    benchmarks use. `settings` defaults to the configuration of this process's environment.

    >>> from activity_pipeline.components.resources import ActivityStorage, DemoTenantResource, TenantClients
    >>> clients = TenantClients({"default": DemoTenantResource()})
    >>> d = build_defs({"mdca": clients, "storage": ActivityStorage(data_dir="/tmp/x")})
    >>> d.resolve_job_def("daily_activities").name
    'daily_activities'
    """
    # Also here, not only at import: a caller may have reset the filters since (pytest does, per test).
    with warnings.catch_warnings():
        _accept_known_warnings()
        built = tenants_definitions(settings or config.load())
    return dg.Definitions.merge(built, dg.Definitions(resources=dict(resources)))


@dg.definitions
def defs() -> dg.Definitions:
    """The definitions of the configuration in this process's environment (see the component)."""
    try:
        return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    except Exception as exc:
        error = _config_error(exc)
        if error is None:
            raise
        raise _stop_loading(error) from None


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The ConfigError behind `exc`, which Dagster's loader may have wrapped, or None."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _stop_loading(exc: ConfigError) -> BaseException:
    """A configuration error, printed first and alone: a person fixes a variable or a line of the tenants file,
    and a traceback through Dagster's loader would bury that. A command (`dg launch`, `dagster job execute`)
    then exits with status 2. A code server (the UI's and the daemon's) raises it instead, so that the UI shows
    it as the code location's error, where the person looking at the UI will see it."""
    print(f"activity_pipeline: configuration error: {exc}", file=sys.stderr, flush=True)
    if {"grpc", "code-server"} & set(sys.argv[1:3]):
        return ConfigError(str(exc))
    return SystemExit(2)
