"""Scan mode, driven: every record of a time window exactly once, page by page, in bounded memory.

The seed document's loop, made serious. Its parts live beside this module:
- `paging.ServerCursor` follows the server's `nextQueryFilters` and stops a cursor that does not move;
- `slices.WorkQueue` cuts the window into slices and shares out what is left as workers finish;
- `dedupe.RecentIds` remembers which ids a slice's recent pages held (paging by timestamp), and
  `dedupe.DigestSet` every id of the window (paging by `created`, as top-ups do).

This module runs them: worker threads fetch their slices' pages, drop records outside the window and
duplicate `_id`s (counted, never silently), set aside records without a usable `_id` or `timestamp`, and
hand each page through a bounded queue to the caller, who iterates. Nothing holds the whole window.
Records are decoded only as far as the caller's msgspec Struct asks; each is also kept as the raw bytes
it arrived as.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from activity_pipeline.mdca.client import MdcaClient, window_filters
from activity_pipeline.mdca.dedupe import DigestSet, RecentIds
from activity_pipeline.mdca.errors import FilterIgnoredError, ScanStalledError
from activity_pipeline.mdca.filters import bounds, utc, within
from activity_pipeline.mdca.paging import CURSOR_FIX, ServerCursor
from activity_pipeline.mdca.slices import Slice, WorkQueue
from activity_pipeline.pagebody import PageBody

log = logging.getLogger(__name__)


class RecordKeys(msgspec.Struct, gc=False):  # untracked, like ActivityRecord (storage/records.py)
    """The least a scan decodes: what it needs to drop duplicates and records outside the window."""

    id: str | None = msgspec.field(default=None, name="_id")
    timestamp: int | None = None
    created: int | None = None


@dataclasses.dataclass
class Page:
    """One server page after checks: kept records (raw and decoded, same order) and malformed ones."""

    slice_index: int
    # Where the slice starts (epoch ms): slices cover contiguous, disjoint parts of the window.
    slice_start: int
    number: int
    raws: list[msgspec.Raw]
    rows: list[Any]
    # Records without a usable `_id` or `timestamp`: the caller quarantines them.
    malformed: list[msgspec.Raw]
    # What `convert` made of the page in the worker thread. Raws and rows are then dropped (convert may have
    # rearranged the body's bytes, which leaves them pointing at moved bytes), so that only what it returned
    # is queued.
    converted: Any = None
    count: int = 0
    # The slice's last page: nothing more will come for `slice_start` (the caller can close its file).
    last: bool = False


@dataclasses.dataclass
class ScanStats:
    """Figures of one scan, for logs and metadata."""

    records: int = 0
    pages: int = 0
    duplicates_dropped: int = 0
    out_of_window_dropped: int = 0
    malformed: int = 0
    slices: int = 0
    expected_total: int | None = None
    seconds: float = 0.0
    # The most ids held at once to find duplicates (every slice's recent pages, or the window's ids).
    ids_held_peak: int = 0

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


_DONE = object()
# Pages held at once (fetching, decoding, queued, being written). Four keep both cores busy and four requests in
# flight against a slow server; each more costs ~40 MB at the peak (a 10,000,000-record day's 8 slices at once
# took the materializing process to 572 MB).
PAGES_IN_FLIGHT = 4
# How long a scan that ends (done, failed or interrupted) waits for its workers, all together.
JOIN_SECONDS = 5.0


class Scanner:
    """Scan one window [start_ms, end_ms) of activities; iterate to get pages.

    Args:
        client: the tenant's client (rate limit, retries and credentials are its business).
        start_ms, end_ms: the window, epoch milliseconds, end exclusive.
        slices: worker threads, each scanning a contiguous part of the window (see `choose_slices`).
        filters: other API filters to apply as well; the window owns `date`.
        record_type: the msgspec Struct each record is decoded into; needs `id` (from `_id`) and `timestamp`.
        decoder: instead of `record_type`, a function from raw bytes to such an object (raises for a record
            that is not one: it is then handed back as malformed).
        convert: `convert(page, body)` runs in the worker thread for each page, in order within a slice; what it
            returns is queued as `page.converted`, and the page's raws and rows are dropped. It may rearrange a
            writable `body` in place (see `PageBody`); the scanner reads the page's raws no more after it.
        expected_total: the window's count at the source, for progress lines with an ETA.
        label: names the scan in log lines and errors, e.g. "activities 2026-11-24".
        logger: where progress goes (a Dagster run's `context.log` works); defaults to this module's.
        sort_field: `date` or `created`: the order in which the server pages. Slices cut the window by
            timestamp, so with `created` there is one slice.
        known: ids stored already, which the scan drops (a top-up passes the day's ids it may meet again). A
            page of nothing but known ids is no stall: the server's cursor still moves past them.
        pages_in_flight: at most this many pages are held at once, from the request that fetches one until
            the caller is done with it (a page is ~20 MB of JSON and its columns). Slices beyond it wait their
            turn, so memory does not grow with the slices a large day gets.

    >>> scanner = Scanner(client, start_ms, end_ms, slices=4)     # doctest: +SKIP
    >>> for page in scanner:
    ...     write(page.raws, page.rows)
    >>> scanner.stats.records, scanner.stats.duplicates_dropped
    """

    def __init__(
        self,
        client: MdcaClient,
        start_ms: int,
        end_ms: int,
        *,
        slices: int = 1,
        filters: dict[str, Any] | None = None,
        record_type: type[msgspec.Struct] = RecordKeys,
        decoder: Callable[[msgspec.Raw], Any] | None = None,
        convert: Callable[[Page, PageBody], Any] | None = None,
        expected_total: int | None = None,
        label: str = "scan",
        logger: logging.Logger | Any = None,
        sort_field: str = "date",
        known: DigestSet | None = None,
        pages_in_flight: int = PAGES_IN_FLIGHT,
    ) -> None:
        if end_ms <= start_ms:
            raise ValueError(f"empty window: end {end_ms} is not after start {start_ms}")
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        if sort_field != "date" and slices != 1:
            raise ValueError(f"slices cut the window by timestamp: paging by {sort_field!r} takes one slice")
        self.client = client
        self.start_ms, self.end_ms = start_ms, end_ms
        self.filters = dict(filters or {})
        window_filters(start_ms, end_ms, self.filters)  # validates: the window owns 'date'
        self.slices = slices
        self.sort_field = sort_field
        self._decode_record = decoder or msgspec.json.Decoder(record_type).decode
        self._convert = convert
        self.stats = ScanStats(expected_total=expected_total)
        self.label = label
        self.log = logger or log
        self._seen = DigestSet()
        self._known = known
        self._held_lock = threading.Lock()
        self._in_flight_limit = max(1, pages_in_flight)
        self._in_flight = threading.BoundedSemaphore(self._in_flight_limit)
        self._slice_held: dict[int, int] = {}
        self._created_bounds = bounds(self.filters.get("created"))

    # Per page, in the worker thread.
    def _fetch_slice(
        self, s: Slice, work: WorkQueue, out: _StopQueue, stop: threading.Event, closed: threading.Event
    ) -> None:
        # Paged by timestamp, a slice's duplicates are among its recent pages; by `created`, anywhere.
        recent = RecentIds() if self.sort_field == "date" else None
        try:
            self._fetch_pages(s, work, out, stop, closed, recent)
        finally:
            with self._held_lock:
                self._slice_held.pop(id(recent), None)

    def _fetch_pages(
        self,
        s: Slice,
        work: WorkQueue,
        out: _StopQueue,
        stop: threading.Event,
        closed: threading.Event,
        recent: RecentIds | None,
    ) -> None:
        cursor = ServerCursor(
            self.client,
            self.client.window(s.start, s.end, self.filters),
            sort_field=self.sort_field,
            label=f"{self.label}, slice {s.index}",
        )
        by_timestamp = self.sort_field == "date"
        while not stop.is_set():
            self._take_turn(stop)
            try:
                page, body = cursor.fetch()
            except BaseException:
                self._in_flight.release()
                raise
            end = work.end_of(s)
            raws: list[msgspec.Raw] = []
            rows: list[Any] = []
            malformed: list[msgspec.Raw] = []
            outside_filter: list[int | None] = []
            passed_end = dropped_out = dups = 0
            beyond = False
            for raw in page.data:
                try:
                    row = self._decode_record(raw)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                    malformed.append(raw)
                    continue
                rid, ts = row.id, row.timestamp
                if not rid or ts is None or isinstance(ts, bool):
                    malformed.append(raw)
                    continue
                if ts >= end and ts < self.end_ms:
                    # Another worker owns this part of the window now (it split this slice).
                    passed_end += 1
                    continue
                if ts < s.start or ts >= end:
                    # Paged by timestamp, once past the end the rest is past it too (by `created`, not so).
                    beyond = beyond or (ts >= end and by_timestamp)
                    dropped_out += 1
                    continue
                if self._created_bounds is not None and not within(row.created, self._created_bounds):
                    outside_filter.append(row.created)
                    continue
                raws.append(raw)
                rows.append(row)
            if outside_filter:
                self._refuse(outside_filter, len(page.data), cursor.label)
            # A page that brings nothing new to this scan means the cursor is going round; one of ids stored
            # already (a top-up's) does not.
            moved = bool(malformed)
            if rows:
                ids = [r.id for r in rows]
                if recent is not None:
                    keep = recent.add_new(ids, [r.timestamp for r in rows])
                    self._held(recent)
                else:
                    keep = self._seen.add_new(ids)
                    self.stats.ids_held_peak = max(self.stats.ids_held_peak, len(self._seen))
                moved = moved or bool(keep.any())
                if self._known is not None:
                    keep &= ~self._known.contains(ids)
                if not keep.all():
                    dups = int((~keep).sum())
                    raws = [r for r, k in zip(raws, keep, strict=True) if k]
                    rows = [r for r, k in zip(rows, keep, strict=True) if k]
            new, received = len(rows), len(page.data)
            work.advance(s, [r.timestamp for r in rows])
            final = bool(passed_end or beyond or not cursor.has_next)
            result = Page(s.index, s.start, cursor.pages, raws, rows, malformed, count=new, last=final)
            if self._convert is not None:
                malformed = [msgspec.Raw(bytes(m)) for m in malformed]  # detached from the body
                result.malformed = malformed
                result.converted = self._convert(result, body)
                result.raws, result.rows = [], []
            # `raw`, the loop's last record, is a view into the page's body: unbound, as the rest, or the body
            # would outlive the page's turn.
            raw = None
            del page, body, raws, rows, raw
            try:
                out.put((result, dups, dropped_out), closed)
            except BaseException:
                self._in_flight.release()
                raise
            # The queue has it now. Held here too, every worker would keep its last page (its ~17 MB body) while
            # it waits for its next turn: 8 slices held 8 pages whatever `pages_in_flight` allowed.
            del result
            if final:
                return
            if not moved:
                raise ScanStalledError(
                    f"{cursor.label}: page {cursor.pages} added no new record ({received} records, {dups} "
                    f"duplicates, {dropped_out} outside the window) but hasNext is true; stopping rather than looping. "
                    f"{CURSOR_FIX}"
                )
            cursor.advance()

    def _refuse(self, created: list[int | None], received: int, label: str) -> None:
        """Stop the scan: the server answered with records its request's `created` filter excludes."""
        lo, hi = self._created_bounds or (None, None)
        asked = " and ".join(
            f"{word} {utc(bound)}" for word, bound in (("from", lo), ("before", hi)) if bound is not None
        )
        known = sorted(c for c in created if c is not None)
        seen = f"created from {utc(known[0])} to {utc(known[-1])}" if known else "without a `created` time"
        if known and len(known) < len(created):
            seen += f" (and {len(created) - len(known)} without one)"
        raise FilterIgnoredError(
            f"{label}: the server answered a request for records created {asked} with {len(created)} of "
            f"{received} records {seen}: it ignored the request's `created` filter. Its answers are not the set "
            "that was asked for, so nothing of this scan is stored and the stored day is unchanged. The service "
            "(or a proxy at its address) must honour `created`; until it does, collect the day with a full scan "
            "(the tag activity_pipeline/full_rescan=true), which needs no `created` filter."
        )

    def _take_turn(self, stop: threading.Event) -> None:
        """Wait for a page's turn (see `pages_in_flight`), or give up when the scan is being torn down."""
        while not self._in_flight.acquire(timeout=0.2):
            if stop.is_set():
                raise _Stopped

    def _held(self, recent: RecentIds) -> None:
        """The ids the live slices hold now, toward the scan's peak."""
        with self._held_lock:
            self._slice_held[id(recent)] = len(recent)
            self.stats.ids_held_peak = max(self.stats.ids_held_peak, sum(self._slice_held.values()))

    def _worker(
        self,
        work: WorkQueue,
        out: _StopQueue,
        stop: threading.Event,
        closed: threading.Event,
        errors: list[BaseException],
    ) -> None:
        try:
            while not stop.is_set():
                s = work.take(stop)
                if s is None:
                    break
                try:
                    self._fetch_slice(s, work, out, stop, closed)
                finally:
                    work.finish(s)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer, which raises it
            errors.append(exc)
            stop.set()
        with contextlib.suppress(_Stopped):
            out.put((_DONE,), closed)

    def __iter__(self) -> Iterator[Page]:
        started = time.monotonic()
        k = self.slices
        work = WorkQueue(self.start_ms, self.end_ms, k)
        # Bounded: a worker holds at most one page ahead of the consumer, which bounds memory.
        out = _StopQueue(maxsize=1)
        stop, closed = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        # No more workers than pages may be in flight: the rest would only wait for a turn, each holding its
        # slice's open file and its share of the allocator (a 10,000,000-record day, whose count is slow
        # enough to ask for 8 slices, peaked at 441 MB with 8 workers and 398 MB with 4). The slices beyond
        # them wait in the queue.
        n_workers = min(k, self._in_flight_limit)
        threads = [
            threading.Thread(
                target=self._worker, args=(work, out, stop, closed, errors), name=f"{self.label}-{i}", daemon=True
            )
            for i in range(n_workers)
        ]
        for t in threads:
            t.start()
        running = n_workers
        last_log = 0.0
        try:
            while running:
                item, *rest = out.get()
                if item is _DONE:
                    if errors:
                        raise errors[0]
                    running -= 1
                    continue
                dups, dropped_out = rest
                page: Page = item
                st = self.stats
                st.pages += 1
                st.records += page.count
                st.duplicates_dropped += dups
                st.out_of_window_dropped += dropped_out
                st.malformed += len(page.malformed)
                st.seconds = time.monotonic() - started
                now = time.monotonic()
                if now - last_log >= 1.0 or st.pages == 1:
                    last_log = now
                    self._log_progress()
                try:
                    yield page
                finally:
                    self._in_flight.release()
                # Not held while waiting for the next one: a page is ~20 MB.
                del item, page
        finally:
            stop.set()
            closed.set()
            out.drain()
            # A worker stops at its next turn; one inside a request may take until that request's deadline. An
            # interrupted or failed scan does not wait that long: the workers are daemon threads, and what they
            # still fetch goes nowhere (the queue is closed).
            until = time.monotonic() + JOIN_SECONDS
            for t in threads:
                t.join(timeout=max(0.0, until - time.monotonic()))
            self.stats.slices = work.count
            self.stats.seconds = time.monotonic() - started
        self._log_progress(final=True)

    def _log_progress(self, final: bool = False) -> None:
        st = self.stats
        rate = st.records_per_second
        line = f"{self.label}: {st.records:,} records, {st.pages} pages, {rate:,.0f} records/s"
        if st.expected_total:
            left = max(0, st.expected_total - st.records)
            eta = f"~{left / rate:,.0f}s left" if rate > 0 and not final else "done" if final else "?"
            line += f", {min(100.0, 100.0 * st.records / st.expected_total):.0f}% of {st.expected_total:,} ({eta})"
        if final:
            line += (
                f"; {st.duplicates_dropped} duplicates and {st.out_of_window_dropped} out-of-window records "
                f"dropped, {st.malformed} malformed, {self.client.stats.requests} requests, "
                f"{self.client.stats.retries} retries, {st.seconds:.1f}s"
            )
        self.log.info(line)


class _Stopped(Exception):
    pass


class _StopQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue whose put gives up when the scan is being torn down."""

    def put(self, item: Any, closed: threading.Event | None = None) -> None:  # type: ignore[override]
        while True:
            try:
                super().put(item, timeout=0.2)
                return
            except queue.Full:
                if closed is not None and closed.is_set():
                    raise _Stopped from None

    def drain(self) -> None:
        while True:
            try:
                self.get_nowait()
            except queue.Empty:
                return
