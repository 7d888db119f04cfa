"""The `activities` asset: one complete UTC day of activities per partition, as Parquet."""

import datetime as dt
import errno
from urllib.parse import quote

import dagster as dg

from activity_pipeline.defs.partitions import daily, partition_day
from activity_pipeline.defs.resources import ActivityStorage, TenantResource
from activity_pipeline.ingest import IngestResult, ingest_day, top_up_day
from activity_pipeline.mdca import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    EndpointError,
    MdcaHTTPError,
    PermissionDeniedError,
    RetentionError,
)
from activity_pipeline.retention import check_retention
from activity_pipeline.storage.duckdb_views import DatabaseBusyError, build_database
from activity_pipeline.storage.schema import COLUMNS
from activity_pipeline.storage.writer import DayLockedError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# A run with this tag set to "true" scans its day in full even when it is stored (the default then is a top-up).
FULL_RESCAN_TAG = "activity_pipeline/full_rescan"

# Errors that another attempt cannot fix: fail the run at once instead of retrying the partition.
_FINAL = (
    ConfigError,
    EndpointError,
    AuthenticationError,
    PermissionDeniedError,
    BadRequestError,
    RetentionError,
    DayLockedError,
)

COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(name, str(dtype), description=text, constraints=dg.TableColumnConstraints(nullable=nullable))
        for name, dtype, nullable, text in COLUMNS
    ]
)
HOURLY_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("hour", "int"), dg.TableColumn("activities", "int")])


def _metadata(result: IngestResult, total_rows: int) -> dict[str, object]:
    scan = result.scan
    return {
        "dagster/row_count": total_rows,
        "dagster/partition_row_count": result.rows,
        # '=' is legal in a file URI path; keep the hive folder name readable.
        "dagster/uri": dg.MetadataValue.url("file://" + quote(str(result.path), safe="/=")),
        "dagster/column_schema": COLUMN_SCHEMA,
        "path": dg.MetadataValue.path(str(result.path)),
        "mode": result.mode,
        "added": result.added,
        "watermark": dg.MetadataValue.timestamp(result.manifest["watermark_ms"] / 1000),
        "source_total_at_scan": result.source_total,
        "quarantined": result.quarantined,
        "pages": scan.pages,
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


@dg.asset(
    partitions_def=daily,
    pool="mdca_api",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    kinds={"parquet"},
    group_name="mdca",
    code_version="1",
    # The daily schedule runs at 02:15 UTC; yesterday should have landed by 04:00.
    freshness_policy=dg.FreshnessPolicy.cron(deadline_cron="0 4 * * *", lower_bound_delta=dt.timedelta(hours=2)),
)
def activities(
    context: dg.AssetExecutionContext, mdca: TenantResource, storage: ActivityStorage
) -> dg.MaterializeResult:
    """Every Defender for Cloud Apps activity of one UTC day (by `timestamp`), one Parquet folder per day under $ACTIVITY_DATA_DIR/activities/date=YYYY-MM-DD/."""  # noqa: E501
    day = partition_day(context)
    try:
        # Retention is relative to the service's now: the run's start time stands in for it.
        check_retention(day, _run_start(context))
        previous = storage.manifest(day)
        full = context.run.tags.get(FULL_RESCAN_TAG, "").lower() == "true"
        with mdca.client(context.log) as client:
            if previous is not None and previous.get("watermark_ms") is not None and not full:
                # Stored already: add what was created since its watermark, not the whole day again.
                result = top_up_day(client, storage.path, day, logger=context.log, run_id=context.run.run_id[:12])
            else:
                result = ingest_day(
                    client,
                    storage.path,
                    day,
                    slices=mdca.slices or None,
                    logger=context.log,
                    run_id=context.run.run_id[:12],
                )
    except _FINAL as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # A full or read-only disk does not heal in a minute: say so instead of retrying.
        raise dg.Failure(
            description=f"Could not write {day} under {storage.path}: {exc.strerror or exc}. Free space (or fix the "
            "mount) and re-run the day; the previously stored version of the day is intact.",
            allow_retries=False,
        ) from exc
    except MdcaHTTPError as exc:
        raise dg.Failure(description=str(exc)) from None
    how = "scanned in full" if result.mode == "full" else f"topped up with {result.added:,} late activities"
    context.log.info(
        f"{day} {how}: {result.rows:,} activities stored ({result.source_total:,} at the source when the scan "
        f"began), {result.quarantined} quarantined, {result.requests} requests, in {result.seconds:.1f}s"
    )
    return dg.MaterializeResult(metadata=_metadata(result, storage.row_total()))


def _run_start(context: dg.AssetExecutionContext) -> dt.datetime:
    """When this run started: the reference for retention, instead of reading the clock in the asset."""
    stats = context.instance.get_run_stats(context.run.run_id)
    if stats and stats.start_time:
        return dt.datetime.fromtimestamp(stats.start_time, dt.UTC)
    return dt.datetime.now(dt.UTC)  # no start time recorded yet: the run is starting now


@dg.asset(deps=[activities], kinds={"duckdb"}, group_name="mdca")
def activities_duckdb(context: dg.AssetExecutionContext, storage: ActivityStorage) -> dg.MaterializeResult:
    """Views over every stored day of activities in $ACTIVITY_DATA_DIR/activities.duckdb: a file the DuckDB CLI opens, with absolute paths."""  # noqa: E501
    first_day = dt.date.fromisoformat(daily.get_first_partition_key() or "")
    try:
        path, views = build_database(storage.path, start_date=first_day)
    except DatabaseBusyError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    import duckdb  # here, not at the top: scanning a day never needs it, and it costs ~40 MiB

    with duckdb.connect(str(path), read_only=True) as con:
        days, rows = con.execute("SELECT count(DISTINCT date), count(*) FROM activities").fetchone()
        at_risk = con.execute("SELECT date, days_left, state FROM retention_risk").fetchall()
    context.log.info(f"{path}: {len(views)} views over {days} days, {rows:,} activities")
    if at_risk:
        context.log.warning(
            f"{len(at_risk)} days leave the service's retention within 14 days and are not safely stored: "
            + ", ".join(f"{d} ({state}, {left} days left)" for d, left, state in at_risk)
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": dg.MetadataValue.url("file://" + quote(str(path), safe="/=")),
            "dagster/row_count": rows,
            "path": dg.MetadataValue.path(str(path)),
            "days": days,
            "views": ", ".join(views),
            "retention_risk_days": len(at_risk),
            "try": dg.MetadataValue.md(
                f"```sh\nduckdb {path} -c 'select date, count(*) from activities group by 1'\n```"
            ),
        }
    )
