"""`make demo`: serve the demo tenant on loopback and scan its last complete day through scan mode."""

from __future__ import annotations

import sys
import time

import requests

from activity_pipeline.demo_tenant import DEMO_TOKEN, DemoTenant, DemoTenantServer, ServerSettings, TenantSpec
from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms


def main() -> int:
    tenant = DemoTenant(TenantSpec.last_complete_days(3, activities_per_day=20_000))
    day = tenant.spec.days[-1]
    with DemoTenantServer(tenant, ServerSettings(tokens=(DEMO_TOKEN,))) as server:
        print(f"demo tenant (synthetic data) at {server.url}; scanning {day}")
        start = day_start_ms(day)
        body = {
            "filters": {"date": {"gte": start, "lt": start + DAY_MS}},
            "isScan": True,
            "limit": 5000,
            "sortField": "date",
            "sortDirection": "asc",
        }
        seen: set[str] = set()
        t0 = time.perf_counter()
        with requests.Session() as session:
            session.headers["Authorization"] = f"Token {DEMO_TOKEN}"
            while True:
                page = session.post(server.url + "/api/v1/activities/", json=body, timeout=60).json()
                seen.update(r["_id"] for r in page["data"])
                print(f"  page: {len(page['data'])} records, {len(seen)} so far")
                if not page["hasNext"]:
                    break
                body["filters"] = page["nextQueryFilters"]
        truth = tenant.truth_count(day)
        print(f"{day}: {len(seen)} activities in {time.perf_counter() - t0:.1f}s; the tenant holds {truth}")
        return 0 if len(seen) == truth else 1


if __name__ == "__main__":
    sys.exit(main())
