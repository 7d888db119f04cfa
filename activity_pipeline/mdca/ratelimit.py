"""One rate limiter per tenant, shared by every thread that talks to it and, with a state file, by every
process on the machine.

The service allows 30 requests a minute per tenant, for all API requests together. A sliding log of the
last N send times keeps any rolling window at or below N. Runs of one tenant overlap (a backfill's next run
counts and starts its scan while the last one runs its checks), each in its own process: with `shared`, the
log lives in a small file that those processes take turns on (`flock`), so together they stay within the
limit instead of each spending it whole and drawing 429s. When the server says 429 anyway (another tool on
the same tenant), `pause` holds every thread and process back, not just the one that was told.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


# A wait for the rate limit at least this long is said in the log as it starts: longer, and a run looks hung.
NOTICE_SECONDS = 5.0


class RateLimiter:
    """At most `per_window` requests in any rolling `window` seconds. 0 turns the limit off.

    `shared`: a file that holds the log for every process that names it (times are then the wall clock's).

    >>> limiter = RateLimiter(30)          # the service's documented limit
    >>> waited = limiter.acquire()         # blocks until a request may go; returns seconds waited
    """

    def __init__(
        self,
        per_window: int,
        window: float = 60.0,
        *,
        shared: Path | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_window < 0:
            raise ValueError("per_window must be 0 (off) or positive")
        if window <= 0:
            raise ValueError("window must be positive")
        self.per_window, self.window = per_window, window
        self.shared = shared
        self._clock = clock or (time.time if shared is not None else time.monotonic)
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.total_wait = 0.0

    @contextlib.contextmanager
    def _state(self) -> Iterator[None]:
        """The log, for this thread alone; with `shared`, read from the file under its lock and written back."""
        with self._lock:
            if self.shared is None:
                yield
                return
            try:
                self.shared.parent.mkdir(parents=True, exist_ok=True)
                f = open(self.shared, "a+")  # noqa: SIM115 - closed by the with below
            except OSError as exc:  # a read-only folder, say: this process keeps its own log, as without
                log.warning(f"rate limit kept per process: cannot use {self.shared} ({exc.strerror})")
                self.shared = None
                yield
                return
            with f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.seek(0)
                try:
                    state = json.loads(f.read() or "{}")
                    self._sent = collections.deque(float(t) for t in state.get("sent", []))
                    self._paused_until = float(state.get("paused_until", 0.0))
                except (ValueError, TypeError, AttributeError):  # a writer killed mid-write: start afresh
                    self._sent, self._paused_until = collections.deque(), 0.0
                yield
                f.seek(0)
                f.truncate()
                f.write(json.dumps({"sent": list(self._sent), "paused_until": self._paused_until}))
                f.flush()  # no fsync: the machine's processes share the page cache, and a crash loses a minute

    def _delay(self, now: float) -> float:
        delay = max(0.0, self._paused_until - now)
        if self.per_window:
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            if len(self._sent) >= self.per_window:
                delay = max(delay, self._sent[0] + self.window - now)
        return delay

    def acquire(self, on_wait: Callable[[float], None] | None = None) -> float:
        """Wait for a slot and take it. Returns the seconds this call waited. `on_wait(seconds)` is told, once,
        before a wait of NOTICE_SECONDS or more, so that a long pause is said as it starts."""
        waited = 0.0
        told = on_wait is None
        while True:
            with self._state():
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    if self.per_window:
                        self._sent.append(now)
                    self.total_wait += waited
                    return waited
            if not told and delay >= NOTICE_SECONDS:
                on_wait(delay)  # type: ignore[misc]
                told = True
            # Sleep outside the lock; another thread or process may take the slot first, so check again after.
            self._sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Hold every thread (and, with `shared`, every process) back for `seconds` (the server said 429)."""
        with self._state():
            self._paused_until = max(self._paused_until, self._clock() + seconds)
