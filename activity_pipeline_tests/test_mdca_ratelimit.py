"""The rate limiter keeps any rolling window under its limit and holds every thread back after a 429."""

from __future__ import annotations

from activity_pipeline.mdca import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_allows_n_per_rolling_window_then_waits():
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(61):
        limiter.acquire()
        sent.append(clock.now)
    # Any 60-second window holds at most 30 sends.
    assert all(sum(1 for t in sent if a <= t < a + 60) <= 30 for a in sent)
    assert sent[30] == 60.0 and sent[60] == 120.0


def test_rate_limiter_pause_holds_everyone_back():
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    limiter.pause(7.5)
    assert limiter.acquire() == 7.5
    assert limiter.acquire() == 0.0
