"""Checks catch gaps: late arrivals, app outages, silent hours, duplicates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest

from activity_pipeline.demo_tenant import DemoTenant, Outage, TenantSpec
from activity_pipeline.mdca.dedupe import RecentIds
from activity_pipeline_testing.helpers import (
    ASSET,
    DAYS,
    NODE,
    LosesRecords,
    WideOverlap,
    check_only,
    evaluations,
    last_days,
    later,
    run_day,
    running_clock,
    serve,
    tenant_data,
    tenant_resource,
)


def test_late_records_are_pending_not_missing_until_the_day_is_topped_up(tmp_path, served):
    day = last_days(3)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=8_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))  # 02:00 the next day
    url = served(tenant)
    first = run_day(day, tenant_resource(url), tmp_path)
    assert first.success and evaluations(first)["count_matches_source"].passed
    stored = tenant.truth_count(day)
    tenant.advance(dt.timedelta(days=3))  # Power BI and lagging connectors have caught up
    grown = tenant.truth_count(day)
    assert grown > stored
    evaluation = check_only("count_matches_source", day, tenant_resource(url), tmp_path)
    assert evaluation.passed, "as of its watermark the day is exact: the late records are not missing"
    meta = evaluation.metadata
    assert (meta["actual"].value, meta["diff"].value, meta["source_total_now"].value) == (
        meta["expected"].value, 0, grown
    )  # fmt: skip
    assert meta["pending_after_watermark"].value == grown - stored
    with duckdb.connect(str(tmp_path / "activities.duckdb"), read_only=True) as con:
        query = "SELECT pending_after_watermark FROM partition_health WHERE date = ?"
        assert con.execute(query, [day]).fetchone() == (grown - stored,)
    rerun = run_day(day, tenant_resource(url), tmp_path)  # a top-up
    assert rerun.success and evaluations(rerun)["count_matches_source"].passed
    with duckdb.connect(str(tmp_path / "activities.duckdb"), read_only=True) as con:
        row = con.execute("SELECT rows_stored, source_total_at_last_check, drift, last_check_passed, "
                          "pending_after_watermark FROM partition_health WHERE date = ?", [day]).fetchone()  # fmt: skip
    assert row == (grown, grown, 0, True, 0)


@pytest.fixture(scope="module")
def outage_days(tmp_path_factory) -> tuple[Path, dict[str, dg.AssetCheckEvaluation], dict[str, Any]]:
    """Eight days; on the last, Exchange Online reports nothing and 14:00-15:00 UTC is silent."""
    days = last_days(8)
    last = days[-1]
    spec = TenantSpec(days=days, activities_per_day=6_000,
                      outages=(Outage(app_id=20893, day=last), Outage(hour=14, day=last)))  # fmt: skip
    tenant = DemoTenant(spec)
    tenant.set_now(later(5))
    data = tmp_path_factory.mktemp("outage")
    with serve(tenant) as server:
        results = [run_day(day, tenant_resource(server.url), data) for day in days]
    assert all(r.success for r in results)
    return data, evaluations(results[-1]), evaluations(results[-2])


def test_an_app_outage_fires_apps_still_reporting(outage_days):
    _, last, before = outage_days
    evaluation = last["apps_still_reporting"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["missing_app_ids"].value == "20893"
    assert evaluation.metadata["diff"].value == -1
    assert before["apps_still_reporting"].passed


def test_a_silent_busy_hour_fires_no_unexpected_silent_hours(outage_days):
    _, last, before = outage_days
    evaluation = last["no_unexpected_silent_hours"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["silent_hours_utc"].value == "[14]"
    assert before["no_unexpected_silent_hours"].passed
    # The ERROR checks have nothing to say about an outage: what the source has is what is stored.
    for name in ("count_matches_source", "ids_unique", "timestamps_in_partition", "schema_matches"):
        assert last[name].passed, name


def test_a_duplicated_row_fires_ids_unique_and_blocks_the_duckdb_views(tmp_path, monkeypatch):
    day = last_days(2)[0]
    broken = WideOverlap(TenantSpec(days=(day,), activities_per_day=12_000))
    broken.set_now(later(5))
    # A dedupe bug upstream and in the guard before the commit, so that duplicates reach the Parquet: the check
    # is the last safety net.
    monkeypatch.setattr(RecentIds, "add_new", lambda self, ids, timestamps: np.ones(len(ids), bool))
    monkeypatch.setattr("activity_pipeline.storage.staging.unsafe", lambda facts, rows: [])
    with serve(broken) as server:
        result = run_day(day, tenant_resource(server.url), tmp_path)
    checks = evaluations(result)
    assert not checks["ids_unique"].passed
    assert checks["ids_unique"].metadata["actual"].value > 0
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert ASSET in materialized
    assert dg.AssetKey("activities_duckdb") not in materialized
    assert not (tmp_path / "activities.duckdb").exists()


def test_checks_with_too_little_history_say_so_in_their_result_not_a_verdict(tmp_path, served):
    from activity_pipeline.components.checks import judged

    day = last_days(2)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=3_000))
    tenant.set_now(later(5))
    instance = dg.DagsterInstance.ephemeral()
    result = run_day(day, tenant_resource(served(tenant)), tmp_path, instance=instance)
    assert result.success
    found = evaluations(result)
    unjudged = {name for name, e in found.items() if not judged(e)}
    # The two with no history, and stored_files_intact (the version has not been read again since written).
    assert unjudged == {"no_unexpected_silent_hours", "apps_still_reporting", "stored_files_intact"}
    for name in unjudged:
        assert found[name].description.startswith("Not judged yet: "), found[name].description
    assert "only 0 of the 7 days before" in found["apps_still_reporting"].description
    assert found["count_matches_source"].passed and judged(found["count_matches_source"])
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("apps_still_reporting skipped" in m and "only 0 of the 7 days before" in m for m in logs), logs


def test_a_days_checks_run_as_one_step_in_the_runs_process(tmp_path, served):
    day = last_days(2)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=3_000))
    tenant.set_now(later(5))
    result = run_day(day, tenant_resource(served(tenant)), tmp_path)
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert steps == {NODE, "activities_checks", "activities_duckdb"}
    pids = {e.pid for e in result.all_events if e.event_type_value == "STEP_START"}
    assert len(pids) == 1, "scan, checks and views share one process"


def test_a_day_scanned_while_records_keep_arriving_passes_as_of_its_watermark(tmp_path, served):
    day = last_days(2)[0]
    # 02:15 the next day, as the schedule runs, on a clock 3,000 times faster than real: an hour a second.
    clock = running_clock(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2, 15), dt.UTC), 3_000)
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=20_000), now=clock)
    result = run_day(day, tenant_resource(served(tenant)), tmp_path)
    assert result.success
    count = evaluations(result)["count_matches_source"]
    assert count.passed, count.description
    meta = count.metadata
    assert meta["diff"].value == 0 and meta["actual"].value == meta["expected"].value
    assert meta["pending_after_watermark"].value > 0, "records arrived after the watermark, and are said to have"
    assert meta["source_total_now"].value > meta["expected"].value


def test_materializing_a_stored_day_again_tops_it_up(tmp_path, served):
    day = last_days(2)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=20_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2, 15), dt.UTC))
    url = served(tenant)
    first = run_day(day, tenant_resource(url), tmp_path)
    stored = first.asset_materializations_for_node(NODE)[0].metadata["dagster/partition_row_count"].value
    tenant.advance(dt.timedelta(days=3))
    again = run_day(day, tenant_resource(url), tmp_path)
    meta = again.asset_materializations_for_node(NODE)[0].metadata
    late = tenant.truth_count(day) - stored
    assert meta["mode"].value == "top-up" and meta["added"].value == late > 0
    assert meta["requests"].value <= 1 + -(-late // 5000)
    count = evaluations(again)["count_matches_source"]
    assert count.passed and count.metadata["pending_after_watermark"].value == 0
    assert meta["dagster/partition_row_count"].value == tenant.truth_count(day)


def test_a_full_rescan_is_a_tag_away(tmp_path, served):
    day = last_days(2)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=5_000))
    tenant.set_now(later(5))
    url = served(tenant)
    assert run_day(day, tenant_resource(url), tmp_path).success
    again = run_day(day, tenant_resource(url), tmp_path, tags={"activity_pipeline/full_rescan": "true"})
    assert again.asset_materializations_for_node(NODE)[0].metadata["mode"].value == "full"


def test_a_page_the_scan_lost_is_an_error_as_of_the_watermark(tmp_path):
    day = last_days(2)[0]
    tenant = LosesRecords(TenantSpec(days=(day,), activities_per_day=12_000))
    tenant.set_now(later(5))
    with serve(tenant) as server:
        result = run_day(day, tenant_resource(server.url), tmp_path)
    count = evaluations(result)["count_matches_source"]
    assert not count.passed and count.severity == dg.AssetCheckSeverity.ERROR
    assert count.metadata["diff"].value < 0 and "a real gap" in count.description


def test_days_about_to_leave_the_retention_unstored_are_a_warning_on_every_days_checks(tmp_path, server, monkeypatch):
    from activity_pipeline.service_window import RESCUE_MARGIN_DAYS, first_scannable_day

    # A real tenant (a demo tenant's days are made again on demand: never at risk).
    monkeypatch.setenv("MDCA_API_URL", server.url)
    monkeypatch.setenv("MDCA_API_TOKEN", "test-token-5f2c9a0e-do-not-log")
    today = dt.datetime.now(dt.UTC).date()
    cliff = first_scannable_day(today)  # partitions start on 2026-01-01 (conftest): the cliff's days are partitions
    evaluation = check_only("no_days_leaving_retention_unstored", DAYS[0], tenant_resource(server.url), tmp_path)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["actual"].value == RESCUE_MARGIN_DAYS + 1, "the cliff's day and the 14 after it"
    assert f"{cliff} (missing, 0 days left)" in evaluation.description
    assert "make backfill FROM=" in evaluation.description
    for k in range(RESCUE_MARGIN_DAYS + 1):
        with tenant_data(tmp_path).writer(cliff + dt.timedelta(days=k)) as writer:
            writer.commit()
    evaluation = check_only("no_days_leaving_retention_unstored", DAYS[0], tenant_resource(server.url), tmp_path)
    assert evaluation.passed and evaluation.metadata["actual"].value == 0


def test_a_demo_tenants_days_are_never_at_risk(tmp_path, server):
    evaluation = check_only("no_days_leaving_retention_unstored", DAYS[0], tenant_resource(server.url), tmp_path)
    assert evaluation.passed and evaluation.metadata["actual"].value == 0
