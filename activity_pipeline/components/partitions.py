"""Every tenant's days as one grid: a partition is a (day, tenant) pair, each tenant's days running from its first
kept day to yesterday (the last complete UTC day), and today, the day in progress (collected intraday).

Dagster's two-dimensional partitions share one day axis, which starts at the earliest tenant's first day. A tenant
whose own first day is later (a `start_date`, a `keep_days`) does not have the days before it: the schedule, the
sensors and `make backfill` never ask for them, and a run that is asked for one (a backfill of every partition
from the UI) refuses it at once with the tenant's range (`TenantDays.refusal`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from activity_pipeline.config import TenantConfig
from activity_pipeline.days import utc_day
from activity_pipeline.service_window import SERVICE_WINDOW_DAYS, first_scannable_day
from activity_pipeline.storage.core import Dataset

# The two dimensions; Dagster orders a key's parts by dimension name: "2026-11-24|contoso".
DAY, TENANT = "day", "tenant"


def first_kept_day(tenant: TenantConfig, today: dt.date) -> dt.date | None:
    """The oldest day a tenant with `keep_days` keeps on `today` (older ones are deleted); None: it keeps all."""
    return today - dt.timedelta(days=tenant.keep_days) if tenant.keep_days else None


def start_date(tenant: TenantConfig, oldest_stored: dt.date | None, today: dt.date) -> dt.date:
    """The tenant's first day: its `start_date` (or ACTIVITY_START_DATE); unset, the oldest day the service still
    keeps on `today`, or the tenant's oldest stored day if that is earlier. So the default never offers a day that
    can no longer be scanned, and never drops one that was kept beyond the service's window. With `keep_days`,
    never earlier than the oldest day kept (`first_kept_day`): the days before are deleted on purpose."""
    kept = first_kept_day(tenant, today) or dt.date.min
    if tenant.start_date is not None:
        return max(tenant.start_date, kept)
    return max(kept, min([first_scannable_day(today), *([oldest_stored] if oldest_stored else [])]))


def _oldest_stored(dataset: Dataset) -> dict[str, dt.date]:
    """Each tenant's oldest stored day. If the storage cannot answer when the definitions load, they still load,
    from the service's window: a storage outage must not take the UI down with it; the runs say what is wrong."""
    try:
        return dataset.oldest_days()
    except Exception as exc:  # any backend's failure: obstore and delta-rs share no base class with OSError
        logging.getLogger(__name__).warning(
            f"the stored days could not be listed ({' '.join(str(exc).split())[:200]}); partitions start at the "
            "oldest day the service keeps until they can"
        )
        return {}


def _why_first(tenant: TenantConfig, first: dt.date, today: dt.date) -> str:
    """What sets the tenant's first day `first`, named so that the person knows which setting to change."""
    kept = first_kept_day(tenant, today)
    if kept is not None and first == kept:
        return f"its keep_days ({tenant.keep_days}): older days are deleted on purpose; raise keep_days to keep more"
    if tenant.start_date is not None:
        return (
            "its start_date (the tenants file's `start_date`, else ACTIVITY_START_DATE); set it earlier to include "
            "older days"
        )
    if first == first_scannable_day(today):
        return f"the oldest day the service still keeps: its {SERVICE_WINDOW_DAYS} days end there"
    return "its oldest stored day"


class TenantDayPartitions(dg.MultiPartitionsDefinition):
    """Dagster's (day, tenant) partitions, whose refusal of a key outside them says what the valid keys are
    (Dagster's own says only that the key was not found)."""

    def validate_partition_key(self, partition_key: str, context: Any = None) -> None:
        try:
            super().validate_partition_key(partition_key, context)
        except dg.DagsterUnknownPartitionError:
            raise dg.DagsterUnknownPartitionError(
                f"{partition_key} is not a partition: a partition is DAY|TENANT (2026-11-24|contoso), DAY one of "
                f"the days from {self.days.get_first_partition_key()} to {self.days.get_last_partition_key()} "
                f"(today, the day in progress) and TENANT one of {', '.join(self.tenants[:5])}"
                f"{' ...' if len(self.tenants) > 5 else ''}"
            ) from None

    @property
    def days(self) -> dg.DailyPartitionsDefinition:
        return self.get_partitions_def_for_dimension(DAY)  # type: ignore[return-value]

    @property
    def tenants(self) -> Sequence[str]:
        return self.get_partitions_def_for_dimension(TENANT).get_partition_keys()


@dataclasses.dataclass(frozen=True)
class TenantDays:
    """The grid of every tenant's days, and each tenant's own first day."""

    partitions: TenantDayPartitions
    first: Mapping[str, dt.date]
    # The day the definitions were loaded on: a long-running code server's "today" moves on, so every method
    # takes the caller's today (a run's start, a tick's time) when it has one.
    loaded: dt.date
    # What sets each tenant's first day, for messages.
    why_first: Mapping[str, str]

    @classmethod
    def of(cls, tenants: Sequence[TenantConfig], dataset: Dataset, today: dt.date) -> TenantDays:
        # Only a tenant without a start_date needs its oldest stored day: with none, nothing is read.
        oldest = _oldest_stored(dataset) if any(t.start_date is None for t in tenants) else {}
        first = {t.name: start_date(t, oldest.get(t.name), today) for t in tenants}
        # No tenant at all is a configuration error caught before this; an empty axis would not load.
        earliest = min([*first.values(), today - dt.timedelta(days=1)])
        # end_offset=1: today is a partition too, the day in progress, collected intraday and exact as of each
        # collection's watermark; every other day is complete.
        days = dg.DailyPartitionsDefinition(start_date=earliest.isoformat(), timezone="UTC", end_offset=1)
        names = dg.StaticPartitionsDefinition([t.name for t in tenants])
        why = {t.name: _why_first(t, first[t.name], today) for t in tenants}
        return cls(TenantDayPartitions({DAY: days, TENANT: names}), first, today, why)

    def last(self, today: dt.date | None = None) -> dt.date:
        """The newest complete day: yesterday."""
        return (today or self.loaded) - dt.timedelta(days=1)

    def days_of(self, tenant: str, today: dt.date | None = None) -> list[dt.date]:
        """The tenant's days, oldest first."""
        first, last = self.first[tenant], self.last(today)
        return [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]

    def newest(self, n: int, today: dt.date | None = None) -> tuple[dt.date, ...]:
        """The newest `n` days, newest first (yesterday, the day before, ...)."""
        return tuple(self.last(today) - dt.timedelta(days=k) for k in range(n))

    def refusal(self, tenant: str, day: dt.date, today: dt.date | None = None) -> str | None:
        """Why `day` is not one of `tenant`'s days, in one line; None when it is."""
        first, last = self.first.get(tenant), self.last(today)
        if first is None:
            return f"no tenant named {tenant} is configured; configured: {', '.join(self.first)}"
        # Today is the day in progress: collected so far, exact as of its watermark.
        if first <= day <= last + dt.timedelta(days=1):
            return None
        if day > last:
            return f"{day} has not begun: the newest day is {last + dt.timedelta(days=1)} (today, in progress)"
        return (
            f"{day} is not one of tenant {tenant}'s days: they run from {first} ({self.why_first[tenant]}) to "
            f"{last} (yesterday). Pick a day in that range."
        )


def key(day: dt.date | str, tenant: str) -> dg.MultiPartitionKey:
    """The partition of `tenant`'s `day`."""
    return dg.MultiPartitionKey({DAY: str(day), TENANT: tenant})


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext) -> dt.date:
    """The UTC day of the run's partition: every time bound of a run comes from here."""
    window = context.partition_time_window
    return utc_day(window.start, window.end)


def partition_tenant(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext) -> str:
    """The tenant of the run's partition."""
    partition = context.partition_key
    if isinstance(partition, dg.MultiPartitionKey):
        return partition.keys_by_dimension[TENANT]
    return str(partition).split("|")[1]


def run_start(context: Any) -> dt.datetime:
    """When this run started: the reference for anything relative to the service's now (its window), instead
    of reading the clock inside an asset or a check."""
    stats = context.instance.get_run_stats(context.run.run_id)
    if stats and stats.start_time:
        return dt.datetime.fromtimestamp(stats.start_time, dt.UTC)
    return dt.datetime.now(dt.UTC)  # no start time recorded yet: the run is starting now


def main(argv: list[str]) -> int:
    """`python -m activity_pipeline.components.partitions DAY TENANT...`: exit 2 with one line for each tenant
    whose days do not hold DAY (`make run` and `make backfill` ask before launching, instead of a traceback)."""
    import sys

    from activity_pipeline import config
    from activity_pipeline.errors import ConfigError
    from activity_pipeline.storage.dataset import open_dataset

    day_text, *names = argv
    try:
        day = dt.date.fromisoformat(day_text)
        if len(day_text) != 10:
            raise ValueError(day_text)
    except ValueError:
        print(f"DAY={day_text} is not a day: write it as YYYY-MM-DD (2026-11-24)", file=sys.stderr)
        return 2
    try:
        settings = config.load()
        wanted = [settings.tenant(n) for n in names] if names else list(settings.tenants)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    today = dt.datetime.now(dt.UTC).date()
    grid = TenantDays.of(settings.tenants, open_dataset(settings.data_dir, settings.data_url), today)
    refused = [(t.name, grid.refusal(t.name, day)) for t in wanted]
    for name, why in refused:
        if why is not None:
            print(f"tenant {name}: {why}", file=sys.stderr)
    return 2 if any(why for _, why in refused) else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
