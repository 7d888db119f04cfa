"""One rate limiter per process, shared by every thread that talks to the tenant.

The service allows 30 requests a minute per tenant, for all API requests together. A sliding log of the
last N send times keeps any rolling window at or below N. When the server says 429 anyway (another process,
another tool on the same tenant), `pause` holds every thread back, not just the one that was told.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """At most `per_window` requests in any rolling `window` seconds. 0 turns the limit off.

    >>> limiter = RateLimiter(30)          # the service's documented limit
    >>> waited = limiter.acquire()         # blocks until a request may go; returns seconds waited
    """

    def __init__(
        self,
        per_window: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_window < 0:
            raise ValueError("per_window must be 0 (off) or positive")
        if window <= 0:
            raise ValueError("window must be positive")
        self.per_window, self.window = per_window, window
        self._clock, self._sleep = clock, sleep
        self._sent: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self.total_wait = 0.0

    def _delay(self, now: float) -> float:
        delay = max(0.0, self._paused_until - now)
        if self.per_window:
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            if len(self._sent) >= self.per_window:
                delay = max(delay, self._sent[0] + self.window - now)
        return delay

    def acquire(self) -> float:
        """Wait for a slot and take it. Returns the seconds this call waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    if self.per_window:
                        self._sent.append(now)
                    self.total_wait += waited
                    return waited
            # Sleep outside the lock; another thread may take the slot first, so check again after.
            self._sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """Hold every thread back for `seconds` (the server said 429)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
