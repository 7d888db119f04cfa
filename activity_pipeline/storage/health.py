"""The count check's last word on each day, kept beside the dataset for the `partition_health` view.

    _health/tenant=<name>/YYYY-MM-DD.json    {"day", "source_total", "rows_checked", "checked_at", "passed",
                                              "watermark_ms", "pending"}

One small file per day, replaced atomically, so that a reader never sees half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from activity_pipeline.storage.layout import TenantData


def record_count_check(
    data: TenantData,
    day: dt.date,
    *,
    source_total: int,
    rows_checked: int,
    passed: bool,
    at: dt.datetime,
    watermark_ms: int | None = None,
    pending: int = 0,
) -> Path | str:
    """Record what `count_matches_source` found for `day`; returns the file written.

    >>> data = TenantData(Path("data"), "contoso")
    >>> record_count_check(data, dt.date(2026, 11, 24), source_total=19_400, rows_checked=19_400,
    ...                    passed=True, at=dt.datetime.now(dt.UTC))          # doctest: +SKIP
    PosixPath('.../data/_health/tenant=contoso/2026-11-24.json')
    """
    record = {
        "day": day.isoformat(),
        "source_total": source_total,
        "rows_checked": rows_checked,
        "checked_at": at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "passed": passed,
        "watermark_ms": watermark_ms,
        # At the source but created after the watermark and not stored yet: late arrivals, not a gap.
        "pending": pending,
    }
    if hasattr(data, "lake"):  # storage.lake: one object, written whole by one PUT
        data.record_health(day, record)
        return f"{data.lake.url}/_health/tenant={data.tenant}/{day.isoformat()}.json"
    folder = data.health
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{day.isoformat()}.json"
    tmp = folder / f".{day.isoformat()}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, target)
    return target


def failed_count_checks(data: TenantData) -> set[dt.date]:
    """Days whose last count check found the stored day short of (or beyond) the source."""
    failed = set()
    records = (
        data.health_records()
        if hasattr(data, "lake")
        else (json.loads(p.read_text()) for p in data.health.glob("*.json"))
    )
    for record in records:
        if not record.get("passed", True):
            failed.add(dt.date.fromisoformat(record["day"]))
    return failed
