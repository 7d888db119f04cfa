"""Scan client benchmarks (issue 3).

1. Memory: scan a 1,000,000-activity day, discarding pages; peak RSS of this process (target < 250 MB)
   and records a second. Run in a fresh process so that peak RSS is the scan's own.
2. Slices: with 300 ms latency per page and no rate limit, wall time for 1, 2, 4 and 8 slices, the
   median of several runs (target: 4 slices at least 3 times faster than 1), and requests made against
   ceil(N/5000) (target: at most 1.02 times that, plus one per slice).
3. Rate-limited: the same at 30 requests a minute, next to the floor the limit sets (target: within 10%).

Run: .venv/bin/python -m bench.scan memory|slices|rate-limited [--activities N] [--rounds R]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from activity_pipeline.mdca import PAGE_LIMIT, MdcaClient, MdcaSettings, RateLimiter, Scanner
from bench.common import TOKEN, demo_tenant_process, peak_rss_mib, yesterday


def _client(url: str) -> MdcaClient:
    return MdcaClient(MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=0), limiter=RateLimiter(0))


def memory(activities: int) -> None:
    _, start, end = yesterday()
    with demo_tenant_process(activities) as url:
        client = _client(url)
        base = peak_rss_mib()
        t0 = time.perf_counter()
        scanner = Scanner(client, start, end, slices=1, label="bench")
        records = sum(len(page.rows) for page in scanner)
        elapsed = time.perf_counter() - t0
    print(f"scan memory: {records:,} records in {elapsed:.1f}s = {records / elapsed:,.0f} records/s")
    mb = peak_rss_mib() * 2**20 / 1e6
    print(f"scan memory: peak RSS {peak_rss_mib():,.0f} MiB (before the scan {base:,.0f} MiB) = {mb:,.0f} MB")
    print(f"scan memory: target < 250 MB: {'met' if mb < 250 else 'MISSED'}")
    print(f"scan memory: {client.stats.requests} requests, {client.stats.bytes_received / 2**20:,.0f} MiB received")


def _timed_scan(url: str, start: int, end: int, k: int, rpm: int) -> tuple[float, int, int, int]:
    client = MdcaClient(MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=rpm), limiter=RateLimiter(rpm))
    t0 = time.perf_counter()
    scanner = Scanner(client, start, end, slices=k, label=f"bench-{k}")
    records = sum(len(page.rows) for page in scanner)
    return time.perf_counter() - t0, records, client.stats.requests, scanner.stats.slices


def slices(activities: int, latency_ms: float, rounds: int) -> None:
    """Wall time per slice count with no rate limit: the median of `rounds` runs each."""
    _, start, end = yesterday()
    times: dict[int, float] = {}
    pages = math.ceil(activities / PAGE_LIMIT)
    # One server process per concurrent page at most: the real service serves pages in parallel, and the
    # question is what latency costs the client, not how one demo process queues renders behind its GIL.
    with demo_tenant_process(activities, latency_ms=latency_ms, processes=8) as url:
        for k in (1, 2, 4, 8):
            runs = [_timed_scan(url, start, end, k, 0) for _ in range(rounds)]
            times[k] = statistics.median(r[0] for r in runs)
            requests = statistics.median(r[2] for r in runs)
            print(
                f"scan slices: {k} slices: {runs[0][1]:,} records, median {times[k]:.2f}s of {rounds} runs "
                f"({', '.join(f'{r[0]:.2f}' for r in runs)}), {requests:.0f} requests = "
                f"{requests / pages:.3f}x ceil(N/5000) = {pages}; target <= 1.02x + 1 per slice: "
                f"{'met' if requests <= 1.02 * pages + runs[0][3] else 'MISSED'} ({runs[0][3]} slices after splits)"
            )
    for k in (2, 4, 8):
        print(f"scan slices: speed-up of {k} slices over 1 at {latency_ms:.0f} ms/page: {times[1] / times[k]:.2f}x")
    verdict = "met" if times[1] / times[4] >= 3 else "MISSED"
    print(f"scan slices: target 4 slices at least 3x faster than 1: {verdict}")


def rate_limited(activities: int, latency_ms: float, rpm: int) -> None:
    """Wall time at the service's rate limit, next to the floor the limit sets (one run each: they are slow)."""
    _, start, end = yesterday()
    pages = math.ceil(activities / PAGE_LIMIT)
    # The floor: every page request spaced at the limit's rate (the count request is extra).
    floor = pages * 60 / rpm
    with demo_tenant_process(activities, latency_ms=latency_ms, rpm=rpm) as url:
        for k in (1, 4):
            wall, records, requests, _ = _timed_scan(url, start, end, k, rpm)
            print(
                f"scan at {rpm}/min: {k} slices: {records:,} records in {wall:.1f}s, {requests} requests; floor "
                f"{pages} requests at {rpm}/min = {floor:.0f}s; wall / floor = {wall / floor:.2f}; target within "
                f"10% of the floor: {'met' if wall <= 1.10 * floor else 'MISSED'}"
            )
    print(
        f"scan at {rpm}/min: the limiter lets the first {rpm} requests of a fresh minute go at once, so a scan "
        "of fewer pages than that finishes under the steady-rate floor"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["memory", "slices", "rate-limited"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rpm", type=int, default=30)
    p.add_argument("--activities", type=int)
    p.add_argument("--latency-ms", type=float, default=300)
    args = p.parse_args()
    if args.what == "memory":
        memory(args.activities or 1_000_000)
    elif args.what == "slices":
        slices(args.activities or 200_000, args.latency_ms, args.rounds)
    else:
        rate_limited(args.activities or 200_000, args.latency_ms, args.rpm)


if __name__ == "__main__":
    main()
