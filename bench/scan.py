"""Scan client benchmarks (issue 3).

1. Memory: scan a 1,000,000-activity day, discarding pages; peak RSS of this process (target < 250 MB)
   and records a second. Run in a fresh process so that peak RSS is the scan's own.
2. Slices: with 300 ms latency per page and no rate limit, wall time for 1, 2, 4 and 8 slices
   (target: 4 slices at least 3 times faster than 1).

Run: .venv/bin/python -m bench.scan memory|slices [--activities N]
"""

from __future__ import annotations

import argparse
import time

from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter, Scanner, Secret
from bench.common import TOKEN, demo_tenant_process, peak_rss_mib, yesterday


def _client(url: str) -> MdcaClient:
    return MdcaClient(MdcaSettings(api_url=url, token=Secret(TOKEN), requests_per_minute=0), limiter=RateLimiter(0))


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


def slices(activities: int, latency_ms: float) -> None:
    _, start, end = yesterday()
    times: dict[int, float] = {}
    with demo_tenant_process(activities, latency_ms=latency_ms) as url:
        for k in (1, 2, 4, 8):
            client = _client(url)
            t0 = time.perf_counter()
            scanner = Scanner(client, start, end, slices=k, label=f"bench-{k}")
            records = sum(len(page.rows) for page in scanner)
            times[k] = time.perf_counter() - t0
            print(
                f"scan slices: {k} slices: {records:,} records in {times[k]:.2f}s, {client.stats.requests} requests, "
                f"{scanner.stats.slices} slices after splits"
            )
    for k in (2, 4, 8):
        print(f"scan slices: speed-up of {k} slices over 1 at {latency_ms:.0f} ms/page: {times[1] / times[k]:.2f}x")
    verdict = "met" if times[1] / times[4] >= 3 else "MISSED"
    print(f"scan slices: target 4 slices at least 3x faster than 1: {verdict}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["memory", "slices"])
    p.add_argument("--activities", type=int)
    p.add_argument("--latency-ms", type=float, default=300)
    args = p.parse_args()
    if args.what == "memory":
        memory(args.activities or 1_000_000)
    else:
        slices(args.activities or 200_000, args.latency_ms)


if __name__ == "__main__":
    main()
