"""Each tenant's partitions: one per complete UTC day, from the tenant's start date; and a partition's day."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import dagster as dg

from activity_pipeline.config import TenantConfig
from activity_pipeline.days import utc_day
from activity_pipeline.retention import first_retained_day
from activity_pipeline.storage.core import TenantStore


def first_kept_day(tenant: TenantConfig, today: dt.date) -> dt.date | None:
    """The oldest day a tenant with `keep_days` keeps on `today` (older ones are deleted); None: it keeps all."""
    return today - dt.timedelta(days=tenant.keep_days) if tenant.keep_days else None


def start_date(tenant: TenantConfig, store: TenantStore, today: dt.date) -> dt.date:
    """The tenant's `start_date` (or ACTIVITY_START_DATE); unset, the oldest day the service still keeps on
    `today`, or the tenant's oldest stored day if that is earlier. So the default never offers a day that can no
    longer be scanned, and never drops one that was kept beyond the service's retention. With `keep_days`, never
    earlier than the oldest day kept (`first_kept_day`).

    The stored days are asked of the storage backend when the definitions load (on object storage, one read of
    the table's log). If it cannot answer then, the definitions still load, from the service's retention: a
    storage outage must not take the UI down with it; the runs themselves say what is wrong.
    """
    kept = first_kept_day(tenant, today) or dt.date.min
    if tenant.start_date is not None:
        return max(tenant.start_date, kept)
    try:
        oldest = store.days()[:1]
    except Exception as exc:  # any backend's failure: obstore and delta-rs share no base class with OSError
        logging.getLogger(__name__).warning(
            f"tenant {tenant.name}: the stored days could not be listed ({' '.join(str(exc).split())[:200]}); its "
            "partitions start at the oldest day the service keeps until they can"
        )
        oldest = []
    # Days before the tenant's `keep_days` are deleted on purpose: not partitions, so never missing.
    return max(kept, min([first_retained_day(today), *oldest]))


def out_of_range(partition_key: str, first: str | None, last: str | None) -> str:
    """Why `partition_key` is not one of a tenant's days, in one line."""
    return (
        f"{partition_key} is not one of this tenant's days: they run from {first} (its start_date, or "
        f"ACTIVITY_START_DATE) to {last} (yesterday, the last complete UTC day). Pick a day in that range, "
        "or set an earlier start_date for older days."
    )


class TenantDays(dg.DailyPartitionsDefinition):
    """A tenant's days: Dagster's daily partitions, whose refusal of a day outside them gives the valid range
    (Dagster's own says only that the key was not found)."""

    def validate_partition_key(self, partition_key: str, context: Any) -> None:
        try:
            super().validate_partition_key(partition_key, context)
        except dg.DagsterUnknownPartitionError:
            first, last = self.get_first_partition_key(), self.get_last_partition_key()
            raise dg.DagsterUnknownPartitionError(out_of_range(partition_key, first, last)) from None


def daily_partitions(tenant: TenantConfig, store: TenantStore, today: dt.date) -> dg.DailyPartitionsDefinition:
    # end_offset=0: the newest partition is yesterday, the last complete UTC day.
    first = start_date(tenant, store, today)
    return TenantDays(start_date=first.isoformat(), timezone="UTC", end_offset=0)


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    """The UTC day of the run's partition: every time bound of a run comes from here."""
    window = context.partition_time_window
    return utc_day(window.start, window.end)


def run_start(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.datetime:
    """When this run started: the reference for anything relative to the service's now (its retention), instead
    of reading the clock inside an asset or a check."""
    stats = context.instance.get_run_stats(context.run.run_id)
    if stats and stats.start_time:
        return dt.datetime.fromtimestamp(stats.start_time, dt.UTC)
    return dt.datetime.now(dt.UTC)  # no start time recorded yet: the run is starting now


def newest_days(partitions: dg.DailyPartitionsDefinition, n: int) -> tuple[dt.date, ...]:
    """The newest `n` partitions' days, newest first (yesterday, the day before, ...)."""
    newest = dt.date.fromisoformat(partitions.get_last_partition_key() or "")
    return tuple(newest - dt.timedelta(days=k) for k in range(n))


def main(argv: list[str]) -> int:
    """`python -m activity_pipeline.defs.partitions DAY TENANT...`: exit 2 with one line for each tenant whose
    partitions do not hold DAY (`make run` and `make backfill` ask before launching, instead of a traceback)."""
    import sys

    from activity_pipeline import config
    from activity_pipeline.mdca import ConfigError
    from activity_pipeline.storage.dataset import open_dataset

    day, *names = argv
    try:
        settings = config.load()
        wanted = [settings.tenant(n) for n in names] if names else list(settings.tenants)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    today = dt.datetime.now(dt.UTC).date()
    dataset = open_dataset(settings.data_dir, settings.data_url)
    refused = 0
    for tenant in wanted:
        partitions = daily_partitions(tenant, dataset.tenant(tenant.name), today)
        if day not in partitions.get_partition_keys():
            first, last = partitions.get_first_partition_key(), partitions.get_last_partition_key()
            print(f"tenant {tenant.name}: {out_of_range(day, first, last)}", file=sys.stderr)
            refused += 1
    return 2 if refused else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
