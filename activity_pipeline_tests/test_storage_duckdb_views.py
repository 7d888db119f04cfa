"""The DuckDB file: views over every stored day, readable from the DuckDB CLI anywhere, rebuilt safely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import DatabaseBusyError, build_database
from activity_pipeline_testing.helpers import last_days, later, run_day, serve, tenant_data, tenant_resource


@pytest.fixture(scope="module")
def two_days(tmp_path_factory) -> tuple[Path, DemoTenant, tuple]:
    """Two days of the daily job (asset, checks, views) in one data directory."""
    days = last_days(2)
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=5_000))
    tenant.set_now(later(5))
    data = tmp_path_factory.mktemp("views") / "data"
    with serve(tenant) as server:
        for day in days:
            assert run_day(day, tenant_resource(server.url), data).success
    return data, tenant, days


def test_duckdb_cli_from_another_directory_counts_the_activities(tmp_path, two_days):
    data, tenant, days = two_days
    cli = Path(sys.executable).with_name("duckdb")
    out = subprocess.run(
        [str(cli), "-csv", "-noheader", str(data / "activities.duckdb"), "-c", "select count(*) from activities"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == sum(tenant.truth_count(d) for d in days)


def test_every_view_answers(two_days):
    data, _, _ = two_days
    with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
        views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert {"activities", "cloud_app_events", "partition_health", "failed_sign_ins", "admin_activities",
                "daily_app_activity", "daily_user_activity", "activity_by_country", "hourly_activity",
                "new_country_sightings"} <= views  # fmt: skip
        for view in sorted(views):
            con.execute(f"select * from {view} limit 1").fetchall()


def test_a_one_day_query_reads_that_day(two_days):
    data, tenant, days = two_days
    with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
        one_day = con.execute("select count(*) from activities where date = ?", [days[0]]).fetchone()[0]
    assert one_day == tenant.truth_count(days[0])


def test_cloud_app_events_keeps_microsofts_column_types(two_days):
    data, _, _ = two_days
    with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
        types = con.execute("select typeof(Timestamp), typeof(RawEventData) from cloud_app_events limit 1").fetchone()
    assert types == ("TIMESTAMP WITH TIME ZONE", "JSON")


def test_building_refuses_clearly_while_another_process_holds_the_file(tmp_path):
    build_database(open_dataset(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "time.sleep(60)", str(tmp_path / "activities.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseBusyError, match=r"open for writing in another process \(process \d+\)"):
            build_database(open_dataset(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    build_database(open_dataset(tmp_path))  # and works again once it is closed


def test_empty_dataset_still_gets_typed_views(tmp_path):
    db = build_database(open_dataset(tmp_path))
    with duckdb.connect(str(db.path), read_only=True) as con:
        assert con.execute("select count(*) from activities").fetchone() == (0,)
        assert con.execute("select count(*) from partition_health").fetchone() == (0,)
        assert con.execute("select typeof(tenant) from activities").fetchall() == []
    assert "cloud_app_events" in db.views and db.rows == 0


def test_retention_risk_lists_the_days_about_to_be_lost(tmp_path):
    import datetime as dt

    from activity_pipeline.service_window import first_scannable_day

    cliff = first_scannable_day(dt.datetime.now(dt.UTC).date())
    with tenant_data(tmp_path).writer(cliff + dt.timedelta(days=1)) as writer:
        writer.commit()
    # Another tenant, configured to start after the cliff's window: none of its days are at risk.
    starts = {"default": cliff - dt.timedelta(days=10), "late": cliff + dt.timedelta(days=20)}
    db = build_database(open_dataset(tmp_path), start_dates=starts)
    assert "retention_risk" in db.views
    with duckdb.connect(str(db.path), read_only=True) as con:
        rows = con.execute("select tenant, date, days_left, state from retention_risk").fetchall()
    assert rows[0] == ("default", cliff, 0, "missing"), "days already lost are not listed; the last day is"
    assert [r[1] for r in rows] == [cliff] + [cliff + dt.timedelta(days=k) for k in range(2, 15)]
    assert {r[0] for r in rows} == {"default"} and len(db.at_risk) == len(rows)
