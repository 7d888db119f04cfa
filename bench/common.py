"""Shared benchmark plumbing: a demo tenant in its own process, so it never competes for our GIL or RSS."""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import resource
import subprocess
import sys
from collections.abc import Iterator

from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms

TOKEN = "bench-token"


@contextlib.contextmanager
def demo_tenant_process(
    activities: int,
    *,
    latency_ms: float = 0,
    rpm: int = 0,
    days: int = 1,
    processes: int = 2,
    now: str = "2100-01-01T00:00:00Z",
    clock_speed: float = 0.0,
    seed: int = 7,
    token: str = TOKEN,
    window_seconds: float = 60.0,
) -> Iterator[str]:
    """Serve the last `days` complete days with `activities` each; yields the URL.

    By default every record is visible (the clock is pinned far ahead); `now` and `clock_speed` start the
    tenant's clock elsewhere and let it run.

    Without a rate limit the tenant serves from two processes, so that rendering pages (Python, one core
    per process) is not what a benchmark measures.
    """
    processes = processes if rpm == 0 else 1
    cmd = [
        sys.executable, "-m", "activity_pipeline.demo_tenant", "--port", "0", "--days", str(days),
        "--activities-per-day", str(activities), "--token", token, "--requests-per-minute", str(rpm),
        "--seed", str(seed), "--window-seconds", str(window_seconds),
        "--latency-ms", str(latency_ms), "--now", now, "--clock-speed", str(clock_speed),
        "--processes", str(processes),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if " at " not in line:
            raise RuntimeError(f"demo tenant did not start: {line!r}")
        yield line.rsplit(" at ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def yesterday() -> tuple[dt.date, int, int]:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = day_start_ms(day)
    return day, start, start + DAY_MS


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"
