"""`ActivityTenants`: the Dagster component that builds the definitions of every configured tenant.

The shape (docs/architecture.md): one asset, `activities`, partitioned by (day, tenant); its ten checks in one
step; one daily job, `daily_activities`, a run per tenant and day; one schedule and one sensor per concern
(`late_arrivals`, `service_window_rescue`, `compaction`, the alerts), each iterating the tenants; one compaction job,
one retention job, one verification job; `activities_duckdb` over them all. What grows with the tenants is one
partition key each, and a tenant's resource (`TenantClients`).

The configuration is read once per load (`config.load`): the same validated values build the definitions, the
partitions (whose stored days come from one listing of the dataset) and the resources. Dagster loads the
definitions several times in one run, so they are built once per configuration and UTC day.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import dagster as dg

from activity_pipeline import config
from activity_pipeline.components.alerting import build_alert_sensors
from activity_pipeline.components.assets import build_activities, build_activities_duckdb, rebuild_views
from activity_pipeline.components.automation import build_automation
from activity_pipeline.components.checks import build_checks
from activity_pipeline.components.console import LOGGERS
from activity_pipeline.components.intraday import build_intraday
from activity_pipeline.components.lifecycle import build_lifecycle
from activity_pipeline.components.partitions import TenantDays
from activity_pipeline.components.resources import resources_for
from activity_pipeline.components.verification import build_verification
from activity_pipeline.storage.dataset import open_dataset

CHECK_JOB = "check_day"


class ActivityTenants(dg.Component, dg.Model, dg.Resolvable):
    """Every configured Defender for Cloud Apps tenant: the `activities` asset partitioned by day and tenant, its
    checks, jobs, schedules and sensors.

    The tenants come from `tenants:` here (read by the same parser as a tenants file, errors naming this file's
    lines), else ACTIVITY_TENANTS_FILE, else the MDCA_* variables (one tenant, named by MDCA_TENANT_NAME), else the
    built-in demo tenant. A tenants file set in ACTIVITY_TENANTS_FILE wins over `tenants:` here.
    """

    # The tenants file's `tenants:` and `alerts:` lists, as they would be written there (docs/configuration.md).
    tenants: list[dict[str, Any]] | None = None
    alerts: list[dict[str, Any]] | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        environment = config.snapshot(config.with_component_tenants(dict(config.snapshot().environment), context.path))
        return _definitions(environment, dt.datetime.now(dt.UTC).date())


@functools.lru_cache(maxsize=4)
def _definitions(snapshot: config.Snapshot, today: dt.date) -> dg.Definitions:
    settings = config.load(dict(snapshot.environment))
    return dg.Definitions.merge(tenants_definitions(settings, today), dg.Definitions(resources=resources_for(settings)))


def tenants_definitions(settings: config.PipelineConfig, today: dt.date | None = None) -> dg.Definitions:
    """The definitions of every tenant in `settings` (resources aside), partitioned up to `today`'s yesterday."""
    today = today or dt.datetime.now(dt.UTC).date()
    tenants = settings.tenants
    dataset = open_dataset(settings.data_dir, settings.data_url)
    grid = TenantDays.of(tenants, dataset, today)
    # A deployment of one tenant without a tenants file may hold days from before tenants existed: its runs adopt them.
    adopt = settings.tenants_file is None and len(tenants) == 1
    # The UI's freshness follows the shortest interval of the tenants collected intraday by the daemon.
    shortest = min((t.intraday_minutes for t in tenants if t.automation and t.intraday_minutes > 0), default=0)
    activities = build_activities(grid, adopt_legacy_days=adopt, intraday_minutes=shortest)
    # The service window's end is watched for real tenants only: a demo tenant's days are made again on demand.
    demo = {t.name for t in tenants if t.uses_demo_tenant}
    start_dates = {n: d for n, d in grid.first.items() if n not in demo}
    intervals = {t.name: t.intraday_minutes for t in tenants}
    duckdb = build_activities_duckdb(activities, start_dates, intervals)
    views = functools.partial(rebuild_views, start_dates=start_dates, intervals=intervals)
    checks = build_checks(activities, grid, demo=demo)
    automation = build_automation(tenants, activities, duckdb, grid)
    lifecycle = build_lifecycle(tenants, activities, grid, views, object_storage=settings.data_url is not None)
    verification_job, verification_schedule = build_verification(tenants, activities)
    alerts = build_alert_sensors(settings.alerts, activities.key, grid, [(t.name, t.uses_demo_tenant) for t in tenants])
    intraday = build_intraday(tenants, activities, grid, views)
    # `make check`: a stored day's checks alone, without collecting it (as the UI's check menu runs them).
    check_job = dg.define_asset_job(
        CHECK_JOB,
        selection=dg.AssetSelection.checks_for_assets(activities),
        tags={"activity_pipeline/work": "check"},
        description="A stored day's checks alone, against the service's count now; the day is not collected.",
    )
    return dg.Definitions(
        loggers=LOGGERS,
        assets=[activities, duckdb],
        asset_checks=[checks],
        jobs=[automation.job, check_job, *lifecycle.jobs, verification_job, *([intraday.job] if intraday else [])],
        schedules=[automation.schedule, *lifecycle.schedules, verification_schedule],
        sensors=[*automation.sensors, *lifecycle.sensors, *alerts, *([intraday.sensor] if intraday else [])],
    )
