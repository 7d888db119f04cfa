"""The lake's upkeep, for every tenant: settled days compacted (`storage.compaction`), days past a tenant's
`keep_days` deleted (its retention), and the table vacuumed (`Dataset.vacuum`, object storage only).

None of it talks to the API. Compactions take the `compaction` pool (one at a time on the shipped instance: each may
use up to 400 MB).
"""

import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from activity_pipeline.components.assets import RebuildViews
from activity_pipeline.components.automation import TENANT_TAG, TICK_BUDGET_SECONDS, sensor_status
from activity_pipeline.components.partitions import (
    TenantDays,
    first_kept_day,
    key,
    partition_day,
    partition_tenant,
    run_start,
)
from activity_pipeline.components.resources import ActivityStorage
from activity_pipeline.components.rotation import Rotation
from activity_pipeline.config import TenantConfig
from activity_pipeline.days import SETTLE_DAYS
from activity_pipeline.storage.compaction import CompactionError, NotStoredError, compact_day, is_current
from activity_pipeline.storage.dataset import open_copy
from activity_pipeline.storage.errors import DayChangedError, DayLockedError

# A compaction sensor's tick asks for at most this many days of a tenant, oldest first, and this many in all: a
# year of uncompacted days (of a thousand tenants) is worked off over the following hours, without filling the run
# queue at once.
COMPACTIONS_PER_TICK = 6
COMPACTIONS_PER_TICK_IN_ALL = 24
# A version of a day (its files) whose compaction failed this many times is asked for no more: a day a run held
# is asked for again at the next tick, a rewrite that does not verify is not rewritten every hour forever.
COMPACTION_ATTEMPTS = 3
# The tag that names the version of the day a compaction run was asked for.
DAY_VERSION_TAG = "activity_pipeline/day_version"
COMPACTION_JOB = "compact_day"
RETENTION_JOB = "retention"


@dataclasses.dataclass
class Lifecycle:
    jobs: list[Any]
    sensors: list[dg.SensorDefinition]
    schedules: list[Any]


def build_lifecycle(
    tenants: Sequence[TenantConfig],
    activities: dg.AssetsDefinition,
    grid: TenantDays,
    views: RebuildViews,
    *,
    object_storage: bool,
) -> Lifecycle:
    automated = [t.name for t in tenants if t.automation]

    @dg.op(
        name="compact",
        pool="compaction",
        required_resource_keys={"storage"},
        description="Rewrite a settled day of a tenant as one file of large row groups ordered by timestamp, "
        "verified against the day before it replaces it.",
    )
    def compact(context: dg.OpExecutionContext) -> None:
        storage: ActivityStorage = context.resources.storage
        tenant, day = partition_tenant(context), partition_day(context)
        try:
            done = compact_day(storage.tenant(tenant), day, run_id=context.run.run_id[:12], logger=context.log)
        except NotStoredError as exc:
            context.log.info(f"{exc}; nothing to do")
            return
        except (DayLockedError, DayChangedError, CompactionError) as exc:
            raise dg.Failure(description=f"tenant {tenant}: {exc}", allow_retries=False) from None
        before, after = done.before, done.after
        context.log_event(
            dg.AssetObservation(
                asset_key=activities.key,
                partition=str(key(day, tenant)),
                description=f"compacted: {before.files} files / {before.row_groups} row groups became "
                f"{after.files} / {after.row_groups}",
                metadata={
                    "compaction/files_before": before.files,
                    "compaction/row_groups_before": before.row_groups,
                    "compaction/bytes_before": before.bytes,
                    "compaction/files_after": after.files,
                    "compaction/row_groups_after": after.row_groups,
                    "compaction/bytes_after": after.bytes,
                    "compaction/rows": after.rows,
                    "compaction/bytes_per_activity_before": round(before.bytes / max(1, before.rows), 1),
                    "compaction/bytes_per_activity_after": round(after.bytes / max(1, after.rows), 1),
                    "compaction/seconds": done.seconds,
                },
            )
        )

    @dg.job(
        name=COMPACTION_JOB,
        partitions_def=grid.partitions,
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "compaction"},
        description="Compact one stored day of one tenant (see docs/operations.md#compaction).",
    )
    def compaction_job() -> None:
        compact()

    @dg.sensor(
        name="compaction",
        job=compaction_job,
        minimum_interval_seconds=600,
        default_status=sensor_status(bool(automated)),
        required_resource_keys={"storage"},
        description="Compacts each tenant's settled days (before the late-arrivals window) that are not compacted, "
        "or compacted with older typed columns (which the compaction upgrades from `raw`), oldest first.",
    )
    def compaction(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        storage: ActivityStorage = context.resources.storage
        now = time.time()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        settled_before = min(grid.newest(SETTLE_DAYS, today))
        rotation = Rotation(context.cursor, automated, every=3600, budget=TICK_BUDGET_SECONDS, now=now)
        requests: list[dg.RunRequest] = []
        given_up = 0
        for tenant in rotation:
            try:
                asked, failed = _due_compactions(context, storage, tenant, settled_before)
                requests += asked
                given_up += failed
            except Exception as exc:  # one tenant's storage failing never stops the others
                context.log.warning(f"compaction of {tenant} skipped: {' '.join(str(exc).split())[:300]}")
            if len(requests) >= COMPACTIONS_PER_TICK_IN_ALL:
                break  # the tenants not reached are the first the next tick looks at
        reached = f"looked at {len(rotation.looked)} tenants ({rotation.left} due left for the next tick)"
        failed = f"; {given_up} failed {COMPACTION_ATTEMPTS} times" if given_up else ""
        return dg.SensorResult(
            run_requests=requests,
            cursor=rotation.cursor(),
            skip_reason=None if requests else dg.SkipReason(f"no settled day to compact{failed}: {reached}"),
        )

    lifecycle = Lifecycle(jobs=[compaction_job], sensors=[compaction], schedules=[])
    kept = [t for t in tenants if t.keep_days is not None]
    if kept:
        job, schedule = _build_retention(kept, activities, views)
        lifecycle.jobs.append(job)
        lifecycle.schedules.append(schedule)
    if object_storage:
        job, schedule = build_vacuum()
        lifecycle.jobs.append(job)
        lifecycle.schedules.append(schedule)
    return lifecycle


def _due_compactions(
    context: dg.SensorEvaluationContext, storage: ActivityStorage, tenant: str, settled_before: dt.date
) -> tuple[list[dg.RunRequest], int]:
    """The compaction runs the tenant's settled days need, and how many days were given up on."""
    files = storage.tenant(tenant).files_by_day()
    due = [d for d in sorted(files) if d < settled_before and not is_current(files[d])]
    requests, given_up = [], []
    for day in due:
        version = _version(files[day])
        # A failed run's run key is spent: the next attempt needs a new one, counted by the failures so far.
        failed = context.instance.get_runs_count(
            dg.RunsFilter(
                job_name=COMPACTION_JOB,
                statuses=[dg.DagsterRunStatus.FAILURE],
                tags={"dagster/partition": str(key(day, tenant)), DAY_VERSION_TAG: version},
            )
        )
        if failed >= COMPACTION_ATTEMPTS:
            given_up.append(day.isoformat())
            continue
        requests.append(
            dg.RunRequest(
                partition_key=key(day, tenant),
                run_key=f"compact:{tenant}:{day}:{version}:{failed}",
                tags={DAY_VERSION_TAG: version, TENANT_TAG: tenant},
            )
        )
        if len(requests) == COMPACTIONS_PER_TICK:
            break
    if given_up:
        context.log.warning(
            f"{len(given_up)} settled days of {tenant} failed to compact {COMPACTION_ATTEMPTS} times and are not "
            f"asked for again until they change: {', '.join(given_up[:10])}. See those runs' logs; `make compact "
            f"DAY=... TENANT={tenant}` tries one by hand."
        )
    return requests, len(given_up)


class RetentionConfig(dg.Config):
    # One tenant (default: every tenant that sets keep_days).
    tenant: str = ""


def _build_retention(
    tenants: Sequence[TenantConfig], activities: dg.AssetsDefinition, views: RebuildViews
) -> tuple[Any, Any]:
    by_name = {t.name: t for t in tenants}

    @dg.op(
        name="delete_expired_days",
        required_resource_keys={"storage"},
        description="Delete the days of each tenant with keep_days that are older than it keeps, each with an "
        "audit record. A tenant that fails does not stop the others; the run fails naming it.",
    )
    def delete_expired(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
        storage: ActivityStorage = context.resources.storage
        today = run_start(context).date()
        if config.tenant and config.tenant not in by_name:
            raise dg.Failure(
                description=f"tenant {config.tenant} sets no keep_days (or is not configured); with keep_days: "
                f"{', '.join(by_name)}",
                allow_retries=False,
            )
        failures, deleted = [], 0
        for tenant in [by_name[config.tenant]] if config.tenant else tenants:
            try:
                deleted += _delete_expired(context, storage, tenant, activities.key, today)
            except Exception as exc:  # one tenant's storage failing never stops the others
                failures.append(f"tenant {tenant.name}: {' '.join(str(exc).split())[:500]}")
        if deleted:
            # deleted_days and every view show the deletion at once, not after the next daily run.
            views(context, storage, f"rebuilt after retention deleted {deleted} days")
        if failures:
            raise dg.Failure(description=" | ".join(failures), allow_retries=False)

    @dg.job(
        name=RETENTION_JOB,
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "retention"},
        description="Delete each tenant's days older than its keep_days.",
    )
    def retention_job() -> None:
        delete_expired()

    schedule = dg.ScheduleDefinition(
        name=f"{RETENTION_JOB}_schedule",
        job=retention_job,
        cron_schedule="45 4 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING
        if any(t.automation for t in tenants)
        else dg.DefaultScheduleStatus.STOPPED,
    )
    return retention_job, schedule


def _delete_expired(
    context: dg.OpExecutionContext, storage: ActivityStorage, tenant: TenantConfig, asset: dg.AssetKey, today: dt.date
) -> int:
    """Delete the tenant's days before its first kept day; returns how many."""
    name, keep = tenant.name, tenant.keep_days
    first_kept = first_kept_day(tenant, today)
    assert first_kept is not None
    store = storage.tenant(name)
    expired = [d for d in store.days() if d < first_kept]
    copy = open_copy(tenant.keep_copied_to, storage.data_dir) if tenant.keep_copied_to else None
    copied = copy.tenant(name).day_rows() if copy is not None else {}
    held = store.day_rows() if copy is not None else {}
    refused = []
    deleted = 0
    reason = f"keep_days {keep}: older than {first_kept}"
    for day in expired:
        if copy is not None:
            rows = held.get(day, 0)
            if copied.get(day, -1) < rows:
                refused.append(f"{day} ({copied.get(day, 0):,} of its {rows:,} rows in {tenant.keep_copied_to})")
                continue
        record = store.delete_day(day, reason=reason, run_id=context.run.run_id[:12])
        if record is None:
            continue
        deleted += 1
        context.log.info(f"{name} {day}: deleted ({record.rows:,} rows, {record.files} files); {reason}")
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                partition=None,
                description=f"{name} {day} deleted: {reason}",
                metadata={"tenant": name, "deleted_day": day.isoformat(), "rows": record.rows, "reason": reason},
            )
        )
    if not expired:
        context.log.info(f"no day of {name} is older than {first_kept} (keep_days {keep})")
    if refused:
        raise RuntimeError(
            f"{len(refused)} expired days were kept, because keep_days.copied_to does not hold them whole: "
            f"{', '.join(refused[:10])}. Copy them there first; the next run deletes them."
        )
    return deleted


def _version(names: list[str]) -> str:
    """A short name for a version of a day (its files): a day topped up after a compaction is due again."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]


# Delta's own default for `delta.deletedFileRetentionDuration`: a reader (or a writer's conflict check) that
# started up to this long ago may still read a version that names a file replaced since.
DELTA_DEFAULT_RETENTION_HOURS = 168


class VacuumConfig(dg.Config):
    # Files no version of the last `horizon_hours` needs are removed (Delta calls it the retention duration).
    horizon_hours: int = DELTA_DEFAULT_RETENTION_HOURS
    # Shorter than Delta's default only when said explicitly: a query or a run that started before may lose a
    # file under it.
    allow_short_horizon: bool = False


def build_vacuum() -> tuple[Any, Any]:
    """The table's vacuum (object storage only): a job and its weekly schedule, Sunday 03:30 UTC."""

    @dg.op(name="vacuum_activities_table", required_resource_keys={"storage"})
    def vacuum(context: dg.OpExecutionContext, config: VacuumConfig) -> None:
        storage: ActivityStorage = context.resources.storage
        hours = config.horizon_hours
        if hours < DELTA_DEFAULT_RETENTION_HOURS and not config.allow_short_horizon:
            raise dg.Failure(
                description=f"horizon_hours {hours} is shorter than Delta's default of "
                f"{DELTA_DEFAULT_RETENTION_HOURS} (7 days): a DuckDB session, a run or another engine that began "
                "within it may still read files a shorter vacuum removes. Keep the default, or set "
                "allow_short_horizon: true to remove them anyway.",
                allow_retries=False,
            )
        started = time.monotonic()
        removed = storage.dataset.vacuum(hours, enforce_horizon=not config.allow_short_horizon)
        if removed is None:
            context.log.info("the dataset is on local disk: replaced days are removed when they are replaced")
            return
        context.log.info(f"vacuum of {storage.location}: {removed} files no version of the last {hours} hours "
                         "needs were removed")  # fmt: skip
        context.add_output_metadata(
            {"files_removed": removed, "horizon_hours": hours, "seconds": round(time.monotonic() - started, 1)}
        )

    @dg.job(
        name="activities_vacuum",
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "vacuum"},
        description="Remove the table's files that no version within the vacuum horizon needs (object storage).",
    )
    def vacuum_job() -> None:
        vacuum()

    schedule = dg.ScheduleDefinition(
        name="activities_vacuum_schedule",
        job=vacuum_job,
        cron_schedule="30 3 * * 0",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return vacuum_job, schedule
