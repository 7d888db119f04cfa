"""The scan driver: every record of a window exactly once, through throttling, faults, ties and slices."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import msgspec
import pytest

from activity_pipeline.demo_tenant import FAULT_KINDS, DemoTenant, DemoTenantServer, ServerSettings, TenantSpec
from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.mdca import RateLimiter, Scanner
from activity_pipeline_testing.helpers import (
    ALL_ARRIVED,
    DAYS,
    TOKEN,
    LeakyWindow,
    broken,
    client_for,
    scan_day,
    serve,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    # Short windows so that tests run fast; the client has no limiter of its own, so it meets 429s.
    "throttled_with_retry_after": {"requests_per_minute": 30, "window_seconds": 2.0, "retry_after": True},
    "throttled_without_retry_after": {"requests_per_minute": 30, "window_seconds": 2.0, "retry_after": False},
    # Seed 169 draws all six kinds within the first 22 requests; the test checks that they did appear.
    "faults_0.2_of_every_kind": {"fault_rate": 0.2, "fault_seed": 169},
    "latency_100ms": {"latency_ms": 100},
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_day_scans_to_exactly_the_tenants_truth(tenant, scenario):
    server = serve(tenant, **SCENARIOS[scenario])
    try:
        for slices in (1, 4):
            client = client_for(server.url)
            if "throttled" in scenario:
                # Another tool on the same tenant has just used the window's budget.
                for _ in range(30):
                    client.count(day_start_ms(DAYS[0]), day_start_ms(DAYS[0]) + DAY_MS)
            for day in DAYS:
                ids, scanner = scan_day(client, day, slices=slices)
                truth = tenant.truth_ids(day)
                assert len(ids) == len(set(ids)), f"{scenario}, {slices} slices, {day}: duplicates yielded"
                assert set(ids) == truth, f"{scenario}, {slices} slices, {day}: {len(truth - set(ids))} missing"
                assert scanner.stats.records == len(truth)
                assert scanner.stats.duplicates_dropped == 0 and scanner.stats.out_of_window_dropped == 0
        # The scenario did happen: the proof is only as good as the awkwardness it went through.
        if "throttled" in scenario:
            assert server.stats.throttled > 0
        if scenario.startswith("faults"):
            assert set(server.stats.faults) == set(FAULT_KINDS), server.stats.faults
    finally:
        server.stop()


def test_stress_day_tie_larger_than_a_page_is_listed_once(server, tenant):
    day = DAYS[2]
    ties = tenant.cols.ts[(tenant.cols.ts >= day_start_ms(day)) & (tenant.cols.ts < day_start_ms(day) + DAY_MS)]
    assert max(int((ties == t).sum()) for t in set(ties.tolist())) > 5000
    for slices in (1, 4):
        ids, _ = scan_day(client_for(server.url), day, slices=slices)
        assert sorted(ids) == sorted(tenant.truth_ids(day))


def test_client_rate_limiter_keeps_every_thread_under_the_servers_limit(tenant):
    server = serve(tenant, requests_per_minute=3, window_seconds=1.0)
    try:
        # 3 per 1.1 s on our side against 3 per 1.0 s on the server's: the margin absorbs clock skew.
        client = client_for(server.url, limiter=RateLimiter(3, window=1.1))
        ids, _ = scan_day(client, DAYS[2], slices=4)
        assert set(ids) == tenant.truth_ids(DAYS[2])
        assert client.stats.requests >= 5
        assert server.stats.throttled == 0
        assert client.limiter.total_wait > 0
    finally:
        server.stop()


def test_slices_split_the_busiest_part_of_the_day():
    day = DAYS[0]
    big = DemoTenant(TenantSpec(days=(day,), activities_per_day=80_000))
    big.set_now(ALL_ARRIVED)
    server = serve(big)
    try:
        ids, scanner = scan_day(client_for(server.url), day, slices=4)
    finally:
        server.stop()
    assert sorted(ids) == sorted(big.truth_ids(day))
    # Nights are quiet: an idle worker takes half of a busy slice instead of waiting.
    assert scanner.stats.slices > 4


def test_progress_is_logged_per_page_with_rate_and_eta(server, tenant, caplog):
    caplog.set_level(logging.INFO, logger="activity_pipeline.mdca.scan")
    day = DAYS[0]
    client = client_for(server.url)
    total = client.count(day_start_ms(day), day_start_ms(day) + DAY_MS)
    scan_day(client, day, expected_total=total, label=f"activities {day}")
    lines = [r.getMessage() for r in caplog.records]
    assert any("records/s" in line and f"of {total:,}" in line and "left" in line for line in lines), lines
    assert "duplicates" in lines[-1] and "requests" in lines[-1]


def test_count_is_the_list_mode_total_of_the_window(server, tenant):
    client = client_for(server.url)
    for day in DAYS:
        start = day_start_ms(day)
        assert client.count(start, start + DAY_MS) == tenant.truth_count(day)
    start = day_start_ms(DAYS[0])
    assert client.count(start, start + DAY_MS, {"service": {"eq": [20893]}}) < tenant.truth_count(DAYS[0])


def test_records_outside_the_window_are_dropped_and_counted(tenant):
    with broken(LeakyWindow, tenant) as server:
        ids, scanner = scan_day(client_for(server.url), DAYS[1])
    assert sorted(ids) == sorted(tenant.truth_ids(DAYS[1]))
    assert scanner.stats.out_of_window_dropped > 0


def test_scanner_refuses_an_empty_window_or_a_date_filter(server):
    client = client_for(server.url)
    start = day_start_ms(DAYS[0])
    with pytest.raises(ValueError, match="empty window"):
        Scanner(client, start, start)
    with pytest.raises(ValueError, match="'date' filter"):
        Scanner(client, start, start + DAY_MS, filters={"date": {"gte": 0}})
    with pytest.raises(ValueError, match="slices must be at least 1"):
        Scanner(client, start, start + DAY_MS, slices=0)


def test_a_consumer_that_stops_early_leaves_no_thread_behind(server):
    client = client_for(server.url)
    start = day_start_ms(DAYS[0])
    scanner = iter(Scanner(client, start, start + DAY_MS, slices=4, label="early-exit"))
    next(scanner)
    scanner.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("early-exit")]


def test_scan_accepts_a_richer_record_type(server, tenant):
    class Row(msgspec.Struct):
        id: str | None = msgspec.field(default=None, name="_id")
        timestamp: int | None = None
        appId: int = 0

    start = day_start_ms(DAYS[0])
    rows = [r for p in Scanner(client_for(server.url), start, start + DAY_MS, record_type=Row) for r in p.rows]
    assert {r.appId for r in rows} >= {11161, 20893}
    assert len(rows) == tenant.truth_count(DAYS[0])


def test_tenant_clock_is_respected_by_the_scan(tenant):
    early = DemoTenant(tenant.spec)
    early.set_now(dt.datetime(2026, 11, 22, 6, tzinfo=dt.UTC))
    server = DemoTenantServer(early, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)).start()
    try:
        ids, _ = scan_day(client_for(server.url), DAYS[0])
        assert set(ids) == early.truth_ids(DAYS[0])
        assert len(ids) < tenant.truth_count(DAYS[0])
    finally:
        server.stop()
