"""When each tenant's days run: yesterday at 02:15 UTC; recent days again, topped up, when their source count
grows; and days about to leave the service's retention that are not safely stored.

Every tenant has its own job, schedule and sensors, so one that fails (a revoked token, an outage) only
stops its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import dagster as dg

from activity_pipeline.config import TenantConfig
from activity_pipeline.days import day_window
from activity_pipeline.defs.partitions import newest_days
from activity_pipeline.defs.resources import ActivityStorage, TenantResource, mdca_key
from activity_pipeline.ingest import SETTLE_DAYS
from activity_pipeline.retention import RESCUE_MARGIN_DAYS, at_risk


def job_name(tenant: str) -> str:
    """The tenant's daily job: `<name>_daily_activities`."""
    return f"{tenant}_daily_activities"


@dataclasses.dataclass
class TenantAutomation:
    # An unresolved asset job and its partitioned schedule: Dagster exports neither type by name.
    job: Any
    schedule: Any
    sensors: list[dg.SensorDefinition]


def build_automation(
    tenant: TenantConfig,
    asset: dg.AssetsDefinition,
    duckdb_asset: dg.AssetsDefinition,
    partitions: dg.DailyPartitionsDefinition,
) -> TenantAutomation:
    name, resource = tenant.name, mdca_key(tenant.name)
    job = dg.define_asset_job(
        job_name(name),
        selection=dg.AssetSelection.assets(asset, duckdb_asset),
        partitions_def=partitions,
        description=f"One UTC day of tenant {name}: scan it into Parquet, run its checks, refresh the DuckDB views.",
        # One process for the scan, the checks and the views: a process per step would cost ~2 s of start-up each
        # and buy nothing, since the steps run one after another anyway.
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/tenant": name},
    )
    # On by default: a team that configures a tenant expects its nightly run without a visit to the UI.
    # `automation: false` in the tenants file leaves them stopped.
    on = dg.DefaultSensorStatus.RUNNING if tenant.automation else dg.DefaultSensorStatus.STOPPED
    # Daily partitions end at yesterday, so the 02:15 UTC tick materializes yesterday.
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=f"{name}_daily_activities_schedule",
        hour_of_day=2,
        minute_of_hour=15,
        default_status=dg.DefaultScheduleStatus.RUNNING if tenant.automation else dg.DefaultScheduleStatus.STOPPED,
    )

    @dg.sensor(
        name=f"{name}_late_arrivals",
        job=job,
        minimum_interval_seconds=3600,
        default_status=on,
        required_resource_keys={resource, "storage"},
    )
    def late_arrivals(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Top up the days of the settle window (the last 3 complete days) whose source count has passed what is stored."""  # noqa: E501
        mdca: TenantResource = getattr(context.resources, resource)
        storage: ActivityStorage = context.resources.storage
        requests, notes = [], []
        with mdca.client(context.log) as client:
            for day in newest_days(partitions, SETTLE_DAYS):
                manifest = storage.tenant(name).manifest(day)
                if manifest is None:
                    continue  # never materialized: the schedule or a backfill owns it
                if manifest.filters != client.filters:
                    # A top-up would mix two filters; the check collected_under_current_filters flags the day.
                    notes.append(f"{day}: collected under other filters, not topped up")
                    continue
                stored = manifest.rows
                total = client.count(*day_window(day))
                notes.append(f"{day}: stored {stored:,}, source {total:,}")
                if total > stored:
                    requests.append(dg.RunRequest(partition_key=day.isoformat(), run_key=f"{name}:{day}:{total}"))
        if not requests:
            return dg.SkipReason(
                f"no day of {name} in the settle window has grown: " + "; ".join(notes or ["none stored yet"])
            )
        return dg.SensorResult(run_requests=requests)

    @dg.sensor(
        name=f"{name}_retention_rescue",
        job=job,
        minimum_interval_seconds=3600,
        # Against a real tenant a day not stored before the cliff is lost for good. A demo tenant's days are made
        # again on demand: nothing is lost, and rescuing them would only run a fortnight of synthetic days.
        default_status=dg.DefaultSensorStatus.STOPPED if tenant.uses_demo_tenant else on,
        required_resource_keys={"storage"},
    )
    def retention_rescue(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Materialize days that leave the service's 180-day retention within 14 days and are missing or incomplete, oldest first."""  # noqa: E501
        requests = rescue_requests(name, partitions, context.resources.storage, dt.datetime.now(dt.UTC).date())
        if not requests:
            return dg.SkipReason(
                f"no missing or incomplete day of {name} within {RESCUE_MARGIN_DAYS} days of leaving retention"
            )
        context.log.warning(
            f"retention rescue for {name}: "
            + ", ".join(f"{r.partition_key} ({r.tags['activity_pipeline/reason']})" for r in requests)
        )
        return dg.SensorResult(run_requests=requests)

    return TenantAutomation(job, schedule, [late_arrivals, retention_rescue])


def rescue_requests(
    tenant: str,
    partitions: dg.DailyPartitionsDefinition,
    storage: ActivityStorage,
    today: dt.date,
    margin_days: int = RESCUE_MARGIN_DAYS,
) -> list[dg.RunRequest]:
    """Runs for the tenant's partitions about to leave the service's retention that are missing or incomplete,
    oldest first."""
    days = [dt.date.fromisoformat(key) for key in partitions.get_partition_keys()]
    store = storage.tenant(tenant)
    risky = at_risk(
        days,
        today=today,
        stored=store.days(),
        incomplete=store.failed_days(),
        margin_days=margin_days,
    )
    return [
        dg.RunRequest(
            partition_key=d.day.isoformat(),
            # Once a day per day at risk: a run that is still going is not asked for twice.
            run_key=f"retention-rescue:{tenant}:{d.day}:{today}",
            tags={"activity_pipeline/reason": f"retention rescue: {d.state}, {d.days_left} days left"},
        )
        for d in risky
    ]
