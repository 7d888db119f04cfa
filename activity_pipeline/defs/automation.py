"""When things run: yesterday at 02:15 UTC, and again for recent days whose source total has grown."""

import dagster as dg

from activity_pipeline.days import day_window
from activity_pipeline.defs.assets import activities, activities_duckdb
from activity_pipeline.defs.partitions import newest_days
from activity_pipeline.defs.resources import ActivityStorage, TenantResource

# Late records (Power BI, Dynamics 365, lagging connectors) arrive up to three days after they happened.
SETTLE_DAYS = 3

daily_activities = dg.define_asset_job(
    "daily_activities",
    selection=dg.AssetSelection.assets(activities, activities_duckdb),
    description="One UTC day: scan it into Parquet, run its checks, refresh the DuckDB views.",
)

# Daily partitions end at yesterday, so the 02:15 UTC tick materializes yesterday.
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_activities, name="daily_activities_schedule", hour_of_day=2, minute_of_hour=15
)


@dg.sensor(job=daily_activities, minimum_interval_seconds=3600, default_status=dg.DefaultSensorStatus.STOPPED)
def late_arrivals(
    context: dg.SensorEvaluationContext, mdca: TenantResource, storage: ActivityStorage
) -> dg.SensorResult | dg.SkipReason:
    """Re-materialize days in the settle window (the last 3 complete days) whose source total has grown."""
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
