"""Shared fixtures: one demo tenant for the session, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os

# Partitions are defined at import from ACTIVITY_START_DATE: start early enough for the retention test.
os.environ.setdefault("ACTIVITY_START_DATE", "2026-01-01")

import datetime as dt
from collections.abc import Iterator

import pytest

from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, ServerSettings, TenantSpec
from activity_pipeline.demo_tenant.data import day_start_ms

# Three fixed days, so failures reproduce; the last is the stress day with a 6000-record tie.
DAYS = (dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23))
STRESS_DAY = DAYS[2]
TOKEN = "test-token-5f2c9a0e-do-not-log"
FORBIDDEN_TOKEN = "no-rights-token-7d41"
# Far enough after the last day that every late record has arrived.
ALL_ARRIVED = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def day_filter(day: dt.date) -> dict[str, dict[str, int]]:
    start = day_start_ms(day)
    return {"date": {"gte": start, "lt": start + 86_400_000}}


@pytest.fixture(scope="session")
def tenant() -> DemoTenant:
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=12_000, stress_days=frozenset({STRESS_DAY})))
    t.set_now(ALL_ARRIVED)
    return t


def serve(tenant: DemoTenant, **settings: object) -> DemoTenantServer:
    """A started server with throttling off unless asked for; stop it when done."""
    base: dict[str, object] = {
        "tokens": (TOKEN,),
        "forbidden_tokens": (FORBIDDEN_TOKEN,),
        "requests_per_minute": 0,
    }
    base.update(settings)
    return DemoTenantServer(tenant, ServerSettings(**base)).start()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server(tenant: DemoTenant) -> Iterator[DemoTenantServer]:
    s = serve(tenant)
    yield s
    s.stop()
