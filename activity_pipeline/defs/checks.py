"""Partition-aware checks on `activities`: is each stored day complete, unique, in range and well formed?

Each reports `actual`, `expected` and `diff` in its metadata. The two ERROR checks marked blocking stop
`activities_duckdb` in the same run when they fail.
"""

import datetime as dt
from typing import Any

import dagster as dg
import numpy as np

from activity_pipeline.days import day_window
from activity_pipeline.defs.assets import activities
from activity_pipeline.defs.partitions import daily, partition_day
from activity_pipeline.defs.resources import ActivityStorage, TenantResource
from activity_pipeline.storage.inspect import DayFacts

TRAILING_DAYS = 7
# An hour with no rows is suspicious only if that hour usually carries at least this many.
SILENT_HOUR_MIN_AVERAGE = 20
# Trailing days needed before the history-based checks judge at all.
MIN_HISTORY_DAYS = 3


def _facts(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> DayFacts:
    return storage.facts(partition_day(context))


def _missing(day: dt.date, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=severity,
        description=f"{day} has not been materialized: nothing is stored for it",
        metadata={"actual": 0, "expected": "a stored day", "diff": "day missing"},
    )


def _with_history(
    context: dg.AssetCheckExecutionContext, storage: ActivityStorage
) -> tuple[DayFacts, dict[dt.date, dict[str, Any]]] | dg.AssetCheckResult:
    """The day's facts and its trailing days' manifests, or the verdict when there is too little to judge."""
    facts = _facts(context, storage)
    if not facts.exists or not facts.manifest:
        return _missing(facts.day, dg.AssetCheckSeverity.WARN)
    history = storage.trailing_manifests(facts.day, TRAILING_DAYS)
    if len(history) < MIN_HISTORY_DAYS:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"only {len(history)} trailing days stored; needs {MIN_HISTORY_DAYS} to judge",
            metadata={"actual": 0, "expected": 0, "diff": 0, "trailing_days": len(history)},
        )
    return facts, history


@dg.asset_check(asset=activities, partitions_def=daily, blocking=True)
def count_matches_source(
    context: dg.AssetCheckExecutionContext, mdca: TenantResource, storage: ActivityStorage
) -> dg.AssetCheckResult:
    """Rows stored for the day equal the API's own list-mode total for the day, asked at check time."""
    facts = _facts(context, storage)
    day = facts.day
    with mdca.client(context.log) as client:
        expected = client.count(*day_window(day))
    passed = facts.exists and facts.rows == expected
    # The one thing a check leaves behind: its finding, for the partition_health view.
    storage.record_count_check(day, source_total=expected, rows_checked=facts.rows, passed=passed)
    diff = facts.rows - expected
    if not facts.exists:
        note = f"{day} is not stored; the source holds {expected:,}"
    elif diff < 0:
        note = f"{-diff:,} activities at the source are not stored (late arrivals, or an incomplete scan): re-run {day}"
    elif diff > 0:
        note = f"{diff:,} more rows stored than the source reports"
    else:
        note = f"all {expected:,} activities stored"
    scanned = (facts.manifest or {}).get("source_total_at_scan")
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=note,
        metadata={"actual": facts.rows, "expected": expected, "diff": diff, "source_total_at_scan": scanned},
    )


@dg.asset_check(asset=activities, partitions_def=daily, blocking=True)
def ids_unique(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """No `id` appears twice in the day."""
    facts = _facts(context, storage)
    if not facts.exists:
        return _missing(facts.day, dg.AssetCheckSeverity.ERROR)
    dups = facts.duplicate_ids
    return _none_found(dups, f"{dups:,} duplicate rows" if dups else "every id once", rows=facts.rows)


@dg.asset_check(asset=activities, partitions_def=daily)
def timestamps_in_partition(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """Every row's timestamp falls inside the partition's UTC day."""
    facts = _facts(context, storage)
    if not facts.exists:
        return _missing(facts.day, dg.AssetCheckSeverity.ERROR)
    start, end = day_window(facts.day)
    fmt = _iso
    return _none_found(
        facts.outside,
        min_timestamp=fmt(facts.min_ms),
        max_timestamp=fmt(facts.max_ms),
        window=f"[{fmt(start)}, {fmt(end)})",
    )


def _none_found(count: int, description: str | None = None, **metadata: Any) -> dg.AssetCheckResult:
    """An ERROR check that passes when `count`, of things that must not exist, is 0."""
    return dg.AssetCheckResult(
        passed=count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={"actual": count, "expected": 0, "diff": count, **metadata},
    )


def _iso(ms: int | None) -> str:
    return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


@dg.asset_check(asset=activities, partitions_def=daily)
def no_quarantined_records(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """The day's quarantine file holds nothing: every record had an `_id` and a `timestamp`."""
    facts = _facts(context, storage)
    if not facts.exists:
        return _missing(facts.day, dg.AssetCheckSeverity.ERROR)
    n = facts.quarantined
    return _none_found(n, f"{n} records kept in _quarantine.jsonl, not in the table" if n else None)


@dg.asset_check(asset=activities, partitions_def=daily)
def schema_matches(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """Every file of the day has the documented schema."""
    facts = _facts(context, storage)
    if not facts.exists:
        return _missing(facts.day, dg.AssetCheckSeverity.ERROR)
    bad = facts.schema_mismatches
    return _none_found(len(bad), files_with_other_schema=", ".join(bad))


@dg.asset_check(asset=activities, partitions_def=daily)
def no_unexpected_silent_hours(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """No hour is empty when that hour averaged at least 20 rows over the trailing 7 stored days."""
    judged = _with_history(context, storage)
    if isinstance(judged, dg.AssetCheckResult):
        return judged
    facts, history = judged
    today = np.array(facts.manifest["hourly"])
    average = np.mean([m["hourly"] for m in history.values()], axis=0)
    silent = [h for h in range(24) if today[h] == 0 and average[h] >= SILENT_HOUR_MIN_AVERAGE]
    return dg.AssetCheckResult(
        passed=not silent,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"silent hours (UTC) that are usually busy: {silent}" if silent else None),
        metadata={
            "actual": len(silent),
            "expected": 0,
            "diff": len(silent),
            "silent_hours_utc": str(silent),
            "trailing_average_of_those_hours": str([round(float(average[h]), 1) for h in silent]),
            "trailing_days": len(history),
        },
    )


@dg.asset_check(asset=activities, partitions_def=daily)
def apps_still_reporting(context: dg.AssetCheckExecutionContext, storage: ActivityStorage) -> dg.AssetCheckResult:
    """Every app that reported on each of the trailing 7 stored days also reported today."""
    judged = _with_history(context, storage)
    if isinstance(judged, dg.AssetCheckResult):
        return judged
    facts, history = judged
    regular = set.intersection(*(set(m.get("apps", {})) for m in history.values())) - {"None"}
    today = set(facts.manifest.get("apps", {}))
    missing = sorted(regular - today, key=int)
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"apps that reported every trailing day but not today: {missing}" if missing else None),
        metadata={
            "actual": len(regular & today),
            "expected": len(regular),
            "diff": -len(missing),
            "missing_app_ids": ", ".join(missing),
            "trailing_days": len(history),
        },
    )
