"""One day in, no Dagster: a full scan records its watermark; a top-up adds only what was created since."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from activity_pipeline.days import day_window
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.ingest import WATERMARK_MARGIN_MS, ingest_day, top_up_day
from activity_pipeline.storage.errors import DayLockedError
from activity_pipeline_testing.helpers import STRESS_DAY, client_for, serve, tenant_data


def stored_ids(data_dir: Path, day: dt.date) -> list[str]:
    return pq.read_table(tenant_data(data_dir).paths.day_dir(day), columns=["id"]).column("id").to_pylist()


@pytest.fixture
def stress() -> DemoTenant:
    """The stress day: a tie of 6,000 records in one millisecond, of `timestamp` and of `created` alike."""
    return DemoTenant(TenantSpec(days=(STRESS_DAY,), activities_per_day=8_000, stress_days=frozenset({STRESS_DAY})))


def _tie_created(tenant: DemoTenant, day: dt.date) -> int:
    start, end = day_window(day)
    created = tenant.cols.created[(tenant.cols.ts >= start) & (tenant.cols.ts < end)]
    values, counts = np.unique(created, return_counts=True)
    assert counts.max() > 5000
    return int(values[counts.argmax()])


def test_a_full_scan_records_a_watermark_by_the_services_clock(tmp_path, stress):
    now = _tie_created(stress, STRESS_DAY) + 3_600_000
    stress.set_now(now)
    with serve(stress) as server:
        result = ingest_day(client_for(server.url), tenant_data(tmp_path), STRESS_DAY)
    manifest = tenant_data(tmp_path).manifest(STRESS_DAY)
    # The service's Date header has whole seconds.
    assert manifest.scan_started_ms == now // 1000 * 1000
    assert manifest.watermark_ms == manifest.scan_started_ms - WATERMARK_MARGIN_MS
    assert result.mode == "full" and result.rows == stress.truth_count(STRESS_DAY)


@pytest.mark.parametrize("tie_stored", [True, False], ids=["tie-stored-already", "tie-not-yet-stored"])
def test_a_tie_larger_than_a_page_at_the_watermark_is_neither_lost_nor_doubled(tmp_path, stress, tie_stored):
    tie = _tie_created(stress, STRESS_DAY)
    stress.set_now(tie if tie_stored else tie - 1)
    with serve(stress) as server:
        ingest_day(client_for(server.url), tenant_data(tmp_path), STRESS_DAY)
        # The watermark falls on the tie's millisecond.
        path = tenant_data(tmp_path).paths.day_dir(STRESS_DAY) / "_manifest.json"
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({**manifest, "watermark_ms": tie}))
        stress.set_now(tie + 3 * 86_400_000)
        result = top_up_day(client_for(server.url), tenant_data(tmp_path), STRESS_DAY)
    ids = stored_ids(tmp_path, STRESS_DAY)
    assert len(ids) == len(set(ids)), "nothing doubled"
    assert set(ids) == stress.truth_ids(STRESS_DAY), "nothing lost"
    assert result.mode == "top-up" and (result.added >= 6_000) != tie_stored


def test_a_top_up_costs_requests_in_proportion_to_the_late_records(tmp_path):
    day = STRESS_DAY
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=40_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    with serve(tenant) as server:
        full = ingest_day(client_for(server.url), tenant_data(tmp_path), day)
        tenant.advance(dt.timedelta(days=3))
        client = client_for(server.url)
        result = top_up_day(client, tenant_data(tmp_path), day)
    late = tenant.truth_count(day) - full.rows
    assert late > 0 and result.added == late
    assert full.requests >= 9, "the full scan of 40,000 records took a request a page"
    assert client.stats.requests <= 1 + -(-late // 5000), (client.stats.requests, late)
    ids = stored_ids(tmp_path, day)
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(day)
    manifest = tenant_data(tmp_path).manifest(day)
    assert manifest.watermark_ms > full.manifest.watermark_ms
    assert sum(manifest.hourly) == manifest.rows == tenant.truth_count(day)
    assert [t.added for t in manifest.top_ups] == [late]


def test_two_top_ups_of_a_day_at_once_one_refuses_and_nothing_is_doubled(tmp_path):
    day = STRESS_DAY
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=10_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    with serve(tenant, latency_ms=300) as server:
        ingest_day(client_for(server.url), tenant_data(tmp_path), day)
        tenant.advance(dt.timedelta(days=3))
        outcomes: list[str] = []

        def top_up() -> None:
            try:
                top_up_day(client_for(server.url), tenant_data(tmp_path), day)
                outcomes.append("landed")
            except DayLockedError:
                outcomes.append("refused")

        threads = [threading.Thread(target=top_up) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(outcomes) == ["landed", "refused"]
    ids = stored_ids(tmp_path, day)
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(day)
