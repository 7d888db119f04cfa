"""Checks catch gaps: late arrivals, app outages, silent hours, duplicates; DuckDB serves the days."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest

from activity_pipeline.defs.assets import activities, activities_duckdb
from activity_pipeline.defs.automation import daily_activities, daily_schedule, late_arrivals
from activity_pipeline.defs.checks import CHECKS
from activity_pipeline.defs.resources import ActivityStorage, MdcaResource
from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, Outage, ServerSettings, TenantSpec
from activity_pipeline.mdca import scan as scan_module
from activity_pipeline.storage.duckdb_views import DatabaseBusyError, build_database
from activity_pipeline_tests.conftest import TOKEN
from activity_pipeline_tests.test_mdca_scan import _OverlappingPages

REPO = Path(__file__).resolve().parents[1]
TODAY = dt.datetime.now(dt.UTC).date()


def last_days(n: int) -> tuple[dt.date, ...]:
    return tuple(TODAY - dt.timedelta(days=k) for k in range(n, 0, -1))


def resources(url: str, data_dir: Path) -> dict[str, Any]:
    mdca = MdcaResource(api_url=url, api_token=TOKEN, requests_per_minute=0, retry_max_attempts=4)
    return {"mdca": mdca, "storage": ActivityStorage(data_dir=str(data_dir))}


def run_day(day: dt.date, url: str, data_dir: Path, **kw: Any) -> dg.ExecuteInProcessResult:
    """The daily job for one partition: the asset, its checks, the DuckDB views."""
    defs = dg.Definitions(
        assets=[activities, activities_duckdb], asset_checks=CHECKS, jobs=[daily_activities],
        resources=resources(url, data_dir),
    )  # fmt: skip
    return defs.resolve_job_def("daily_activities").execute_in_process(
        partition_key=day.isoformat(), raise_on_error=False, **kw
    )


def check_only(name: str, day: dt.date, url: str, data_dir: Path) -> dg.AssetCheckEvaluation:
    """Run one check for one partition, without re-materializing the day (as from the UI's check menu)."""
    check = next(c for c in CHECKS if c.check_key.name == name)
    job = dg.define_asset_job("one_check", selection=dg.AssetSelection.checks(check))
    defs = dg.Definitions(assets=[activities], asset_checks=CHECKS, jobs=[job], resources=resources(url, data_dir))
    # A checks-only job has no asset to take a partitions definition from (Dagster 1.13 refuses
    # partition_key= there), so the partition goes in as the run tag that partition_key= would set.
    result = defs.resolve_job_def("one_check").execute_in_process(
        tags={"dagster/partition": day.isoformat()}, raise_on_error=False
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def served():
    servers: list[DemoTenantServer] = []

    def start(tenant: DemoTenant) -> str:
        servers.append(DemoTenantServer(tenant, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)).start())
        return servers[-1].url

    yield start
    for s in servers:
        s.stop()


def test_late_records_fail_count_matches_source_with_the_diff_until_the_day_is_rerun(tmp_path, served):
    day = last_days(3)[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=8_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))  # 02:00 the next day
    url = served(tenant)
    first = run_day(day, url, tmp_path)
    assert first.success and evaluations(first)["count_matches_source"].passed
    stored = tenant.truth_count(day)
    tenant.advance(dt.timedelta(days=3))  # Power BI and lagging connectors have caught up
    grown = tenant.truth_count(day)
    assert grown > stored
    evaluation = check_only("count_matches_source", day, url, tmp_path)
    assert not evaluation.passed
    meta = evaluation.metadata
    assert (meta["actual"].value, meta["expected"].value, meta["diff"].value) == (stored, grown, stored - grown)
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    rerun = run_day(day, url, tmp_path)
    assert rerun.success and evaluations(rerun)["count_matches_source"].passed
    with duckdb.connect(str(tmp_path / "activities.duckdb"), read_only=True) as con:
        row = con.execute("SELECT rows_stored, source_total_at_last_check, drift, last_check_passed "
                          "FROM partition_health WHERE date = ?", [day]).fetchone()  # fmt: skip
    assert row == (grown, grown, 0, True)


@pytest.fixture(scope="module")
def outage_days(tmp_path_factory) -> tuple[Path, dict[str, dg.AssetCheckEvaluation], dict[str, Any]]:
    """Eight days; on the last, Exchange Online reports nothing and 14:00-15:00 UTC is silent."""
    days = last_days(8)
    last = days[-1]
    spec = TenantSpec(days=days, activities_per_day=6_000,
                      outages=(Outage(app_id=20893, day=last), Outage(hour=14, day=last)))  # fmt: skip
    tenant = DemoTenant(spec)
    tenant.set_now(dt.datetime.combine(TODAY + dt.timedelta(days=5), dt.time(), dt.UTC))
    data = tmp_path_factory.mktemp("outage")
    with DemoTenantServer(tenant, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)) as server:
        results = [run_day(day, server.url, data) for day in days]
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


class _WideOverlap(_OverlappingPages):
    """Ten minutes of overlap, so that even sparse night slices repeat records."""

    overlap_ms = 600_000


def test_a_duplicated_row_fires_ids_unique_and_blocks_the_duckdb_views(tmp_path, monkeypatch):
    day = last_days(2)[0]
    broken = _WideOverlap(TenantSpec(days=(day,), activities_per_day=12_000))
    broken.set_now(dt.datetime.combine(TODAY + dt.timedelta(days=5), dt.time(), dt.UTC))
    # A dedupe bug upstream, so that duplicates reach the Parquet: the check is the safety net.
    monkeypatch.setattr(scan_module.DigestSet, "add_new", lambda self, ids: np.ones(len(ids), bool))
    with DemoTenantServer(broken, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)) as server:
        result = run_day(day, server.url, tmp_path)
    checks = evaluations(result)
    assert not checks["ids_unique"].passed
    assert checks["ids_unique"].metadata["actual"].value > 0
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert dg.AssetKey("activities") in materialized
    assert dg.AssetKey("activities_duckdb") not in materialized
    assert not (tmp_path / "activities.duckdb").exists()


def test_duckdb_cli_from_another_directory_counts_the_activities(tmp_path, served):
    days = last_days(2)
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=5_000))
    tenant.set_now(dt.datetime.combine(TODAY + dt.timedelta(days=5), dt.time(), dt.UTC))
    url = served(tenant)
    for day in days:
        assert run_day(day, url, tmp_path / "data").success
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = Path(sys.executable).with_name("duckdb")
    out = subprocess.run(
        [str(cli), "-csv", "-noheader", str(tmp_path / "data" / "activities.duckdb"),
         "-c", "select count(*) from activities"],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == sum(tenant.truth_count(d) for d in days)
    with duckdb.connect(str(tmp_path / "data" / "activities.duckdb"), read_only=True) as con:
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert {"activities", "cloud_app_events", "partition_health", "failed_sign_ins", "admin_activities",
                "daily_app_activity", "daily_user_activity", "activity_by_country", "hourly_activity",
                "new_country_sightings"} <= views  # fmt: skip
        for view in sorted(views):
            con.execute(f"select * from {view} limit 1").fetchall()
        # Pruning: a one-day query reads one day's files.
        one_day = con.execute("select count(*) from activities where date = ?", [days[0]]).fetchone()[0]
        assert one_day == tenant.truth_count(days[0])
        ts_type = con.execute("select typeof(Timestamp), typeof(RawEventData) from cloud_app_events limit 1").fetchone()
        assert ts_type == ("TIMESTAMP WITH TIME ZONE", "JSON")


def test_building_refuses_clearly_while_another_process_holds_the_file(tmp_path):
    build_database(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "time.sleep(60)", str(tmp_path / "activities.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseBusyError, match=r"open in another process \(process \d+\)"):
            build_database(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    build_database(tmp_path)  # and works again once it is closed


def test_empty_dataset_still_gets_typed_views(tmp_path):
    path, views = build_database(tmp_path)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("select count(*) from activities").fetchone() == (0,)
        assert con.execute("select count(*) from partition_health").fetchone() == (0,)
    assert "cloud_app_events" in views


def test_schedule_materializes_yesterday_at_0215_utc():
    from activity_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def(daily_schedule.name)
    assert schedule.cron_schedule == "15 2 * * *" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 25, 2, 15, tzinfo=dt.UTC))
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-24"
    assert request.job_name == "daily_activities"


def test_sensor_requests_a_rerun_for_days_whose_source_total_grew(tmp_path, served):
    days = last_days(3)
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=4_000))
    tenant.set_now(dt.datetime.combine(TODAY, dt.time(1), dt.UTC))
    url = served(tenant)
    for day in days:
        assert run_day(day, url, tmp_path).success
    with dg.build_sensor_context(resources=resources(url, tmp_path)) as context:
        assert isinstance(late_arrivals(context), dg.SkipReason)
    tenant.advance(dt.timedelta(days=3))
    with dg.build_sensor_context(resources=resources(url, tmp_path)) as context:
        result = late_arrivals(context)
    grown = {r.partition_key for r in result.run_requests}
    assert grown and grown <= {d.isoformat() for d in days}
    assert days[-1].isoformat() in grown, "yesterday always has late records in the demo tenant"


def test_make_demo_runs_the_daily_job_and_reports(tmp_path):
    """What `make demo` runs, with ACTIVITY_DATA_DIR exported as the Makefile does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_"))}
    (tmp_path / "home").mkdir()
    env.update(DAGSTER_HOME=str(tmp_path / "home"), ACTIVITY_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-m", "activity_pipeline.demo"], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = out.stdout
    for day in last_days(3):
        line = next(x for x in report.splitlines() if x.startswith(day.isoformat()))
        assert "count_matches_source=pass" in line and "ids_unique=pass" in line, line
    assert "Microsoft Exchange Online" in report
    assert (tmp_path / "data" / "activities.duckdb").exists()
