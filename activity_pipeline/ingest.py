"""Ingest one UTC day: count it at the source, scan it, stream it into Parquet, swap it into place.

No Dagster here; `defs/assets.py` calls `ingest_day` and turns the result into metadata.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from activity_pipeline.days import HOUR_MS, day_window
from activity_pipeline.mdca import DigestSet, MdcaClient, Page, PageBody, RecordKeys, Scanner, ScanStats, choose_slices
from activity_pipeline.mdca.filters import describe
from activity_pipeline.memory import pages_in_flight, release_freed_memory, return_page_buffers_to_the_os
from activity_pipeline.storage.core import DayWriter, TenantStore
from activity_pipeline.storage.errors import FULL_RESCAN_HINT, DamagedDayError
from activity_pipeline.storage.manifest import Manifest, TopUp, Window
from activity_pipeline.storage.schema import ActivityRecord, decode_activity, to_table


@dataclasses.dataclass
class IngestResult:
    day: dt.date
    # The day's folder, or its URL on object storage.
    path: Path | str
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
    manifest: Manifest
    # "full": the whole day scanned; "top-up": only what was created since the stored version's watermark.
    mode: str = "full"
    # Rows this run added to the stored day (all of them for a full scan).
    added: int = 0

    @property
    def records_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


_record_keys = msgspec.json.Decoder(RecordKeys).decode


def _decode_keys(raw: msgspec.Raw) -> RecordKeys | ActivityRecord:
    """A record's id and times, all a scan needs (`to_table` decodes the columns), read as `decode_activity` reads
    an odd record's (times sent as digits, bytes that are not UTF-8); raises as it does."""
    try:
        return _record_keys(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return decode_activity(raw)


def _to_table(page: Page, body: PageBody) -> tuple[pa.Table | None, dict[str, bytes]]:
    """The page's records as a table (decoded here a chunk at a time: the scan decoded only their ids and times),
    and the bytes as received of those that were not valid UTF-8 (by id)."""
    received: dict[str, bytes] = {}
    return (to_table(page.raws, None, body, received) if page.raws else None), received


def _summarize(table: pa.Table, day_start: int) -> tuple[np.ndarray, dict[str, int]]:
    """Rows per UTC hour, and per app_id ("None" for records without one)."""
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    hours = np.bincount((ts - day_start) // HOUR_MS, minlength=24)
    apps = {str(item["values"]): item["counts"] for item in pc.value_counts(table.column("app_id")).to_pylist()}
    return hours, apps


# The watermark sits this far before the scan's start by the service's clock: a record created before it
# was visible when the scan began, with room for the `Date` header's whole seconds and the service's
# indexing lag.
WATERMARK_MARGIN_MS = 5 * 60_000


def _stream(
    scanner: Scanner, writer: DayWriter, day_start: int, received: dict[str, str]
) -> tuple[np.ndarray, dict[str, int]]:
    """Write every page the scanner yields; the rows per hour and per app of what was written. The bytes as
    received of records that were not valid UTF-8 go into `received` (by id, base64), for the manifest."""
    hourly = np.zeros(24, dtype=np.int64)
    apps: dict[str, int] = {}
    # Parquet is written here while the workers fetch and decode the next pages.
    for page in scanner:
        writer.quarantine(page.malformed)
        table, exact = page.converted
        received.update({rid: base64.b64encode(raw).decode() for rid, raw in exact.items()})
        if table is not None:
            writer.write(page.slice_start, table)
            page_hours, page_apps = _summarize(table, day_start)
            hourly += page_hours
            for key, n in page_apps.items():
                apps[key] = apps.get(key, 0) + n
        if page.last:
            writer.close_slice(page.slice_start)
        # Let go of this page before the next arrives, or two pages are held instead of one.
        del page, table
    return hourly, apps


def _result(
    day: dt.date, writer: DayWriter, scanner: Scanner, client: MdcaClient, source_total: int, started: float,
    manifest: Manifest, *, mode: str, added: int,
) -> IngestResult:  # fmt: skip
    stats = client.stats
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
        bytes_written=manifest.bytes,
        seconds=time.monotonic() - started,
        hourly=list(manifest.hourly),
        manifest=manifest,
        mode=mode,
        added=added,
    )


def _scan_figures(scanner: Scanner, client: MdcaClient) -> dict[str, int]:
    return {
        "pages": scanner.stats.pages,
        "slices": scanner.stats.slices,
        "duplicates_dropped": scanner.stats.duplicates_dropped,
        # The most record ids held at once to drop duplicates: a few pages' worth, whatever the day's size.
        "ids_held_peak": scanner.stats.ids_held_peak,
        "out_of_window_dropped": scanner.stats.out_of_window_dropped,
        "requests": client.stats.requests,
        "retries": client.stats.retries,
    }


class FiltersChangedError(RuntimeError):
    """A top-up of a day collected under other API filters than the tenant's now: it would mix the two."""


def collected_under(previous: Manifest | None, filters: dict[str, Any]) -> bool:
    """Whether the stored day (its manifest `previous`) was collected under `filters`."""
    return previous is not None and previous.filters == filters


def filters_changed_message(day: dt.date, stored: dict[str, Any], now: dict[str, Any]) -> str:
    return (
        f"{day} was collected under the filters {describe(stored) or '(none: every activity)'}; the tenant's filters "
        f"are now {describe(now) or '(none: every activity)'}. A top-up would mix the two, so the day is left as it "
        f"is. To collect it under the new filters, {FULL_RESCAN_HINT} (a narrower filter stores fewer activities: "
        "that replaces the day, as asked)"
    )


class ShorterScanError(RuntimeError):
    """A full scan found fewer records than the day it would replace, or than the source counted before it began.

    The scan's files are kept aside (`path`), the stored day stays as it was.
    """

    def __init__(self, message: str, path: Path | str) -> None:
        super().__init__(message)
        self.path = path


def _refuse_shorter(
    writer: DayWriter,
    day: dt.date,
    previous: Manifest | None,
    source_total: int,
    allow_shorter: bool,
    *,
    filters: dict[str, Any],
) -> None:
    """Keep a short full scan aside instead of swapping it in over a stored day (see ShorterScanError).

    A day stored under other `filters` is collected anew: holding fewer activities than before is then what the
    new filters ask for, and only the source's count before the scan is the measure."""
    if previous is None or allow_shorter:
        return
    found = writer.rows + writer.quarantined
    stored = previous.rows + previous.quarantined if collected_under(previous, filters) else 0
    if found >= stored and found >= source_total:
        return
    short = []
    if found < stored:
        short.append(f"{stored - found:,} fewer than the {stored:,} stored")
    if found < source_total:
        short.append(f"{source_total - found:,} fewer than the {source_total:,} the source counted before the scan")
    aside = writer.keep_aside()
    raise ShorterScanError(
        f"The full scan of {day} found {found:,} activities: {' and '.join(short)}. It was not swapped in; the "
        f"stored day is unchanged and the scan's files are kept aside in {aside}. The service may be losing "
        "records from scans right now: run the day again later. If the source really holds fewer now, run it with "
        f"the tag {ALLOW_SHORTER_TAG}=true to replace the day anyway.",
        aside,
    )


# The run tag that lets a full scan replace a stored day with fewer records (see `_refuse_shorter`).
ALLOW_SHORTER_TAG = "activity_pipeline/allow_shorter"


def ingest_day(
    client: MdcaClient,
    store: TenantStore,
    day: dt.date,
    *,
    slices: int | None = None,
    logger: Any = None,
    run_id: str | None = None,
    allow_shorter: bool = False,
) -> IngestResult:
    """Scan `day` ([00:00, 24:00) UTC) and replace its folder in the tenant's dataset with what the scan found.

    The manifest records the day's watermark: the scan began at `scan_started_ms` by the service's clock,
    so every record created up to `watermark_ms` (that, less WATERMARK_MARGIN_MS) is stored. Records created
    later may or may not be; `top_up_day` adds them.

    Args:
        client: the tenant's client; the day's count and every page go through it.
        store: the tenant's stored days (`storage.core.TenantStore`); the day lands at `store.day_location(day)`.
        day: the UTC day.
        slices: parallel parts of the day; None chooses from the day's size, the rate limit and the latency.
        logger: where progress lines go (a Dagster run's `context.log` works).
        run_id: names the staging folder and goes into the manifest; a fresh one when None.
        allow_shorter: replace a stored day even with fewer records than it holds, or than the source counted
            (otherwise such a scan is kept aside and ShorterScanError raised).

    >>> with MdcaClient(settings) as client:                                    # doctest: +SKIP
    ...     result = ingest_day(client, open_dataset("data").tenant("contoso"), dt.date(2026, 11, 24))
    >>> result.rows, result.source_total, result.path
    (19400, 19400, PosixPath('/.../data/activities/tenant=contoso/date=2026-11-24'))
    """
    return collect_day(
        client, store, day, mode="full", slices=slices, logger=logger, run_id=run_id, allow_shorter=allow_shorter
    )


def top_up_day(
    client: MdcaClient,
    store: TenantStore,
    day: dt.date,
    *,
    logger: Any = None,
    run_id: str | None = None,
) -> IngestResult:
    """Add to the stored `day` the records created since its watermark, as a new version of the day.

    One count, then scan mode over the day's window with `created` at or after the stored watermark,
    paged by `created`: requests in proportion to the late records, not to the day. Records that share the
    watermark's millisecond, or were stored already, are dropped as duplicates of the day's ids from the
    watermark on. A record created before the watermark means the server ignored the `created` filter: the
    top-up stops (FilterIgnoredError) and stores nothing. The new version is the stored files (hard links)
    plus one file of late records, swapped in whole like a full scan; the watermark moves to this scan's
    start, less the margin.

    Args: as `ingest_day`; the day must be stored with a `watermark_ms` (days stored before top-ups existed
    have none: scan those in full).

    >>> top_up_day(client, open_dataset("data").tenant("contoso"), dt.date(2026, 11, 24)).added  # doctest: +SKIP
    269
    """
    return collect_day(client, store, day, mode="top-up", logger=logger, run_id=run_id)


def collect_day(
    client: MdcaClient,
    store: TenantStore,
    day: dt.date,
    *,
    mode: str = "auto",
    slices: int | None = None,
    logger: Any = None,
    run_id: str | None = None,
    allow_shorter: bool = False,
) -> IngestResult:
    """Collect `day` into the tenant's dataset: a full scan, or a top-up of the stored version.

    Everything is decided under the day's lock, from what is committed when the lock is taken: whether the
    day is stored (`mode` "auto": a day stored with a watermark is topped up, any other is scanned in full),
    and the watermark a top-up starts from. Two runs of a day at once cannot both build on one version: the
    second refuses (DayLockedError). Every new version is checked before it is swapped in (`DayWriter.commit`:
    each id once, every row inside the day), whatever the server sent.

    `mode`: "auto", "full" (scan in full even when stored) or "top-up" (only a stored day).
    """
    if mode not in ("auto", "full", "top-up"):
        raise ValueError(f"mode is 'auto', 'full' or 'top-up', not {mode!r}")
    return_page_buffers_to_the_os()
    started = time.monotonic()
    with store.writer(day, run_id=run_id) as writer:
        previous = store.manifest(day)
        stored_with_watermark = previous is not None and previous.watermark_ms is not None
        if mode == "top-up" and not stored_with_watermark:
            raise ValueError(f"{day} is not stored with a watermark; scan it in full")
        if mode == "top-up" or (mode == "auto" and stored_with_watermark):
            assert previous is not None
            result = _top_up(client, store, writer, day, previous, logger=logger, started=started)
        else:
            result = _scan(
                client, writer, day, previous, slices=slices, logger=logger, allow_shorter=allow_shorter,
                started=started,
            )  # fmt: skip
    release_freed_memory()
    return result


def _scan(
    client: MdcaClient, writer: DayWriter, day: dt.date, previous: Manifest | None, *, slices: int | None,
    logger: Any, allow_shorter: bool, started: float,
) -> IngestResult:  # fmt: skip
    """The whole day, scanned into `writer` (the day's lock held) and committed in place of `previous`."""
    start, end = day_window(day)
    t0 = time.monotonic()
    source_total = client.count(start, end)
    latency = time.monotonic() - t0
    # The service's clock at the count, just before the scan: every record created by then is in the scan.
    scan_started = client.now_ms()
    k = slices or choose_slices(source_total, client.settings.requests_per_minute, latency)
    scanner = Scanner(
        client,
        start,
        end,
        slices=k,
        decoder=_decode_keys,
        # Workers turn pages into Arrow tables that reuse the page buffer, so a queued page is its columns.
        convert=_to_table,
        expected_total=source_total,
        label=f"activities {day}",
        logger=logger,
        pages_in_flight=pages_in_flight(source_total),
    )
    received: dict[str, str] = {}
    hourly, apps = _stream(scanner, writer, start, received)
    _refuse_shorter(writer, day, previous, source_total, allow_shorter, filters=client.filters)
    manifest = writer.commit(
        window=Window(start, end),
        source_total_at_scan=source_total,
        scan_started_ms=scan_started,
        watermark_ms=scan_started - WATERMARK_MARGIN_MS,
        scan=_scan_figures(scanner, client),
        top_ups=[],
        hourly=hourly.tolist(),
        # Rows per app_id ("None" for records without one), for the apps_still_reporting check.
        apps=dict(sorted(apps.items())),
        written_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        filters=client.filters,
        received_bytes=received,
    )
    return _result(day, writer, scanner, client, source_total, started, manifest, mode="full", added=writer.rows)


def _top_up(
    client: MdcaClient, store: TenantStore, writer: DayWriter, day: dt.date, previous: Manifest, *, logger: Any,
    started: float,
) -> IngestResult:  # fmt: skip
    """What was created since `previous`'s watermark, added to it through `writer` (the day's lock held)."""
    start, end = day_window(day)
    since = previous.watermark_ms
    assert since is not None
    if not collected_under(previous, client.filters):
        raise FiltersChangedError(filters_changed_message(day, previous.filters, client.filters))
    source_total = client.count(start, end)
    scan_started = client.now_ms()
    writer.prefix = f"late-{since}"
    writer.carry_over(previous)
    known = DigestSet()
    try:
        stored = store.ids_since(day, since)
    except DamagedDayError as exc:
        raise DamagedDayError(f"{exc}. A top-up builds on the stored files; {FULL_RESCAN_HINT}") from None
    if stored:
        known.add_new(stored)
    del stored
    scanner = Scanner(
        client,
        start,
        end,
        filters={"created": {"gte": since}},
        sort_field="created",
        known=known,
        decoder=_decode_keys,
        convert=_to_table,
        expected_total=max(0, source_total - writer.rows) or None,
        label=f"activities {day} (top-up of what was created from {_utc(since)})",
        logger=logger,
    )
    before = writer.rows
    received = dict(previous.received_bytes)
    hourly, apps = _stream(scanner, writer, start, received)
    added = writer.rows - before
    top_up = TopUp(
        run_id=writer.run_id,
        from_ms=since,
        scan_started_ms=scan_started,
        added=added,
        requests=client.stats.requests,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    merged_apps = dict(previous.apps)
    for key, n in apps.items():
        merged_apps[key] = merged_apps.get(key, 0) + n
    manifest = writer.commit(
        window=previous.window or Window(start, end),
        source_total_at_scan=source_total,
        scan_started_ms=scan_started,
        watermark_ms=max(since, scan_started - WATERMARK_MARGIN_MS),
        scan=_scan_figures(scanner, client),
        top_ups=[*previous.top_ups, top_up],
        hourly=((np.array(previous.hourly) if previous.hourly else 0) + hourly).tolist(),
        apps=dict(sorted(merged_apps.items())),
        written_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        filters=previous.filters,
        compactions=previous.compactions,
        received_bytes=received,
    )
    return _result(day, writer, scanner, client, source_total, started, manifest, mode="top-up", added=added)


def _utc(ms: int) -> str:
    """Epoch milliseconds as a UTC time a person reads: 2026-11-25T02:10:00Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
