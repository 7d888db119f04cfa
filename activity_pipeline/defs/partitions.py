"""One partition per complete UTC day, from the configured start date; and a partition's day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from activity_pipeline import config
from activity_pipeline.days import utc_day
from activity_pipeline.retention import first_retained_day
from activity_pipeline.storage.inspect import stored_days


def start_date(settings: config.PipelineConfig, today: dt.date) -> dt.date:
    """ACTIVITY_START_DATE; unset, the oldest day the service still keeps on `today`, or the oldest stored day
    if that is earlier. So the default never offers a day that can no longer be scanned, and never drops one
    that was kept beyond the service's retention.
    """
    if settings.start_date is not None:
        return settings.start_date
    stored = stored_days(settings.data_dir)
    return min([first_retained_day(today), *stored[:1]])


# The environment, read once for every module of defs/ that needs it when the definitions load.
SETTINGS = config.load()

# end_offset=0: the newest partition is yesterday, the last complete UTC day.
daily = dg.DailyPartitionsDefinition(
    start_date=start_date(SETTINGS, dt.datetime.now(dt.UTC).date()).isoformat(), timezone="UTC", end_offset=0
)


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    """The UTC day of the run's partition: every time bound of a run comes from here."""
    window = context.partition_time_window
    return utc_day(window.start, window.end)


def newest_days(n: int) -> tuple[dt.date, ...]:
    """The newest `n` partitions' days, newest first (yesterday, the day before, ...)."""
    newest = dt.date.fromisoformat(daily.get_last_partition_key() or "")
    return tuple(newest - dt.timedelta(days=k) for k in range(n))
