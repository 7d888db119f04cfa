"""Scan mode: every record of a time window exactly once, page by page, in bounded memory.

The loop is the seed document's, made serious:
- `nextQueryFilters` goes back to the server byte for byte; the client never builds a cursor of its own.
- Pages are yielded as they arrive; nothing holds the whole window.
- Duplicate `_id`s and records outside the window are dropped and counted, never silently kept.
- A cursor that stops moving (the same filters again, or a page that adds nothing) is an error, not a loop.
- The window can be cut into slices scanned by worker threads. A worker that runs out of work takes the
  back half of what the busiest slice has left after the page its worker is already fetching (judged by
  the density of that slice's latest page), so a busy afternoon does not leave three threads idle. The
  split needs no look inside the server's cursor: the slice owner stops once its records pass the split.
- Records are decoded only as far as the caller's msgspec Struct asks; each is also kept as the raw bytes
  it arrived as.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
import numpy as np

from activity_pipeline.mdca.client import MdcaClient, window_filters
from activity_pipeline.mdca.errors import ScanStalledError

log = logging.getLogger(__name__)

PAGE_LIMIT = 5000
# A slice is split only when, after the page its worker is already fetching, it likely holds this many
# pages more: alone it needs two more requests, split each half needs one. Below that a split only adds a
# partial page. (Measured with 4 slices at 300 ms a page: 1.25 finishes soonest and steadiest of 1-2.)
MIN_SPLIT_PAGES = 1.25


class RecordKeys(msgspec.Struct, gc=False):  # untracked, like ActivityRecord (storage/schema.py)
    """The least a scan decodes: what it needs to drop duplicates and records outside the window."""

    id: str | None = msgspec.field(default=None, name="_id")
    timestamp: int | None = None


class _ScanResponse(msgspec.Struct):
    data: list[msgspec.Raw] = []
    hasNext: bool = False
    # Raw, so that it goes back byte for byte; empty when absent (msgspec has no Raw | None).
    nextQueryFilters: msgspec.Raw = msgspec.Raw(b"")


_page_decoder = msgspec.json.Decoder(_ScanResponse).decode


def _decode_page(content: bytes | np.ndarray) -> tuple[_ScanResponse, bytes | np.ndarray]:
    """The page, and the buffer its records are views into."""
    return _page_decoder(content), content


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
    # reused the body's memory, moving the bytes they point at), so that only what it returned is queued.
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

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass(eq=False)
class _Slice:
    index: int
    start: int
    end: int
    progress: int
    kept: int = 0
    pages: int = 0
    done: bool = False
    # Records per millisecond on the latest page: activity comes in hourly waves, so the latest page
    # predicts what follows better than the slice's average since its start.
    density: float = 0.0

    def _density(self) -> float:
        span = self.progress - self.start
        if self.kept == 0 or span <= 0:
            return 0.0
        return self.density or self.kept / span

    def ahead(self) -> int:
        """Where the page in flight likely ends: the slice's worker is already fetching the page after progress."""
        density = self._density()
        return min(self.end, self.progress + int(PAGE_LIMIT / density)) if density > 0 else self.progress

    def remaining_estimate(self) -> float:
        """Records likely left after the page in flight, from the latest page's density; 0 before the first."""
        return self._density() * (self.end - self.ahead())


class _Work:
    """Slices waiting and in progress; idle workers split the largest remainder."""

    def __init__(self, start: int, end: int, k: int) -> None:
        bounds = [start + (end - start) * i // k for i in range(k + 1)]
        self.lock = threading.Condition()
        self.pending = deque(_Slice(i, bounds[i], bounds[i + 1], bounds[i]) for i in range(k))
        self.active: list[_Slice] = []
        self.count = k

    def take(self, stop: threading.Event) -> _Slice | None:
        """The next slice to scan: a waiting one, or the back half of the busiest; None when all is done."""
        with self.lock:
            while True:
                if self.pending:
                    s = self.pending.popleft()
                    self.active.append(s)
                    return s
                running = [s for s in self.active if not s.done]
                if not running or stop.is_set():
                    return None
                # A slice without its first page is a blind guess: wait for the first pages before choosing.
                known = all(s.pages for s in running)
                live = [s for s in running if s.remaining_estimate() >= MIN_SPLIT_PAGES * PAGE_LIMIT]
                if live and known:
                    break
                # Nothing worth splitting yet: wait for the next page anywhere, then look again.
                self.lock.wait(timeout=0.5)
            victim = max(live, key=lambda s: s.remaining_estimate())
            # Halve what is left after the page the victim is already fetching, so that both finish together.
            ahead = victim.ahead()
            mid = ahead + (victim.end - ahead) // 2
            stolen = _Slice(self.count, mid, victim.end, mid)
            self.count += 1
            victim.end = mid
            self.active.append(stolen)
            return stolen

    def end_of(self, s: _Slice) -> int:
        with self.lock:
            return s.end

    def advance(self, s: _Slice, stamps: Sequence[int]) -> None:
        """A page of `s` came back holding these timestamps (of the records kept)."""
        with self.lock:
            s.pages += 1
            if stamps:
                first, last = min(stamps), max(stamps)
                # A page of one millisecond (a tie) says nothing about the density after it.
                if last > first:
                    s.density = (len(stamps) - 1) / (last - first)
                s.progress = max(s.progress, last)
                s.kept += len(stamps)
            self.lock.notify_all()

    def finish(self, s: _Slice) -> None:
        with self.lock:
            s.done = True
            self.lock.notify_all()


_DONE = object()


class DigestSet:
    """Which ids a window has seen, at 16 bytes an id (a Python set of them would take about 90).

    Ids are kept as 128-bit blake2b digests in sorted numpy runs that merge as they grow, like a
    log-structured merge tree: a 1,000,000-record day costs 16 MB, and a page's lookup is a few binary
    searches. Thread-safe.

    >>> seen = DigestSet()
    >>> seen.add_new(["a", "b", "a"]).tolist(), seen.add_new(["b", "c"]).tolist()
    ([True, True, False], [False, True])
    """

    # Runs stop merging at this size: a merge briefly holds both runs, their concatenation and its sort order,
    # and merging a day's last million ids would cost a 50 MB spike. A page's lookup then takes a few more
    # binary searches (one per 262,144 ids).
    MAX_RUN = 1 << 18

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(hi) for hi, _ in self._runs)

    def add_new(self, ids: Sequence[str]) -> np.ndarray:
        """Record `ids`; True for each one not seen before (the first of repeats within `ids` counts as new)."""
        n = len(ids)
        digests = b"".join(hashlib.blake2b(i.encode(), digest_size=16).digest() for i in ids)
        pairs = np.frombuffer(digests, dtype=np.uint64).reshape(n, 2)
        hi, lo = pairs[:, 0], pairs[:, 1]
        order = np.lexsort((lo, hi))
        hs, ls = hi[order], lo[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
        with self._lock:
            for run_hi, run_lo in self._runs:
                new &= ~_member(run_hi, run_lo, hs, ls)
            if new.any():
                self._push(hs[new], ls[new])
        mask = np.empty(n, dtype=bool)
        mask[order] = new
        return mask

    def _push(self, hi: np.ndarray, lo: np.ndarray) -> None:
        self._runs.append((hi, lo))
        while (
            len(self._runs) > 1
            and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0])
            and len(self._runs[-1][0]) + len(self._runs[-2][0]) <= self.MAX_RUN
        ):
            (h2, l2), (h1, l1) = self._runs.pop(), self._runs.pop()
            h, lo_ = np.concatenate([h1, h2]), np.concatenate([l1, l2])
            order = np.lexsort((lo_, h))
            self._runs.append((h[order], lo_[order]))


def _member(run_hi: np.ndarray, run_lo: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Which (hi, lo) pairs are in a run sorted by (hi, lo)."""
    left = np.searchsorted(run_hi, hi, "left")
    right = np.searchsorted(run_hi, hi, "right")
    found = np.zeros(len(hi), dtype=bool)
    single = right - left == 1
    found[single] = run_lo[left[single]] == lo[single]
    # Equal high halves in one run: astronomically rare, checked one by one.
    for k in np.flatnonzero(right - left > 1):
        found[k] = bool((run_lo[left[k] : right[k]] == lo[k]).any())
    return found


class Scanner:
    """Scan one window [start_ms, end_ms) of activities; iterate to get pages.

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
        convert: Callable[[Page, bytes | np.ndarray], Any] | None = None,
        expected_total: int | None = None,
        label: str = "scan",
        logger: logging.Logger | Any = None,
        sort_field: str = "date",
    ) -> None:
        if end_ms <= start_ms:
            raise ValueError(f"empty window: end {end_ms} is not after start {start_ms}")
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        self.client = client
        self.start_ms, self.end_ms = start_ms, end_ms
        self.filters = dict(filters or {})
        window_filters(start_ms, end_ms, self.filters)  # validates: the window owns 'date'
        self.slices = slices
        self.sort_field = sort_field
        # A decoder returns an object with `id` and `timestamp`, or raises for a record that is not one.
        self._decode_record = decoder or msgspec.json.Decoder(record_type).decode
        # convert(page, body) runs in the worker thread, for a slice's pages in order (one worker scans a slice);
        # what it returns is queued as page.converted, and the page's raws and rows are dropped.
        self._convert = convert
        self.stats = ScanStats(expected_total=expected_total)
        self.label = label
        self.log = logger or log
        self._seen = DigestSet()

    # Per page, in the worker thread.
    def _fetch_slice(
        self, s: _Slice, work: _Work, out: _StopQueue, stop: threading.Event, closed: threading.Event
    ) -> None:
        body_tail = msgspec.json.encode(
            {"isScan": True, "limit": PAGE_LIMIT, "sortField": self.sort_field, "sortDirection": "asc"}
        )[1:]
        filters = msgspec.json.encode(window_filters(s.start, s.end, self.filters))
        number = 0
        while not stop.is_set():
            page, body = self.client.post(b'{"filters":' + filters + b"," + body_tail, _decode_page)
            number += 1
            end = work.end_of(s)
            raws: list[msgspec.Raw] = []
            rows: list[Any] = []
            malformed: list[msgspec.Raw] = []
            new = passed_end = dropped_out = dups = 0
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
                    # Pages come sorted by timestamp: once past the end, the rest is past it too.
                    beyond = beyond or ts >= end
                    dropped_out += 1
                    continue
                raws.append(raw)
                rows.append(row)
            if rows:
                first = self._seen.add_new([r.id for r in rows])
                if not first.all():
                    dups = int((~first).sum())
                    raws = [r for r, keep in zip(raws, first, strict=True) if keep]
                    rows = [r for r, keep in zip(rows, first, strict=True) if keep]
                new = len(rows)
            work.advance(s, [r.timestamp for r in rows])
            final = bool(passed_end or beyond or not page.hasNext)
            result = Page(s.index, s.start, number, raws, rows, malformed, count=len(rows), last=final)
            next_filters, received = bytes(page.nextQueryFilters), len(page.data)
            if self._convert is not None:
                malformed = [msgspec.Raw(bytes(m)) for m in malformed]  # detached from the body
                result.malformed = malformed
                # `convert` may reuse the body's memory, which leaves the raws pointing at moved bytes.
                result.converted = self._convert(result, body)
                result.raws, result.rows = [], []
            del page, body, raws, rows
            out.put((result, dups, dropped_out), closed)
            if final:
                return
            if next_filters in (b"", b"null"):
                raise ScanStalledError(
                    f"{self.label}: the server said hasNext but sent no nextQueryFilters (page {number} of "
                    f"slice {s.index}); stopping rather than guessing a cursor"
                )
            if next_filters == filters:
                raise ScanStalledError(
                    f"{self.label}: the server sent back the same nextQueryFilters it was given (page {number} of "
                    f"slice {s.index}); the scan would repeat this page forever"
                )
            if new == 0 and not malformed:
                raise ScanStalledError(
                    f"{self.label}: page {number} of slice {s.index} added no new record ({received} "
                    f"records, {dups} duplicates, {dropped_out} outside the window) but hasNext is true; "
                    "stopping rather than looping"
                )
            filters = next_filters

    def _worker(
        self,
        work: _Work,
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
        work = _Work(self.start_ms, self.end_ms, k)
        # Bounded: a worker holds at most one page ahead of the consumer, which bounds memory.
        out = _StopQueue(maxsize=1)
        stop, closed = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        threads = [
            threading.Thread(
                target=self._worker, args=(work, out, stop, closed, errors), name=f"{self.label}-{i}", daemon=True
            )
            for i in range(k)
        ]
        for t in threads:
            t.start()
        running = k
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
                yield page
                # Not held while waiting for the next one: a page is ~20 MB.
                del item, page
        finally:
            stop.set()
            closed.set()
            out.drain()
            for t in threads:
                t.join(timeout=30)
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


def choose_slices(
    expected_total: int | None,
    requests_per_minute: int,
    seconds_per_request: float,
    *,
    max_slices: int = 8,
) -> int:
    """How many slices pay off: enough to keep the rate limit busy while pages are in flight.

    One slice sends its next request only after its page is back, so it manages 1/latency requests a second.
    The limit allows rpm/60. More slices than latency * rpm/60 just queue at the limiter, and every slice
    ends on a partial page that costs a request. Without a limit, latency is all there is: use them all.

    >>> choose_slices(1_000_000, 30, 0.3)      # the limit (one request per 2 s) dominates
    1
    >>> choose_slices(1_000_000, 0, 0.3)
    4
    >>> choose_slices(4_000, 0, 0.3)           # a single page
    1
    """
    if expected_total is not None:
        pages = math.ceil(expected_total / PAGE_LIMIT)
        if pages <= 1:
            return 1
        max_slices = min(max_slices, pages)
    if requests_per_minute <= 0:
        # Two slices overlap the server's work on one page with ours on another; more pay off with latency.
        return max(1, min(max_slices, 2 + int(seconds_per_request / 0.15)))
    interval = 60.0 / requests_per_minute
    return max(1, min(max_slices, math.ceil(seconds_per_request / interval)))
