"""When things run: yesterday at 02:15 UTC; recent days again, topped up, when their source count grows; and
days about to leave the service's retention that are not safely stored."""

import datetime as dt

import dagster as dg

from activity_pipeline.days import day_window
from activity_pipeline.defs.assets import activities, activities_duckdb
from activity_pipeline.defs.partitions import SETTINGS, daily, newest_days
from activity_pipeline.defs.resources import ActivityStorage, TenantResource
from activity_pipeline.ingest import SETTLE_DAYS
from activity_pipeline.retention import RESCUE_MARGIN_DAYS, at_risk

daily_activities = dg.define_asset_job(
    "daily_activities",
    selection=dg.AssetSelection.assets(activities, activities_duckdb),
    description="One UTC day: scan it into Parquet, run its checks, refresh the DuckDB views.",
    # One process for the scan, the checks and the views: a process per step would cost ~2 s of start-up each
    # and buy nothing, since the steps run one after another anyway.
    executor_def=dg.in_process_executor,
)

# Daily partitions end at yesterday, so the 02:15 UTC tick materializes yesterday.
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_activities, name="daily_activities_schedule", hour_of_day=2, minute_of_hour=15
)


@dg.sensor(job=daily_activities, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.STOPPED)
def late_arrivals(
    context: dg.SensorEvaluationContext, mdca: TenantResource, storage: ActivityStorage
) -> dg.SensorResult | dg.SkipReason:
    """Top up the days of the settle window (the last 3 complete days) whose source count has passed what is stored."""
    requests, notes = [], []
    with mdca.client(context.log) as client:
        for day in newest_days(SETTLE_DAYS):
            manifest = storage.manifest(day)
            if manifest is None:
                continue  # never materialized: the schedule or a backfill owns it
            stored = int(manifest["rows"])
            total = client.count(*day_window(day))
            notes.append(f"{day}: stored {stored:,}, source {total:,}")
            if total > stored:
                requests.append(dg.RunRequest(partition_key=day.isoformat(), run_key=f"{day}:{total}"))
    if not requests:
        return dg.SkipReason("no day in the settle window has grown: " + "; ".join(notes or ["none stored yet"]))
    return dg.SensorResult(run_requests=requests)


def rescue_requests(
    storage: ActivityStorage, today: dt.date, margin_days: int = RESCUE_MARGIN_DAYS
) -> list[dg.RunRequest]:
    """Runs for the partitions about to leave the service's retention that are missing or incomplete, oldest first."""
    days = [dt.date.fromisoformat(key) for key in daily.get_partition_keys()]
    risky = at_risk(
        days, today=today, stored=storage.stored_days(), incomplete=storage.incomplete_days(), margin_days=margin_days
    )
    return [
        dg.RunRequest(
            partition_key=d.day.isoformat(),
            # Once a day per day at risk: a run that is still going is not asked for twice.
            run_key=f"retention-rescue:{d.day}:{today}",
            tags={"activity_pipeline/reason": f"retention rescue: {d.state}, {d.days_left} days left"},
        )
        for d in risky
    ]


@dg.sensor(
    job=daily_activities,
    minimum_interval_seconds=3600,
    # Against a real tenant a day not stored before the cliff is lost for good: on unless switched off.
    default_status=(dg.DefaultSensorStatus.STOPPED if SETTINGS.uses_demo_tenant else dg.DefaultSensorStatus.RUNNING),
)
def retention_rescue(context: dg.SensorEvaluationContext, storage: ActivityStorage) -> dg.SensorResult | dg.SkipReason:
    """Materialize days that leave the service's 180-day retention within 14 days and are missing or incomplete, oldest first."""  # noqa: E501
    requests = rescue_requests(storage, dt.datetime.now(dt.UTC).date())
    if not requests:
        return dg.SkipReason(f"no missing or incomplete day within {RESCUE_MARGIN_DAYS} days of leaving retention")
    context.log.warning(
        "retention rescue: " + ", ".join(f"{r.partition_key} ({r.tags['activity_pipeline/reason']})" for r in requests)
    )
    return dg.SensorResult(run_requests=requests)
