"""`ActivityTenants`: a Dagster component that builds every tenant's definitions from the configuration.

For each tenant of ACTIVITY_TENANTS_FILE (or the one tenant of the MDCA_* variables, or the demo tenant):
the asset `[name, "activities"]` with its own daily partitions and pool `mdca_api/<name>`, its ten checks,
the job `<name>_daily_activities`, its schedule, and its `late_arrivals` and `retention_rescue` sensors.
One `activities_duckdb` asset covers them all. Each tenant's resource is `mdca_<name>`
(`defs.resources.resources_for`).

The configuration is read here, once per load (`config.load`): the same validated values build the
definitions, the partitions (whose stored days come from the dataset that configuration opens) and the
resources. Dagster loads the definitions several times in one run (six in a `dg launch` of the daily job), so
they are built once per configuration and UTC day.

Per-tenant assets rather than one asset partitioned by tenant and day: a pool is one fixed string per asset,
so only separate assets give each tenant a pool of its own; and partitioned checks on multi-partitioned
assets have open problems in Dagster.
"""

from __future__ import annotations

import datetime as dt
import functools

import dagster as dg

from activity_pipeline import config
from activity_pipeline.defs.alerting import build_alert_sensors
from activity_pipeline.defs.assets import build_activities, build_activities_duckdb
from activity_pipeline.defs.automation import build_automation
from activity_pipeline.defs.checks import build_checks
from activity_pipeline.defs.lifecycle import build_lifecycle, build_vacuum
from activity_pipeline.defs.partitions import daily_partitions
from activity_pipeline.defs.resources import resources_for
from activity_pipeline.defs.verification import build_verification
from activity_pipeline.storage.dataset import open_dataset


class ActivityTenants(dg.Component, dg.Model, dg.Resolvable):
    """Every configured Defender for Cloud Apps tenant: its activities asset, checks, job, schedule and sensors.

    The tenants come from ACTIVITY_TENANTS_FILE, or from the MDCA_* variables (one tenant, named by
    MDCA_TENANT_NAME), or the built-in demo tenant when neither is set.
    """

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return _definitions(config.snapshot(), dt.datetime.now(dt.UTC).date())


@functools.lru_cache(maxsize=4)
def _definitions(snapshot: config.Snapshot, today: dt.date) -> dg.Definitions:
    settings = config.load(dict(snapshot.environment))
    return dg.Definitions.merge(tenants_definitions(settings, today), dg.Definitions(resources=resources_for(settings)))


def tenants_definitions(settings: config.PipelineConfig, today: dt.date | None = None) -> dg.Definitions:
    """The definitions of every tenant in `settings` (resources aside), partitioned up to `today`'s yesterday."""
    today = today or dt.datetime.now(dt.UTC).date()
    # A deployment of one tenant without a tenants file may hold days from before tenants existed: its runs adopt them.
    adopt = settings.tenants_file is None and len(settings.tenants) == 1
    dataset = open_dataset(settings.data_dir, settings.data_url)
    built = []
    for tenant in settings.tenants:
        partitions = daily_partitions(tenant, dataset.tenant(tenant.name), today)
        built.append((tenant, partitions, build_activities(tenant, partitions, adopt_legacy_days=adopt)))
    # The retention's end is watched for real tenants only: a demo tenant's days are made again on demand.
    starts = {
        t.name: dt.date.fromisoformat(p.get_first_partition_key() or "") for t, p, _ in built if not t.uses_demo_tenant
    }
    duckdb_asset = build_activities_duckdb([asset for _, _, asset in built], starts)
    checks, jobs, schedules, sensors = [], [], [], []
    for tenant, partitions, asset in built:
        checks.append(build_checks(tenant.name, asset, partitions, watch_retention=not tenant.uses_demo_tenant))
        automation = build_automation(tenant, asset, duckdb_asset, partitions)
        jobs.append(automation.job)
        schedules.append(automation.schedule)
        sensors.extend(automation.sensors)
        lifecycle = build_lifecycle(tenant, asset, partitions)
        jobs.extend(lifecycle.jobs)
        schedules.extend(lifecycle.schedules)
        sensors.extend(lifecycle.sensors)
    verification_job, verification_schedule = build_verification(settings.tenants, {t.name: a for t, _, a in built})
    jobs.append(verification_job)
    schedules.append(verification_schedule)
    if settings.data_url is not None:
        vacuum_job, vacuum_schedule = build_vacuum()
        jobs.append(vacuum_job)
        schedules.append(vacuum_schedule)
    sensors.extend(build_alert_sensors(settings.alerts, [(t.name, a, p, t.uses_demo_tenant) for t, p, a in built]))
    return dg.Definitions(
        assets=[*(asset for _, _, asset in built), duckdb_asset],
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
    )
