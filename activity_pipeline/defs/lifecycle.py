"""The lake's upkeep, per tenant: settled days compacted (`storage.compaction`), days past the tenant's
`keep_days` deleted (`storage.retention`); and, on object storage, the table vacuumed.

None of it talks to the API, so none of it takes a tenant's `mdca_api/<name>` pool: compactions take the
`compaction` pool (one at a time on the shipped instance: each may use up to 400 MB).
"""

import dataclasses
import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline.config import TenantConfig
from activity_pipeline.defs.partitions import first_kept_day, newest_days, partition_day, run_start
from activity_pipeline.defs.resources import ActivityStorage
from activity_pipeline.ingest import SETTLE_DAYS
from activity_pipeline.storage.compaction import CompactionError, NotStoredError, compact_day, is_current
from activity_pipeline.storage.core import Dataset
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.delta import Lake
from activity_pipeline.storage.errors import DayChangedError, DayLockedError

# A compaction sensor's tick asks for at most this many days, oldest first: a year of uncompacted days is
# worked off over the following hours, without filling the run queue at once.
COMPACTIONS_PER_TICK = 6
# A version of a day (its files) whose compaction failed this many times is asked for no more: a day a run held
# is asked for again at the next tick, a rewrite that does not verify is not rewritten every hour forever.
COMPACTION_ATTEMPTS = 3
# The tag that names the version of the day a compaction run was asked for.
DAY_VERSION_TAG = "activity_pipeline/day_version"


def compaction_job_name(tenant: str) -> str:
    """The tenant's compaction job: `<name>_compact_day`."""
    return f"{tenant}_compact_day"


@dataclasses.dataclass
class TenantLifecycle:
    jobs: list[Any]
    sensors: list[dg.SensorDefinition]
    schedules: list[Any]


def build_lifecycle(
    tenant: TenantConfig, asset: dg.AssetsDefinition, partitions: dg.DailyPartitionsDefinition
) -> TenantLifecycle:
    name = tenant.name
    on = dg.DefaultSensorStatus.RUNNING if tenant.automation else dg.DefaultSensorStatus.STOPPED

    @dg.op(
        name=f"{name}_compact",
        pool="compaction",
        required_resource_keys={"storage"},
        description=f"Rewrite a settled day of tenant {name} as one file of large row groups ordered by timestamp, "
        "verified against the day before it replaces it.",
    )
    def compact(context: dg.OpExecutionContext) -> None:
        storage: ActivityStorage = context.resources.storage
        day = partition_day(context)  # type: ignore[arg-type]
        try:
            done = compact_day(storage.tenant(name), day, run_id=context.run.run_id[:12], logger=context.log)
        except NotStoredError as exc:
            context.log.info(f"{exc}; nothing to do")
            return
        except (DayLockedError, DayChangedError, CompactionError) as exc:
            raise dg.Failure(description=f"tenant {name}: {exc}", allow_retries=False) from None
        before, after = done.before, done.after
        context.log_event(
            dg.AssetObservation(
                asset_key=asset.key,
                partition=day.isoformat(),
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
        name=compaction_job_name(name),
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "compaction"},
        description=f"Compact one stored day of tenant {name} (see docs/operations.md#compaction).",
    )
    def compaction_job() -> None:
        compact()

    @dg.sensor(
        name=f"{name}_compaction",
        job=compaction_job,
        minimum_interval_seconds=3600,
        default_status=on,
        required_resource_keys={"storage"},
    )
    def compaction(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        """Compact the tenant's settled days (before the late-arrivals window) that are not compacted, or compacted
        with older typed columns (which the compaction upgrades from `raw`), oldest first."""
        storage: ActivityStorage = context.resources.storage
        window = newest_days(partitions, SETTLE_DAYS)
        settled_before = min(window) if window else dt.date.max
        files = storage.tenant(name).files_by_day()
        due = [d for d in sorted(files) if d < settled_before and not is_current(files[d])]
        if not due:
            return dg.SkipReason(f"every settled day of {name} is compacted, with today's typed columns")
        requests, given_up = [], []
        for day in due:
            version = _version(files[day])
            # A failed run's run key is spent: the next attempt needs a new one, counted by the failures so far.
            failed = context.instance.get_runs_count(
                dg.RunsFilter(
                    job_name=compaction_job_name(name),
                    statuses=[dg.DagsterRunStatus.FAILURE],
                    tags={"dagster/partition": day.isoformat(), DAY_VERSION_TAG: version},
                )
            )
            if failed >= COMPACTION_ATTEMPTS:
                given_up.append(day.isoformat())
                continue
            requests.append(
                dg.RunRequest(
                    partition_key=day.isoformat(),
                    run_key=f"compact:{name}:{day}:{version}:{failed}",
                    tags={DAY_VERSION_TAG: version},
                )
            )
            if len(requests) == COMPACTIONS_PER_TICK:
                break
        if given_up:
            context.log.warning(
                f"{len(given_up)} settled days of {name} failed to compact {COMPACTION_ATTEMPTS} times and are not "
                f"asked for again until they change: {', '.join(given_up[:10])}. See those runs' logs; `make compact "
                f"DAY=... TENANT={name}` tries one by hand."
            )
        if not requests:
            return dg.SkipReason(
                f"no settled day of {name} to compact: {len(given_up)} failed {COMPACTION_ATTEMPTS} times"
            )
        return dg.SensorResult(run_requests=requests)

    lifecycle = TenantLifecycle(jobs=[compaction_job], sensors=[compaction], schedules=[])
    if tenant.keep_days is not None:
        job, schedule = _build_retention(tenant, asset)
        lifecycle.jobs.append(job)
        lifecycle.schedules.append(schedule)
    return lifecycle


def retention_job_name(tenant: str) -> str:
    """The tenant's retention job (built when it sets `keep_days`): `<name>_retention`."""
    return f"{tenant}_retention"


def _build_retention(tenant: TenantConfig, asset: dg.AssetsDefinition) -> tuple[Any, Any]:
    name, keep = tenant.name, tenant.keep_days
    assert keep is not None

    @dg.op(
        name=f"{name}_delete_expired_days",
        required_resource_keys={"storage"},
        description=f"Delete the days of tenant {name} older than its keep_days ({keep}), each with an audit record.",
    )
    def delete_expired(context: dg.OpExecutionContext) -> None:
        storage: ActivityStorage = context.resources.storage
        today = run_start(context).date()  # type: ignore[arg-type]
        first_kept = first_kept_day(tenant, today)
        assert first_kept is not None
        store = storage.tenant(name)
        expired = [d for d in store.days() if d < first_kept]
        copy = open_copy(tenant.keep_copied_to, storage) if tenant.keep_copied_to else None
        copied = copy.tenant(name).day_rows() if copy is not None else {}
        held = store.day_rows() if copy is not None else {}
        refused = []
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
            context.log.info(f"{name} {day}: deleted ({record.rows:,} rows, {record.files} files); {reason}")
            context.log_event(
                dg.AssetObservation(
                    asset_key=asset.key,
                    partition=None,
                    description=f"{day} deleted: {reason}",
                    metadata={"deleted_day": day.isoformat(), "rows": record.rows, "reason": reason},
                )
            )
        if not expired:
            context.log.info(f"no day of {name} is older than {first_kept} (keep_days {keep})")
        if refused:
            raise dg.Failure(
                description=f"tenant {name}: {len(refused)} expired days were kept, because keep_days.copied_to "
                f"does not hold them whole: {', '.join(refused[:10])}. Copy them there first; the next run deletes "
                "them.",
                allow_retries=False,
            )

    @dg.job(
        name=retention_job_name(name),
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "retention"},
        description=f"Delete the days of tenant {name} older than keep_days ({keep}).",
    )
    def retention_job() -> None:
        delete_expired()

    schedule = dg.ScheduleDefinition(
        name=f"{name}_retention_schedule",
        job=retention_job,
        cron_schedule="45 4 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if tenant.automation else dg.DefaultScheduleStatus.STOPPED,
    )
    return retention_job, schedule


def open_copy(where: str, storage: ActivityStorage) -> Dataset:
    """The dataset `keep_days.copied_to` names: a folder, or an object-storage URL (read only; its local work, if
    any, under this deployment's data folder)."""
    if "://" in where:
        return open_dataset(Path(storage.data_dir), where)
    return open_dataset(Path(where), None)


def _version(names: list[str]) -> str:
    """A short name for a version of a day (its files): a day topped up after a compaction is due again."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]


# Delta's own default for `delta.deletedFileRetentionDuration`: a reader (or a writer's conflict check) that
# started up to this long ago may still read a version that names a file replaced since.
DELTA_DEFAULT_RETENTION_HOURS = 168


class VacuumConfig(dg.Config):
    # Files no version of the last `retention_hours` needs are removed.
    retention_hours: int = DELTA_DEFAULT_RETENTION_HOURS
    # Shorter than Delta's default only when said explicitly: a query or a run that started before may lose a
    # file under it.
    allow_short_retention: bool = False


def build_vacuum() -> tuple[Any, Any]:
    """The table's vacuum (object storage only): a job and its weekly schedule, Sunday 03:30 UTC."""

    @dg.op(name="vacuum_activities_table", required_resource_keys={"storage"})
    def vacuum(context: dg.OpExecutionContext, config: VacuumConfig) -> None:
        storage: ActivityStorage = context.resources.storage
        if storage.data_url is None:
            context.log.info("the dataset is on local disk: replaced days are removed when they are replaced")
            return
        hours = config.retention_hours
        if hours < DELTA_DEFAULT_RETENTION_HOURS and not config.allow_short_retention:
            raise dg.Failure(
                description=f"retention_hours {hours} is shorter than Delta's default of "
                f"{DELTA_DEFAULT_RETENTION_HOURS} (7 days): a DuckDB session, a run or another engine that began "
                "within it may still read files a shorter vacuum removes. Keep the default, or set "
                "allow_short_retention: true to remove them anyway.",
                allow_retries=False,
            )
        started = time.monotonic()
        removed = (
            Lake(storage.data_url)
            .table()
            .vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=not config.allow_short_retention)
        )
        context.log.info(f"vacuum of {storage.data_url}/activities: {len(removed)} files no version of the last "
                         f"{hours} hours needs were removed")  # fmt: skip
        context.add_output_metadata(
            {"files_removed": len(removed), "retention_hours": hours, "seconds": round(time.monotonic() - started, 1)}
        )

    @dg.job(
        name="activities_vacuum",
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "vacuum"},
        description="Remove the table's files that no version within its retention needs (object storage).",
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
