"""The `activities` asset (one tenant's complete UTC day per partition, as Parquet), and `activities_duckdb`.

Built by the tenants component (`components/tenants.py`), so nothing here is a definition by itself.
"""

import datetime as dt
import errno
import time
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import quote

import dagster as dg

from activity_pipeline.components.partitions import TenantDays, partition_day, partition_tenant, run_start
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients, TenantResource
from activity_pipeline.errors import ConfigError
from activity_pipeline.ingest import (
    ALLOW_SHORTER_TAG,
    FiltersChangedError,
    IngestResult,
    ShorterScanError,
    collect_day,
)
from activity_pipeline.mdca import (
    EndpointError,
    MdcaHTTPError,
    ProtocolError,
    ScanStalledError,
)
from activity_pipeline.service_window import RESCUE_MARGIN_DAYS, OutsideServiceWindowError, check_scannable
from activity_pipeline.storage.dataset import storage_problem
from activity_pipeline.storage.duckdb_views import (
    DATABASE,
    PICTURE,
    DatabaseBusyError,
    DatabaseWriteError,
    build_database,
)
from activity_pipeline.storage.errors import (
    DamagedDayError,
    DayLockedError,
    StorageLocationError,
    UnsafeVersionError,
)
from activity_pipeline.storage.schema import COLUMNS

# Filesystem errors that another attempt a minute later will meet again, each with what to do about it.
_DISK_ERRNOS = {
    errno.ENOSPC: "Free space (or fix the mount) and re-run the day",
    errno.EDQUOT: "Raise the quota or free space, and re-run the day",
    errno.EROFS: "The filesystem is mounted read-only: remount it writable and re-run the day",
    errno.EACCES: "This process may not write there: fix the folder's owner or permissions, or set ACTIVITY_DATA_DIR",
    errno.EPERM: "This process may not write there: fix the folder's owner or permissions, or set ACTIVITY_DATA_DIR",
    errno.ENOTDIR: "Part of that path is a file, not a folder: point ACTIVITY_DATA_DIR at a folder",
    errno.EEXIST: "Part of that path is a file, not a folder: point ACTIVITY_DATA_DIR at a folder",
}
# A run with this tag set to "true" scans its day in full even when it is stored (the default then is a top-up).
FULL_RESCAN_TAG = "activity_pipeline/full_rescan"

# Errors that another attempt cannot fix: fail the run at once instead of retrying the partition. Every HTTP error
# is among them: the client has retried what can be retried (a 429 or a 5xx) within its own budget already.
_FINAL = (
    ConfigError,
    EndpointError,
    MdcaHTTPError,
    ProtocolError,
    ScanStalledError,
    OutsideServiceWindowError,
    DayLockedError,
    ShorterScanError,
    FiltersChangedError,
    DamagedDayError,
    StorageLocationError,
    UnsafeVersionError,
)

COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(
            c.name, str(c.type), description=c.description, constraints=dg.TableColumnConstraints(nullable=c.nullable)
        )
        for c in COLUMNS
    ]
)
HOURLY_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("hour", "int"), dg.TableColumn("activities", "int")])


def _metadata(result: IngestResult, total_rows: int) -> dict[str, object]:
    scan = result.scan
    return {
        # Not `dagster/row_count`: that is the whole asset's, every tenant's (activities_duckdb shows it).
        "tenant_row_count": total_rows,
        "dagster/partition_row_count": result.rows,
        # '=' is legal in a file URI path; keep the hive folder name readable.
        "dagster/uri": dg.MetadataValue.url(
            result.path if isinstance(result.path, str) else "file://" + quote(str(result.path), safe="/=")
        ),
        "dagster/column_schema": COLUMN_SCHEMA,
        "path": dg.MetadataValue.path(str(result.path)),
        "mode": result.mode,
        "added": result.added,
        "watermark": dg.MetadataValue.timestamp((result.manifest.watermark_ms or 0) / 1000),
        "source_total_at_scan": result.source_total,
        "quarantined": result.quarantined,
        "pages": scan.pages,
        # Record ids held at most to drop duplicates: a few pages' worth per slice, whatever the day's size.
        "ids_held_peak": scan.ids_held_peak,
        "slices": result.slices,
        "requests": result.requests,
        "retries": result.retries,
        "throttled_responses": result.throttled,
        "throttle_wait_seconds": round(result.throttle_wait_seconds, 2),
        "duplicates_dropped": scan.duplicates_dropped,
        "out_of_window_dropped": scan.out_of_window_dropped,
        "seconds": round(result.seconds, 2),
        "records_per_second": round(result.records_per_second, 1),
        "bytes_received": result.bytes_received,
        "bytes_written": result.bytes_written,
        "hourly": dg.MetadataValue.table(
            records=[dg.TableRecord({"hour": h, "activities": n}) for h, n in enumerate(result.hourly)],
            schema=HOURLY_SCHEMA,
        ),
    }


def freshness_policy(intraday_minutes: int) -> dg.FreshnessPolicy:
    """The UI's freshness of `activities`, a whole asset's (per tenant: the `freshness` view).

    With tenants collected intraday (`intraday_minutes`: the shortest interval; 0: none) some tenant's day lands
    every interval: late after the interval, the watermark's five minutes and five for the run; warned five
    minutes before. Otherwise the nightly run at 02:15 UTC should have landed yesterday by 04:00.
    """
    if intraday_minutes > 0:
        late = dt.timedelta(minutes=intraday_minutes + 10)
        return dg.FreshnessPolicy.time_window(fail_window=late, warn_window=late - dt.timedelta(minutes=5))
    return dg.FreshnessPolicy.cron(deadline_cron="0 4 * * *", lower_bound_delta=dt.timedelta(hours=2))


def build_activities(
    grid: TenantDays, *, adopt_legacy_days: bool = False, intraday_minutes: int = 0
) -> dg.AssetsDefinition:
    """The `activities` asset: every tenant's days, a partition per (day, tenant).

    `adopt_legacy_days`: move days stored before tenants existed under the one tenant first (a deployment of one
    tenant without a tenants file). `intraday_minutes`: `freshness_policy`'s.
    """

    @dg.asset(
        key="activities",
        partitions_def=grid.partitions,
        required_resource_keys={MDCA, "storage"},
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        kinds={"parquet"},
        group_name="activities",
        code_version="1",
        freshness_policy=freshness_policy(intraday_minutes),
        description="Every Defender for Cloud Apps activity of one tenant for one UTC day (by `timestamp`), one "
        "Parquet folder per day under $ACTIVITY_DATA_DIR/activities/tenant=NAME/date=YYYY-MM-DD/. A day shown as "
        "missing is one not collected yet, not a loss: each tenant's days start at the oldest the service still "
        "keeps (its 180 days, unless start_date or keep_days says otherwise), and any of them can be backfilled "
        "(Materialize, then pick the days; or make backfill FROM= TO=). The nightly run collects yesterday; today "
        "is the day in progress, collected every intraday_minutes.",
    )
    def activities(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage: ActivityStorage = context.resources.storage
        tenant, day = partition_tenant(context), partition_day(context)
        if (refusal := grid.refusal(tenant, day, run_start(context).date())) is not None:
            raise dg.Failure(description=f"tenant {tenant}: {refusal}", allow_retries=False)
        if adopt_legacy_days and (adopted := storage.adopt_legacy_days(tenant)):
            context.log.info(f"moved {len(adopted)} days stored before tenants existed under tenant={tenant}/")
        clients: TenantClients = getattr(context.resources, MDCA)
        return _materialize_day(context, tenant, clients[tenant], storage)

    return activities


def _materialize_day(
    context: dg.AssetExecutionContext, tenant: str, mdca: TenantResource, storage: ActivityStorage
) -> dg.MaterializeResult:
    day = partition_day(context)
    store = storage.tenant(tenant)
    run_id = context.run.run_id[:12]
    try:
        # Retention is relative to the service's now: the run's start time stands in for it.
        check_scannable(day, run_start(context))
        storage.check_location()
        with mdca.client(context.log) as client:
            # A stored day is topped up with what was created since its watermark, not scanned again; the
            # choice is made under the day's lock, from what is committed then.
            result = _waiting_for_the_day(context, lambda: collect_day(
                client, store, day, mode="full" if _tag(context, FULL_RESCAN_TAG) else "auto",
                slices=mdca.slices or None, logger=context.log, run_id=run_id,
                allow_shorter=_tag(context, ALLOW_SHORTER_TAG),
            ))  # fmt: skip
    except _FINAL as exc:
        raise dg.Failure(description=f"tenant {tenant}: {exc}", allow_retries=False) from None
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # A full or read-only disk does not heal in a minute: say so instead of retrying.
        raise dg.Failure(
            description=f"Could not write {day} of tenant {tenant} under {storage.location}: {exc.strerror or exc}. "
            f"{_DISK_ERRNOS[exc.errno]}; the previously stored version of the day is intact.",
            allow_retries=False,
        ) from exc
    except Exception as exc:
        # The storage service refusing the credentials (a write the key may not make) or the bucket: no retry in a
        # minute fixes it. Said in the storage's words mapped to what to change, never its raw text.
        if (problem := storage_problem(str(exc))) is None:
            raise
        raise dg.Failure(
            description=f"tenant {tenant}: {day} could not be stored in {storage.location}: {problem} Nothing was "
            "swapped in; the previously stored version of the day is intact.",
            allow_retries=False,
        ) from None
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        # Dagster turns an interruption into a retry when the asset has a retry policy: a SIGTERM from Kubernetes
        # or a Ctrl-C would then start the scan again. Staging is already cleaned (the writer's exit ran).
        raise dg.Failure(
            description=f"tenant {tenant}: the run was interrupted (SIGTERM or SIGINT) while writing {day}; nothing "
            "was swapped in, the previously stored version of the day is intact. Run the day again to finish it.",
            allow_retries=False,
        ) from None
    how = "scanned in full" if result.mode == "full" else f"topped up with {result.added:,} late activities"
    context.log.info(
        f"{tenant} {day} {how}: {result.rows:,} activities stored ({result.source_total:,} at the source when the "
        f"scan began), {result.quarantined} quarantined, {result.requests} requests, in {result.seconds:.1f}s"
    )
    return dg.MaterializeResult(metadata=_metadata(result, store.row_total()))


# An intraday collection holds a day for seconds (yesterday's, until 02:15): the nightly run that finds the day
# locked waits this long for it before failing; another run's scan of the whole day may take longer.
LOCK_WAIT_SECONDS = 300


def _waiting_for_the_day(context: dg.AssetExecutionContext, collect: Callable[[], IngestResult]) -> IngestResult:
    deadline, told = time.monotonic() + LOCK_WAIT_SECONDS, False
    while True:
        try:
            return collect()
        except DayLockedError as exc:
            if time.monotonic() >= deadline:
                raise
            if not told:
                context.log.info(f"{exc}; waiting for it (up to {LOCK_WAIT_SECONDS // 60} minutes)")
                told = True
            time.sleep(5)


def _tag(context: dg.AssetExecutionContext, name: str) -> bool:
    return context.run.tags.get(name, "").strip().lower() == "true"


def build_activities_duckdb(
    activities: dg.AssetsDefinition, start_dates: Mapping[str, dt.date], intervals: Mapping[str, int]
) -> dg.AssetsDefinition:
    """`activities_duckdb`: views over every tenant's days, rebuilt after any tenant's day lands. `start_dates` and
    `intervals` are `storage.duckdb_views.build_database`'s."""

    @dg.asset(deps=[activities], kinds={"duckdb"}, group_name="dataset")
    def activities_duckdb(context: dg.AssetExecutionContext, storage: ActivityStorage) -> dg.MaterializeResult:
        """Views over every tenant's stored days in $ACTIVITY_DATA_DIR/activities.duckdb: a file the DuckDB CLI opens, with absolute paths and a `tenant` column."""  # noqa: E501
        try:
            db = build_database(storage.dataset, start_dates=start_dates, intervals=intervals)
        except (DatabaseBusyError, DatabaseWriteError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        context.log.info(f"{db.path}: {len(db.views)} views over {db.tenant_days} tenant-days, {db.rows:,} activities")
        if db.at_risk:
            context.log.warning(
                f"{len(db.at_risk)} days leave the service's retention within {RESCUE_MARGIN_DAYS} days and are not "
                "safely stored: "
                + ", ".join(f"{t} {d} ({state}, {left} days left)" for t, d, left, state in db.at_risk)
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/uri": dg.MetadataValue.url("file://" + quote(str(db.path), safe="/=")),
                "dagster/row_count": db.rows,
                "path": dg.MetadataValue.path(str(db.path)),
                # Each tenant's days drawn: activities, failures and completeness (storage/picture.py).
                "picture": dg.MetadataValue.url("file://" + quote(str(db.path.parent / PICTURE), safe="/=")),
                "tenants": len(start_dates),
                "days": db.tenant_days,
                "views": ", ".join(db.views),
                "retention_risk_days": len(db.at_risk),
                "try": dg.MetadataValue.md(
                    f"```sh\nduckdb {db.path} -c 'select tenant, date, count(*) from activities group by all'\n```"
                ),
            }
        )

    return activities_duckdb


class RebuildViews(Protocol):
    def __call__(
        self, context: dg.OpExecutionContext, storage: ActivityStorage, why: str, *, only_if_stale: bool = False
    ) -> None: ...


def rebuild_views(
    context: dg.OpExecutionContext,
    storage: ActivityStorage,
    why: str,
    *,
    only_if_stale: bool = False,
    start_dates: Mapping[str, dt.date],
    intervals: Mapping[str, int],
) -> None:
    """Build the DuckDB file again after a run changed stored days outside the daily job (`why`), recorded as a
    materialization of `activities_duckdb`. `only_if_stale`: only when its views would not show the change by
    themselves (`Dataset.views_follow_writes`), or there is no file yet. A busy or full disk is a warning: the days
    are stored, and the next run builds the file."""
    dataset = storage.dataset
    if only_if_stale and dataset.views_follow_writes and (dataset.root / DATABASE).exists():
        return
    try:
        db = build_database(dataset, start_dates=start_dates, intervals=intervals)
    except (DatabaseBusyError, DatabaseWriteError) as exc:
        context.log.warning(f"the DuckDB file was not rebuilt: {exc}")
        return
    context.log.info(f"{db.path}: {len(db.views)} views over {db.tenant_days} tenant-days, {db.rows:,} activities")
    context.log_event(
        dg.AssetMaterialization(
            asset_key="activities_duckdb",
            description=why,
            metadata={"dagster/row_count": db.rows, "path": dg.MetadataValue.path(str(db.path))},
        )
    )
