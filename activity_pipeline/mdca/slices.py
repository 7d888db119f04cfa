"""Cutting a window into slices for parallel workers, and sharing out what is left as they finish.

Each slice is a contiguous, disjoint part of the window, scanned by one worker in timestamp order. A worker
that runs out of work takes the back half of what the busiest slice has left after the page its worker is
already fetching (judged by the density of that slice's latest page), so a busy afternoon does not leave
three threads idle. The split needs no look inside the server's cursor: the slice's owner stops once its
records pass the new end.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from collections.abc import Sequence

from activity_pipeline.mdca.paging import PAGE_LIMIT

# A slice is split only when, after the page its worker is already fetching, it likely holds this many
# pages more: alone it needs two more requests, split each half needs one. Below that a split only adds a
# partial page. (Measured with 4 slices at 300 ms a page: 1.25 finishes soonest and steadiest of 1-2.)
MIN_SPLIT_PAGES = 1.25


@dataclasses.dataclass(eq=False)
class Slice:
    """[start, end) of the window, and how far its worker has got."""

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


class WorkQueue:
    """Slices waiting and in progress; idle workers split the largest remainder. Thread-safe.

    >>> work = WorkQueue(0, 86_400_000, 2)
    >>> first = work.take(threading.Event())
    >>> (first.start, first.end)
    (0, 43200000)
    """

    def __init__(self, start: int, end: int, k: int) -> None:
        bounds = [start + (end - start) * i // k for i in range(k + 1)]
        self.lock = threading.Condition()
        self.pending = deque(Slice(i, bounds[i], bounds[i + 1], bounds[i]) for i in range(k))
        self.active: list[Slice] = []
        self.count = k

    def take(self, stop: threading.Event) -> Slice | None:
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
            stolen = Slice(self.count, mid, victim.end, mid)
            self.count += 1
            victim.end = mid
            self.active.append(stolen)
            return stolen

    def end_of(self, s: Slice) -> int:
        with self.lock:
            return s.end

    def advance(self, s: Slice, stamps: Sequence[int]) -> None:
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

    def finish(self, s: Slice) -> None:
        with self.lock:
            s.done = True
            self.lock.notify_all()


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
