"""What a 1,000,000-activity day costs the demo tenant: memory held, and records served a second.

Run: .venv/bin/python -m bench.demo_tenant_cost [--activities N]
Serving is measured in-process (render + JSON assembly of whole 5000-record pages), without a client, so
the figure is the server's ceiling: a client decoding JSON slower than this is the bottleneck, not the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import psutil

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--activities", type=int, default=1_000_000)
    p.add_argument("--pages", type=int, default=40)
    args = p.parse_args()
    proc = psutil.Process()
    before = proc.memory_info().rss
    day = dt.date(2026, 11, 24)
    t0 = time.perf_counter()
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=args.activities))
    tenant.set_now(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    built = time.perf_counter() - t0
    held = proc.memory_info().rss - before
    start = day_start_ms(day)
    filters: dict = {"date": {"gte": start, "lt": start + DAY_MS}}
    served, nbytes = 0, 0
    t0 = time.perf_counter()
    for _ in range(args.pages):
        page = tenant.scan(filters, limit=5000, sort_field="date", direction="asc")
        body = ",".join(page.records).encode()
        served += len(page.records)
        nbytes += len(body)
        if not page.has_next:
            break
        filters = page.next_filters or {}
    elapsed = time.perf_counter() - t0
    print(f"activities: {len(tenant.cols):,}; built in {built:.1f}s; memory held {held / 2**20:,.0f} MiB")
    print(
        f"served {served:,} records ({nbytes / 2**20:,.0f} MiB JSON) in {elapsed:.2f}s: "
        f"{served / elapsed:,.0f} records/s, {nbytes / elapsed / 2**20:,.0f} MiB/s; "
        f"peak RSS {proc.memory_info().rss / 2**20:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
