"""Late arrivals (issue 16): top-ups by `created` against full re-scans, on a 1,000,000-activity day whose
records keep arriving.

The demo tenant serves yesterday with its clock starting at 02:15 the next day and running SPEED times
faster than real time, so late records (connectors lag hours; Power BI and Dynamics 365 one to three days)
arrive while the benchmark runs, scans included. Night 0 scans the day in full into two data directories.
On each of the next three simulated nights, at 02:15 tenant time, one directory is topped up and the other
re-scanned in full; both then get the count check's verdict as of their watermark. Requests and seconds
are each side's own, on the same server, the same night.

Run: .venv/bin/python -m bench.late [--activities N] [--speed S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from activity_pipeline.days import day_window
from activity_pipeline.ingest import ingest_day, top_up_day
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter
from activity_pipeline.storage.local import LocalStore
from bench.common import TOKEN, demo_tenant_process, yesterday

NIGHTS = 3


def _client(url: str) -> MdcaClient:
    return MdcaClient(MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=0), limiter=RateLimiter(0))


def _verdict(client: MdcaClient, data_dir: Path, day: dt.date) -> str:
    """count_matches_source's verdict as of the stored watermark: exact, and how many are pending after it."""
    facts = LocalStore(data_dir, "bench").facts(day)
    start, end = day_window(day)
    at_watermark = client.count(start, end, {"created": {"lte": facts.watermark_ms}})
    total = client.count(start, end)
    exact = facts.rows_at_watermark == at_watermark
    return f"{'passed' if exact else 'FAILED'} ({facts.rows:,} stored, {max(0, total - facts.rows):,} pending)"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--activities", type=int, default=1_000_000)
    p.add_argument("--speed", type=float, default=720.0, help="tenant seconds per real second")
    a = p.parse_args()
    day, _, _ = yesterday()
    start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2, 15), dt.UTC)
    real_start = time.time()

    def wait_for(tenant_time: dt.datetime) -> None:
        delay = (tenant_time - start).total_seconds() / a.speed - (time.time() - real_start)
        if delay > 0:
            time.sleep(delay)

    top, full = {"requests": 0, "seconds": 0.0}, {"requests": 0, "seconds": 0.0}
    nights_ok = {"top-up": 0, "full": 0}
    with (
        demo_tenant_process(a.activities, days=2, now=start.isoformat(), clock_speed=a.speed) as url,
        tempfile.TemporaryDirectory() as top_dir,
        tempfile.TemporaryDirectory() as full_dir,
    ):
        for data_dir in (top_dir, full_dir):
            client = _client(url)
            result = ingest_day(client, LocalStore(Path(data_dir), "bench"), day)
        verdict = _verdict(client, Path(data_dir), day)
        print(f"late: night 0 (tenant {start:%Y-%m-%d %H:%M}): full scan {result.rows:,} records, "
              f"{result.requests} requests, {result.seconds:.1f}s; count check {verdict}")  # fmt: skip
        for night in range(1, NIGHTS + 1):
            wait_for(start + dt.timedelta(days=night))
            for label, data_dir, totals in (("top-up", top_dir, top), ("full", full_dir, full)):
                client = _client(url)
                t0 = time.perf_counter()
                if label == "top-up":
                    result = top_up_day(client, LocalStore(Path(data_dir), "bench"), day)
                else:
                    result = ingest_day(client, LocalStore(Path(data_dir), "bench"), day)
                seconds = time.perf_counter() - t0
                totals["requests"] += client.stats.requests
                totals["seconds"] += seconds
                verdict = _verdict(_client(url), Path(data_dir), day)
                nights_ok[label] += verdict.startswith("passed")
                print(f"late: night {night} {label}: {result.added:,} added, {client.stats.requests} requests, "
                      f"{seconds:.1f}s; count check {verdict}")  # fmt: skip
    print(f"late: tenant clock {a.speed:.0f}x real time; {NIGHTS} nights of late arrivals, "
          f"{a.activities:,}-activity day")  # fmt: skip
    print(f"late: top-ups: {top['requests']} requests, {top['seconds']:.1f}s; "
          f"full re-scans: {full['requests']} requests, {full['seconds']:.1f}s")  # fmt: skip
    ratio = full["requests"] / max(1, top["requests"])
    seconds = full["seconds"] / max(top["seconds"], 1e-9)
    print(f"late: full re-scans cost {ratio:.0f}x the requests of top-ups ({seconds:.0f}x the seconds)")
    print(f"late: nights whose count check passed as of the watermark: top-ups {nights_ok['top-up']}/{NIGHTS}, "
          f"full re-scans {nights_ok['full']}/{NIGHTS}")  # fmt: skip


if __name__ == "__main__":
    main()
