"""Ingest one UTC day: count it at the source, scan it, stream it into Parquet, swap it into place.

No Dagster here; `defs/assets.py` calls `ingest_day` and turns the result into metadata.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from activity_pipeline.days import HOUR_MS, day_window
from activity_pipeline.mdca import MdcaClient, Page, PageBody, Scanner, ScanStats, choose_slices
from activity_pipeline.storage.schema import decode_activity, to_table
from activity_pipeline.storage.writer import DayWriter

_M_MMAP_THRESHOLD = -3


def _return_page_buffers_to_the_os() -> None:
    """Have glibc mmap blocks of 512 KiB and more (and unmap them on free) instead of reusing per-thread arenas.

    Pages are ~17 MB buffers (mdca/client.py reads each into one numpy array), allocated and freed several
    times a second by worker threads. glibc's adaptive threshold moves such blocks into per-thread arenas
    after the first free, and those arenas keep their high-water mark: peak RSS then grows with the number of
    threads rather than with the pages in flight. A fixed threshold keeps them out (measured on a
    1,000,000-record day: 4 MiB -> 512 KiB took about 15 MiB off the peak). Elsewhere than glibc this does
    nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 512 << 10)
    # Arrow's jemalloc pool hands freed column buffers back sooner than its default mimalloc. The package
    # chooses it at import (activity_pipeline/__init__.py), which also covers Parquet's writer; this covers a
    # process that imported pyarrow first. Not every pyarrow build has it.
    with contextlib.suppress(NotImplementedError, AttributeError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


@dataclasses.dataclass
class IngestResult:
    day: dt.date
    path: Path
    rows: int
    quarantined: int
    source_total: int
    slices: int
    scan: ScanStats
    requests: int
    retries: int
    throttled: int
    throttle_wait_seconds: float
    bytes_received: int
    bytes_written: int
    seconds: float
    hourly: list[int]
    manifest: dict[str, Any]

    @property
    def records_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _to_table(page: Page, body: PageBody) -> pa.Table | None:
    return to_table(page.raws, page.rows, body) if page.rows else None


def _summarize(table: pa.Table, day_start: int) -> tuple[np.ndarray, dict[str, int]]:
    """Rows per UTC hour, and per app_id ("None" for records without one)."""
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    hours = np.bincount((ts - day_start) // HOUR_MS, minlength=24)
    apps = {str(item["values"]): item["counts"] for item in pc.value_counts(table.column("app_id")).to_pylist()}
    return hours, apps


def ingest_day(
    client: MdcaClient,
    data_dir: Path,
    day: dt.date,
    *,
    slices: int | None = None,
    logger: Any = None,
    run_id: str | None = None,
) -> IngestResult:
    """Scan `day` ([00:00, 24:00) UTC) and replace its folder under `data_dir` with what the scan found.

    Args:
        client: the tenant's client; the day's count and every page go through it.
        data_dir: the dataset's root; the day lands in `activities/date=YYYY-MM-DD/` under it.
        day: the UTC day.
        slices: parallel parts of the day; None chooses from the day's size, the rate limit and the latency.
        logger: where progress lines go (a Dagster run's `context.log` works).
        run_id: names the staging folder and goes into the manifest; a fresh one when None.

    >>> with MdcaClient(settings) as client:                                    # doctest: +SKIP
    ...     result = ingest_day(client, Path("data"), dt.date(2026, 11, 24))
    >>> result.rows, result.source_total, result.path
    (19400, 19400, PosixPath('/.../data/activities/date=2026-11-24'))
    """
    _return_page_buffers_to_the_os()
    started = time.monotonic()
    start, end = day_window(day)
    t0 = time.monotonic()
    source_total = client.count(start, end)
    latency = time.monotonic() - t0
    k = slices or choose_slices(source_total, client.settings.requests_per_minute, latency)
    hourly = np.zeros(24, dtype=np.int64)
    apps: dict[str, int] = {}
    scanner = Scanner(
        client,
        start,
        end,
        slices=k,
        decoder=decode_activity,
        # Workers turn pages into Arrow tables that reuse the page buffer, so a queued page is its columns.
        convert=_to_table,
        expected_total=source_total,
        label=f"activities {day}",
        logger=logger,
    )
    with DayWriter(data_dir, day, run_id=run_id) as writer:
        # Parquet is written here while the workers fetch and decode the next pages.
        for page in scanner:
            writer.quarantine(page.malformed)
            table = page.converted
            if table is not None:
                writer.write(page.slice_start, table)
                page_hours, page_apps = _summarize(table, start)
                hourly += page_hours
                for key, n in page_apps.items():
                    apps[key] = apps.get(key, 0) + n
            if page.last:
                writer.close_slice(page.slice_start)
            # Let go of this page before the next arrives, or two pages are held instead of one.
            del page, table
        stats = client.stats
        manifest = writer.commit(
            {
                "window": {"start_ms": start, "end_ms": end},
                "source_total_at_scan": source_total,
                "scan": {
                    "pages": scanner.stats.pages,
                    "slices": scanner.stats.slices,
                    "duplicates_dropped": scanner.stats.duplicates_dropped,
                    "out_of_window_dropped": scanner.stats.out_of_window_dropped,
                    "requests": stats.requests,
                    "retries": stats.retries,
                },
                "hourly": hourly.tolist(),
                # Rows per app_id ("None" for records without one), for the apps_still_reporting check.
                "apps": dict(sorted(apps.items())),
                "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
    return IngestResult(
        day=day,
        path=writer.target,
        rows=writer.rows,
        quarantined=writer.quarantined,
        source_total=source_total,
        slices=scanner.stats.slices,
        scan=scanner.stats,
        requests=stats.requests,
        retries=stats.retries,
        throttled=stats.throttled,
        throttle_wait_seconds=stats.throttle_wait_seconds,
        bytes_received=stats.bytes_received,
        bytes_written=int(manifest["bytes"]),
        seconds=time.monotonic() - started,
        hourly=hourly.tolist(),
        manifest=manifest,
    )
