"""The DuckDB file: views over the Parquet days, for SQL from Python, the DuckDB CLI or any DuckDB client.

The file holds no data, only views with absolute paths, so it works from any working directory and stays
current as days are replaced. It is built as a new file and renamed over the old one.

`duckdb` is imported where it is used: the process that materializes a day of activities never needs it,
and importing it costs that process about 40 MiB of its memory budget.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import os
import re
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from activity_pipeline.service_window import RESCUE_MARGIN_DAYS, SERVICE_WINDOW_DAYS, at_risk, first_scannable_day
from activity_pipeline.storage import picture
from activity_pipeline.storage.core import Dataset, Finding
from activity_pipeline.storage.layout import STAGING
from activity_pipeline.storage.schema import COLUMNS

DATABASE = "activities.duckdb"
# The picture per tenant written beside it (`storage.picture`).
PICTURE = picture.NAME


class DatabaseBusyError(RuntimeError):
    """Another process has the DuckDB file open for writing."""


class DatabaseWriteError(RuntimeError):
    """The new DuckDB file could not be written (a full or read-only disk); the old one stays as it was."""


# What the filesystem or DuckDB says when the disk cannot take the file.
_DISK_FULL = ("No space left on device", "Disk quota exceeded", "Read-only file system", "could not write", "ENOSPC")


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _typed_empty() -> str:
    cols = ", ".join(f"NULL::{duck_type(c.type)} AS {c.name}" for c in COLUMNS)
    return f"SELECT NULL::VARCHAR AS tenant, {cols}, NULL::DATE AS date WHERE false"


def duck_type(arrow: pa.DataType) -> str:
    """DuckDB's name for a column type of the schema."""
    if pa.types.is_list(arrow):
        return f"{duck_type(arrow.value_type)}[]"
    if pa.types.is_struct(arrow):
        return "STRUCT(" + ", ".join(f"{f.name} {duck_type(f.type)}" for f in arrow) + ")"
    return {
        "string": "VARCHAR",
        "int32": "INTEGER",
        "bool": "BOOLEAN",
        "timestamp[ms, tz=UTC]": "TIMESTAMPTZ",
    }[str(arrow)]


# Analytic views a SOC reaches for first. Each reads the `activities` view; DuckDB prunes by `date` and
# by the Parquet statistics, so a filter on date or timestamp reads only the days it needs.
ANALYTIC_VIEWS: dict[str, str] = {
    "daily_app_activity": """
        SELECT tenant, date, app_id, app_name, count(*) AS activities, count(DISTINCT user_name) AS users,
               count(*) FILTER (WHERE is_success = false) AS failures,
               count(*) FILTER (WHERE is_admin) AS admin_activities
        FROM activities GROUP BY ALL""",
    "daily_user_activity": """
        SELECT tenant, date, user_name, count(*) AS activities, count(DISTINCT app_id) AS apps,
               count(DISTINCT country_code) AS countries, count(DISTINCT ip_address) AS ip_addresses,
               count(*) FILTER (WHERE is_success = false) AS failures,
               count(*) FILTER (WHERE is_admin) AS admin_activities
        FROM activities GROUP BY ALL""",
    "failed_sign_ins": """
        SELECT tenant, date, timestamp, user_name, account_display_name, account_object_id, is_external, app_name,
               failure_reason, sign_in_error_code, ip_address, country_code, city, organization, ip_category,
               user_agent, description, id
        FROM activities
        WHERE event_type = 'EVENT_CATEGORY_FAILED_LOGIN' OR (is_success = false AND action ILIKE '%log%')""",
    "admin_activities": """
        SELECT tenant, date, timestamp, user_name, app_name, action, description, ip_address, country_code, id
        FROM activities WHERE is_admin""",
    "activity_by_country": """
        SELECT tenant, date, country_code, count(*) AS activities, count(DISTINCT user_name) AS users,
               count(*) FILTER (WHERE is_success = false) AS failures
        FROM activities GROUP BY ALL""",
    "hourly_activity": """
        SELECT tenant, date, hour(timestamp AT TIME ZONE 'UTC') AS hour_utc, app_name, count(*) AS activities
        FROM activities GROUP BY ALL""",
    "new_country_sightings": """
        WITH firsts AS (
            SELECT tenant, user_name, country_code, min(timestamp) AS first_seen,
                   arg_min(ip_address, timestamp) AS ip_address, arg_min(app_name, timestamp) AS app_name
            FROM activities WHERE user_name IS NOT NULL AND country_code IS NOT NULL GROUP BY ALL
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY tenant, user_name ORDER BY first_seen) AS nth_country FROM firsts
        )
        SELECT tenant, user_name, country_code, first_seen, ip_address, app_name, nth_country
        FROM ranked WHERE nth_country > 1""",
    "user_failure_bursts": """
        SELECT tenant, user_name, time_bucket(INTERVAL 1 HOUR, timestamp) AS hour_start, count(*) AS failed_sign_ins,
               count(DISTINCT ip_address) AS ip_addresses, count(DISTINCT country_code) AS countries,
               any_value(account_object_id) AS account_object_id, bool_or(is_external) AS is_external,
               list_distinct(list(sign_in_error_code) FILTER (WHERE sign_in_error_code IS NOT NULL)) AS error_codes
        FROM failed_sign_ins WHERE user_name IS NOT NULL GROUP BY ALL HAVING count(*) >= 5""",
    "shared_ip_addresses": """
        SELECT tenant, date, ip_address, organization, country_code, count(DISTINCT user_name) AS users,
               count(*) AS activities
        FROM activities WHERE ip_address IS NOT NULL GROUP BY ALL HAVING count(DISTINCT user_name) >= 5""",
    # Microsoft's CloudAppEvents schema (advanced hunting), for queries written for it or the SIEM agent: every
    # column this API can fill, from typed columns; the others are NULL (docs/querying.md lists which and why).
    "cloud_app_events": """
        SELECT tenant, timestamp AS Timestamp, action AS ActionType, app_name AS Application, app_id AS ApplicationId,
               account_object_id AS AccountObjectId, user_name AS AccountId,
               coalesce(account_display_name, user_name) AS AccountDisplayName, is_admin AS IsAdminOperation,
               device_type AS DeviceType, os_platform AS OSPlatform, ip_address AS IPAddress,
               is_anonymous_proxy AS IsAnonymousProxy, country_code AS CountryCode, city AS City, organization AS Isp,
               user_agent AS UserAgent, event_type AS ActivityType, objects AS ActivityObjects,
               target.name AS ObjectName, target.kind AS ObjectType, target.id AS ObjectId, id AS ReportId,
               NULL::VARCHAR AS AccountType, is_external AS IsExternalUser, NULL::BOOLEAN AS IsImpersonated,
               ip_tags AS IPTags, ip_category AS IPCategory, NULL::VARCHAR[] AS UserAgentTags,
               json_extract(raw, '$.rawDataJson') AS RawEventData, description AS AdditionalFields,
               NULL::JSON AS LastSeenForUser, NULL::JSON AS UncommonForUser,
               CASE source WHEN 0 THEN 'Defender for Cloud Apps access control'
                           WHEN 1 THEN 'Defender for Cloud Apps session control'
                           WHEN 2 THEN 'Defender for Cloud Apps app connector' END AS AuditSource,
               NULL::JSON AS SessionData, NULL::VARCHAR AS OAuthAppId,
               date
        FROM (SELECT *, list_filter(objects, o -> o.obj_type NOT IN (2, 6, 7, 21, 22, 23))[1] AS target
              FROM activities)""",
}


# The UTC date when the view is queried.
_TODAY = "CAST(now() AT TIME ZONE 'UTC' AS DATE)"


def _health_view(health_glob: str | None, progress: str) -> str:
    """`partition_health` over the count checks' findings at `health_glob` (a folder's or a bucket's; None:
    there are none yet), and each stored day's watermark (`progress`, `ViewSources.progress`).

    A day is in progress while it has not ended, and the day before until its count check has run after it ended
    (the nightly run at 02:15 UTC)."""
    stored = """SELECT tenant, date, count(*) AS rows_stored FROM activities GROUP BY ALL"""
    if health_glob is not None:
        checks = (
            "SELECT tenant, CAST(day AS DATE) AS date, source_total, rows_checked, checked_at, passed, "
            "make_timestamptz(watermark_ms * 1000) AS watermark, pending, coalesce(filters, '') AS filters "
            f"FROM read_json({_sql_string(health_glob)}, hive_partitioning = true, "
            "hive_types = {'tenant': VARCHAR}, columns = {day: 'VARCHAR', source_total: 'BIGINT', "
            "rows_checked: 'BIGINT', checked_at: 'TIMESTAMPTZ', passed: 'BOOLEAN', watermark_ms: 'BIGINT', "
            "pending: 'BIGINT', filters: 'VARCHAR'})"
        )
    else:
        checks = (
            "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date, NULL::BIGINT AS source_total, "
            "NULL::BIGINT AS rows_checked, NULL::TIMESTAMPTZ AS checked_at, NULL::BOOLEAN AS passed, "
            "NULL::TIMESTAMPTZ AS watermark, NULL::BIGINT AS pending, NULL::VARCHAR AS filters WHERE false"
        )
    return f"""
        WITH stored AS ({stored}), checks AS ({checks}), progress AS ({progress}), days AS (
            SELECT coalesce(stored.tenant, checks.tenant) AS tenant, coalesce(stored.date, checks.date) AS date,
                   coalesce(stored.rows_stored, 0) AS rows_stored,
                   checks.source_total AS source_total_at_last_check,
                   checks.source_total - coalesce(stored.rows_stored, 0) AS drift,
                   checks.passed AS last_check_passed, checks.checked_at AS last_checked_at,
                   checks.watermark AS complete_up_to, checks.pending AS pending_after_watermark,
                   checks.filters AS collected_under_filters
            FROM stored FULL OUTER JOIN checks ON stored.tenant = checks.tenant AND stored.date = checks.date
        )
        SELECT days.*,
               days.date >= {_TODAY} OR (days.date = {_TODAY} - 1 AND (days.last_checked_at IS NULL
                   OR days.last_checked_at AT TIME ZONE 'UTC' < CAST(days.date + 1 AS TIMESTAMP))) AS in_progress,
               progress.watermark AS collected_up_to, progress.collected_at AS last_collected_at
        FROM days LEFT JOIN progress ON progress.tenant = days.tenant AND progress.date = days.date
        ORDER BY 1, 2"""


# A tenant collected intraday is `behind` once its watermark is older than its interval, the watermark's margin
# (five minutes, `ingest.WATERMARK_MARGIN_MS`) and this grace for the run itself.
WATERMARK_MARGIN_MINUTES = 5
BEHIND_GRACE_MINUTES = 5


def _freshness_view(intervals: Mapping[str, int], progress: str) -> str:
    """`freshness`: per tenant, the newest day and activity stored, the watermark (every activity created by then
    is stored) and how far it is behind now; `intervals` are the configured tenants' intraday_minutes (0: off).
    Evaluated when queried."""
    pairs = ", ".join(f"({_sql_string(t)}, {int(m)})" for t, m in sorted(intervals.items()))
    tenants = (
        f"SELECT * FROM (VALUES {pairs}) AS t(tenant, intraday_minutes)"
        if pairs
        else "SELECT NULL::VARCHAR AS tenant, NULL::INTEGER AS intraday_minutes WHERE false"
    )
    lag = "epoch(now() - latest.complete_up_to) / 60"
    allowed = f"tenants.intraday_minutes + {WATERMARK_MARGIN_MINUTES + BEHIND_GRACE_MINUTES}"
    return f"""
        WITH tenants AS ({tenants}), progress AS ({progress}), latest AS (
            SELECT tenant, max(date) AS newest_day, arg_max(watermark, date) AS complete_up_to,
                   arg_max(collected_at, date) AS last_collected_at
            FROM progress GROUP BY tenant
        ), recent AS (
            SELECT tenant, max(timestamp) AS newest_activity FROM activities WHERE date >= {_TODAY} - 1 GROUP BY tenant
        )
        SELECT coalesce(tenants.tenant, latest.tenant) AS tenant, tenants.intraday_minutes, latest.newest_day,
               recent.newest_activity, latest.complete_up_to, latest.last_collected_at,
               CAST(round({lag}, 1) AS DOUBLE) AS lag_minutes,
               CASE WHEN latest.newest_day IS NULL THEN 'nothing stored'
                    WHEN coalesce(tenants.intraday_minutes, 0) = 0 THEN 'daily'
                    WHEN latest.newest_day < {_TODAY}
                      OR {lag} > {allowed} THEN 'behind'
                    ELSE 'current' END AS state
        FROM tenants FULL OUTER JOIN latest ON latest.tenant = tenants.tenant
        LEFT JOIN recent ON recent.tenant = coalesce(tenants.tenant, latest.tenant)
        ORDER BY 1"""


def _retention_risk_view(start_dates: Mapping[str, dt.date], stored: str) -> str:
    """Each tenant's days within RESCUE_MARGIN_DAYS of leaving the service's retention that are missing or
    incomplete, from the tenant's first partition on; `stored` is the SQL of the stored (tenant, date) pairs.

    Evaluated when queried (today is the query's UTC date), from the stored days and the count check's
    findings, so it is current between rebuilds of the file.
    """
    today = _TODAY
    starts = ", ".join(f"({_sql_string(t)}, DATE '{d.isoformat()}')" for t, d in sorted(start_dates.items()))
    tenants = (
        f"SELECT * FROM (VALUES {starts}) AS t(tenant, start_date)"
        if starts
        else ("SELECT NULL::VARCHAR AS tenant, NULL::DATE AS start_date WHERE false")
    )
    return f"""
        WITH tenants AS ({tenants}), days AS (
            SELECT tenant, CAST(d AS DATE) AS date
            FROM tenants, generate_series(start_date, {today} - INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(d)
        ), stored AS ({stored})
        SELECT days.tenant, days.date, {SERVICE_WINDOW_DAYS} - ({today} - days.date) AS days_left,
               CASE WHEN stored.date IS NULL THEN 'missing' ELSE 'incomplete' END AS state
        FROM days LEFT JOIN stored ON stored.tenant = days.tenant AND stored.date = days.date
        LEFT JOIN partition_health AS health ON health.tenant = days.tenant AND health.date = days.date
        WHERE {SERVICE_WINDOW_DAYS} - ({today} - days.date) BETWEEN 0 AND {RESCUE_MARGIN_DAYS}
          AND (stored.date IS NULL OR health.last_check_passed = false)
        ORDER BY days.tenant, days.date"""


@dataclasses.dataclass
class Database:
    """The file built, and what it held when built."""

    path: Path
    views: list[str]
    tenant_days: int
    rows: int
    # (tenant, day, days left, state) of the days in `retention_risk`.
    at_risk: list[tuple[str, dt.date, int, str]]


def build_database(
    dataset: Dataset,
    *,
    start_dates: Mapping[str, dt.date] | None = None,
    intervals: Mapping[str, int] | None = None,
) -> Database:
    """Build `activities.duckdb` in the dataset's folder (`dataset.root`), over every tenant's days.

    `start_dates` holds each configured tenant's first partition: `retention_risk` looks for missing days
    from there (a tenant not named has its stored days in every view, and no missing days). `intervals` are the
    configured tenants' intraday_minutes, for `freshness` (a tenant not named shows with its stored days).
    Builds from concurrent runs (one per tenant) take turns; each one's result is complete.

    On object storage (`storage.lake`) the views read the Delta table's current files in place, and
    `<root>/activities.sql` is written beside the file: the setup a DuckDB session needs for them (extensions
    from the venv, credentials from the cloud's chain): `duckdb -init <root>/activities.sql <root>/activities.duckdb`.
    """
    root = dataset.root
    target = root / DATABASE
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    with open(staging / f"{DATABASE}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(dataset, target, start_dates or {}, intervals or {})


def _build(
    dataset: Dataset, target: Path, start_dates: Mapping[str, dt.date], intervals: Mapping[str, int]
) -> Database:
    _refuse_if_open(target)
    root = dataset.root
    tmp = root / f".{DATABASE}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    sources = dataset.view_sources()  # one listing (or one read of the table's log) for the whole build
    source = sources.activities or _typed_empty()
    derived = {
        "partition_health": _health_view(sources.findings, sources.progress),
        "retention_risk": _retention_risk_view(start_dates, sources.stored),
        "deleted_days": _deleted_view(sources.deleted),
        "freshness": _freshness_view(intervals, sources.progress),
    }
    views = ["activities", *ANALYTIC_VIEWS, *derived]
    import duckdb

    try:
        _write(tmp, sources.setup, source, derived)
        if sources.script is not None:
            script = root / "activities.sql"
            lines = [f"-- duckdb -init {script} {target}", *(f"{sql};" for sql in sources.script)]
            script.write_text("\n".join(lines) + "\n")
        os.replace(tmp, target)
    except (duckdb.Error, OSError) as exc:
        text = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror or exc}"
        if not any(marker.lower() in text.lower() for marker in _DISK_FULL):
            raise
        raise DatabaseWriteError(
            f"Could not write {target}: {' '.join(text.split())[:300]}. Free space (or fix the mount) and run "
            "activities_duckdb again; the previous file and the Parquet days are intact."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    stored = sources.rows
    return Database(target, views, len(stored), sum(stored.values()), _at_risk(dataset, start_dates, stored))


def _deleted_view(glob: str | None) -> str:
    """`deleted_days`: the audit records of the days deleted for a tenant's `keep_days`."""
    columns = (
        "tenant: 'VARCHAR', day: 'DATE', rows: 'BIGINT', files: 'BIGINT', bytes: 'BIGINT', "
        "deleted_at: 'TIMESTAMPTZ', reason: 'VARCHAR', run_id: 'VARCHAR', version: 'VARCHAR'"
    )
    if glob is None:
        return (
            "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date, NULL::BIGINT AS rows, NULL::TIMESTAMPTZ AS "
            "deleted_at, NULL::VARCHAR AS reason, NULL::VARCHAR AS run_id WHERE false"
        )
    return (
        "SELECT tenant, day AS date, rows, deleted_at, reason, run_id "
        f"FROM read_json({_sql_string(glob)}, columns = {{{columns}}}) ORDER BY tenant, date"
    )


def _write(tmp: Path, setup: list[str], source: str, derived: Mapping[str, str]) -> None:
    """Write the views to `tmp` (renamed into place by the caller); `derived` are the views over `activities` and
    the dataset's records, in the order they are created."""
    import duckdb

    with duckdb.connect(str(tmp)) as con:
        for sql in setup:
            con.execute(sql)
        # Creating a view binds its query, and binding `activities` lists every stored day's folder: once
        # per view over it, the cost of a build would grow with the days kept. So the views over it are
        # bound against a typed stand-in with the same columns, and the real source once, last. (A view is
        # kept as its SQL and bound again when queried.)
        con.execute(f"CREATE TABLE activities AS {_typed_empty()}")
        for name, sql in ANALYTIC_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")
        con.execute("DROP TABLE activities")
        con.execute(f"CREATE VIEW activities AS {source}")
        for name, sql in derived.items():
            con.execute(f"CREATE VIEW {name} AS {sql}")
        con.execute("CHECKPOINT")
        # The picture per tenant, from the same views (picture.py), beside the file.
        picture.write(con, tmp.parent)


def _at_risk(
    dataset: Dataset, start_dates: Mapping[str, dt.date], stored: Mapping[tuple[str, dt.date], int]
) -> list[tuple[str, dt.date, int, str]]:
    """What `retention_risk` holds today, computed as the view does but reading only the count check's
    findings of the days near the cliff (RESCUE_MARGIN_DAYS of them per tenant)."""
    today = dt.datetime.now(dt.UTC).date()
    oldest = first_scannable_day(today)
    found = []
    for tenant, start in sorted(start_dates.items()):
        window = [oldest + dt.timedelta(days=k) for k in range(RESCUE_MARGIN_DAYS + 1)]
        days = [d for d in window if start <= d < today]
        store = dataset.tenant(tenant)
        failed = [d for d in days if (tenant, d) in stored and _last_check_failed(store.finding(d))]
        kept = [d for d in days if (tenant, d) in stored]
        for risk in at_risk(days, today=today, stored=kept, incomplete=failed):
            found.append((tenant, risk.day, risk.days_left, risk.state))
    return found


def _last_check_failed(finding: Finding | None) -> bool:
    return finding is not None and finding.passed is False


def _refuse_if_open(target: Path) -> None:
    """A session with the file open for writing would go on in a copy that no longer has a name: refuse. Read-only
    sessions (`duckdb -readonly`) share the file and do not block the build: the new file is renamed into place
    under them, and they see it when they open it again."""
    if not target.exists():
        return
    import duckdb

    try:
        # A shared lock: granted beside read-only sessions, refused while a session has the file for writing.
        duckdb.connect(str(target), read_only=True).close()
    except duckdb.IOException as exc:
        pid = re.search(r"PID (\d+)", str(exc))
        who = f" (process {pid.group(1)})" if pid else ""
        raise DatabaseBusyError(
            f"{target} is open for writing in another process{who}, for example a DuckDB CLI session. Close it, or "
            "open the file with `duckdb -readonly`, which does not block the build; then run activities_duckdb "
            "again. The Parquet days are unaffected."
        ) from None
