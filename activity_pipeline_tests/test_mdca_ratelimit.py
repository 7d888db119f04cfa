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


def test_limiters_sharing_a_file_share_the_window_and_a_pause(tmp_path):
    # Two run processes of one tenant (a backfill's overlapping runs) name the same file.
    clock = FakeClock()
    state = tmp_path / "rate.json"
    first = RateLimiter(5, 60, shared=state, clock=clock, sleep=clock.sleep)
    second = RateLimiter(5, 60, shared=state, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        assert first.acquire() == 0.0
    assert second.acquire() == 60.0, "the other's five requests fill the window"
    first.pause(10)
    assert second.acquire() == 10.0, "a 429 told to one holds the other back too"
    alone = RateLimiter(5, 60, shared=tmp_path / "other.json", clock=clock, sleep=clock.sleep)
    assert alone.acquire() == 0.0, "another tenant's file is another budget"


def test_a_torn_state_file_starts_the_window_afresh(tmp_path):
    clock = FakeClock()
    state = tmp_path / "rate.json"
    state.write_text('{"sent": [1.0, 2')
    limiter = RateLimiter(2, 60, shared=state, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0 and limiter.acquire() == 0.0 and limiter.acquire() == 60.0


_TAKE = """
import sys
from pathlib import Path
from activity_pipeline.mdca import RateLimiter
limiter = RateLimiter(int(sys.argv[2]), float(sys.argv[3]), shared=Path(sys.argv[1]))
for _ in range(int(sys.argv[4])):
    limiter.acquire()
    print(limiter._sent[-1], flush=True)  # the send time the slot was taken at
"""


def test_processes_sharing_a_file_stay_within_the_limit_together(tmp_path):
    # Real processes, real clock: 3 processes x 6 requests at 5 a second. Each alone would send its 6 at once.
    import subprocess
    import sys

    from activity_pipeline_testing.helpers import REPO

    args = [str(tmp_path / "rate.json"), "5", "1.0", "6"]
    procs = [
        subprocess.Popen([sys.executable, "-c", _TAKE, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    sent = sorted(float(t) for p in procs for t in p.communicate(timeout=60)[0].split())
    assert len(sent) == 18 and all(p.returncode == 0 for p in procs)
    busiest = max(sum(1 for t in sent if a <= t < a + 1.0) for a in sent)
    assert busiest <= 5, f"{busiest} requests in one second from the three together"


def test_a_state_file_that_cannot_be_written_falls_back_to_the_process(tmp_path):
    clock = FakeClock()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    limiter = RateLimiter(2, 60, shared=blocker / "rate.json", clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0 and limiter.acquire() == 0.0 and limiter.acquire() == 60.0
    assert limiter.shared is None


def test_a_long_wait_for_the_rate_limit_is_said_once_as_it_starts():
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    told: list[float] = []
    assert limiter.acquire(on_wait=told.append) == 0.0 and limiter.acquire(on_wait=told.append) == 0.0
    assert told == [], "no wait, nothing said"
    assert limiter.acquire(on_wait=told.append) == 60.0
    assert told == [60.0], "said once, before the wait"
    assert limiter.acquire(on_wait=told.append) == 0.0  # the window's second slot
    clock.now += 57.0
    assert limiter.acquire(on_wait=told.append) == 3.0  # a wait of a few seconds: not worth a line
    assert told == [60.0]
