"""`make demo`, and every command it tells the user to run next, run as printed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

import dagster as dg
import psutil
import pytest

from activity_pipeline.launch import LOCATION
from activity_pipeline_testing.helpers import ASSET, JOB, REPO, clean_env, free_port, last_days, partition


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path, str]:
    """`make demo` once, into a Dagster instance and a data directory of the test's own."""
    tmp = tmp_path_factory.mktemp("demo")
    home, data = tmp / "home", tmp / "data"
    out = subprocess.run(
        ["make", "-C", str(REPO), "demo", f"DAGSTER_HOME={home}", f"ACTIVITY_DATA_DIR={data}"],
        env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return home, data, out.stdout


DEMO_TENANTS = ("contoso", "fabrikam")


def _report_line(report: str, tenant: str, day: object) -> str:
    return next(x for x in report.splitlines() if x.split()[:2] == [tenant, str(day)])


def test_make_demo_runs_two_demo_tenants_side_by_side_and_reports_each_days_checks(demo):
    _, data, report = demo
    stored = {}
    for tenant in DEMO_TENANTS:
        for day in last_days(3):
            line = _report_line(report, tenant, day)
            assert " pass" in line and "warn" not in line and "error" not in line, line
            stored[tenant, day] = line.split()[2]
    assert len(set(stored.values())) == len(stored), "the two tenants hold different data"
    assert "Microsoft Exchange Online" in report
    assert (data / "activities.duckdb").exists()


def test_make_demo_says_each_warning_once_and_a_line_per_run(demo):
    _, _, report = demo
    assert report.count("reading the built-in demo tenant") == 1, "said once, under the summary's warnings"
    assert "(6 of 6 runs) reading the built-in demo tenant on 127.0.0.1 (no api_url configured)" in report
    runs = [line for line in report.splitlines() if ": SUCCESS, " in line and " activities stored, " in line]
    assert len(runs) == 6 and all("; checks: " in line for line in runs), runs
    assert "leave the service's retention" not in report, "a demo tenant's days are never at risk"


def test_make_demo_shows_unjudged_checks_as_skipped_not_passed(demo):
    _, _, report = demo
    first = _report_line(report, "contoso", last_days(3)[0])
    assert " skipped" in first, first
    legend = report[report.index("\nskipped: ") :].split("\n\n")[0]
    assert "apps_still_reporting (" in legend and "no_unexpected_silent_hours (" in legend, legend


def test_make_demos_output_fits_a_120_column_terminal(demo):
    _, _, report = demo
    # The DuckDB table of the example query aside: DuckDB sizes it to the terminal it is printed on.
    wide = [line for line in report.splitlines() if len(line) > 120 and not line.startswith(("│", "┌", "└", "├"))]
    assert wide == []


def test_the_duckdb_command_make_demo_prints_works_as_printed(demo):
    _, _, report = demo
    lines = report.splitlines()
    command = next(x.strip() for x in lines if x.strip().startswith(".venv/bin/duckdb"))
    query = "select count(DISTINCT tenant) = 2 and count(*) > 80000 as both_tenants_stored from activities"
    out = subprocess.run([*shlex.split(command), "-c", query], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "true" in out.stdout, out.stdout


def test_make_run_lands_a_day_in_the_instance_the_ui_reads(demo):
    home, data, report = demo
    command = next(x.strip() for x in report.splitlines() if x.strip().startswith("make run DAY="))
    day = command.split("DAY=")[1].split()[0]
    tenant = command.split("TENANT=")[1].split()[0]
    out = subprocess.run(
        [*shlex.split(command.split("#")[0]), "-C", str(REPO), f"DAGSTER_HOME={home}", f"ACTIVITY_DATA_DIR={data}"],
        env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition/day": day}))
    assert len(runs) == 3, "make demo's runs of that day (one per tenant) and make run's, in one instance"
    assert runs[0].status == dg.DagsterRunStatus.SUCCESS and runs[0].job_name == JOB
    assert runs[0].tags["dagster/partition"] == partition(day, tenant)
    # Runs of the code location the UI loads, make demo's and make run's alike: on its Overview timeline.
    assert {run.remote_job_origin.location_name for run in runs if run.remote_job_origin} == {LOCATION}
    assert all(run.remote_job_origin for run in runs)
    event = instance.get_latest_materialization_event(ASSET)
    assert event is not None and event.run_id == runs[0].run_id
    assert event.asset_materialization is not None and event.asset_materialization.partition == partition(day, tenant)


def test_make_compact_compacts_one_day_of_one_tenant_and_the_ui_shows_it(demo):
    home, data, _ = demo
    day, tenant = last_days(3)[0], DEMO_TENANTS[0]
    before = sorted(p.name for p in (data / "activities" / f"tenant={tenant}" / f"date={day}").glob("*.parquet"))
    out = subprocess.run(
        ["make", "-C", str(REPO), "compact", f"DAY={day}", f"TENANT={tenant}", f"DAGSTER_HOME={home}",
         f"ACTIVITY_DATA_DIR={data}"],
        env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after = sorted(p.name for p in (data / "activities" / f"tenant={tenant}" / f"date={day}").glob("*.parquet"))
    assert len(after) == 1 and after[0].startswith("compact-") and after != before
    assert "rewritten and verified" in out.stdout + out.stderr
    instance = dg.DagsterInstance.from_config(str(home))
    (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="compact_day"))
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.remote_job_origin is not None
    assert run.tags["dagster/partition"] == partition(day, tenant)
    records = instance.fetch_observations(ASSET, limit=5).records
    assert any(r.asset_observation and r.asset_observation.partition == partition(day, tenant) for r in records)


def test_make_backfill_runs_each_day_into_the_same_instance(demo):
    home, data, _ = demo
    first, second = last_days(3)[:2]
    out = subprocess.run(
        ["make", "-C", str(REPO), "backfill", f"FROM={first}", f"TO={second}", f"DAGSTER_HOME={home}",
         f"ACTIVITY_DATA_DIR={data}"],
        env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(home))
    for day in (first, second):
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=JOB, tags={"dagster/partition/day": day.isoformat()}))
        # make demo's run and make backfill's, for each tenant.
        assert len(runs) == 4 and {r.tags["dagster/partition/tenant"] for r in runs[:2]} == set(DEMO_TENANTS)
        assert {r.status for r in runs[:2]} == {dg.DagsterRunStatus.SUCCESS}, day


def test_make_backfill_names_what_is_wrong_with_its_dates():
    out = subprocess.run(["make", "-C", str(REPO), "backfill", "FROM=2026-11-05", "TO=yesterday"], env=clean_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "expected two dates like 2026-11-01 2026-11-24" in out.stderr


def _default_signals() -> None:
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def test_make_ui_serves_the_instance_and_stops_whole_on_sigterm(demo, tmp_path):
    import time

    import requests

    home, data, _ = demo
    port = free_port()
    ui = subprocess.Popen(["make", "-C", str(REPO), "ui", f"PORT={port}", f"DAGSTER_HOME={home}",
                           f"ACTIVITY_DATA_DIR={data}"], env=clean_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True,
                          # As from a terminal: the signals at their defaults. A background job (nohup, `&`) ignores
                          # SIGHUP, SIGINT and SIGQUIT, and an ignored signal is inherited across exec.
                          preexec_fn=_default_signals)  # fmt: skip
    try:
        deadline, answered = time.monotonic() + 180, False
        while time.monotonic() < deadline and not answered:
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
            except requests.ConnectionError:
                time.sleep(0.5)
        assert answered, f"make ui did not answer on port {port} within 180 s"
        query = '{"query": "{ assetNodes { assetKey { path } } }"}'
        nodes = requests.post(f"http://127.0.0.1:{port}/graphql", data=query,
                              headers={"Content-Type": "application/json"}, timeout=30).json()  # fmt: skip
        keys = {tuple(n["assetKey"]["path"]) for n in nodes["data"]["assetNodes"]}
        assert {("activities",), ("activities_duckdb",)} <= keys
        # Loopback only: the UI has no login of its own.
        bound = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port}
        assert bound == {"127.0.0.1"}, bound
        # SIGTERM to make alone, as `kill` or a container runtime sends it: everything under it stops.
        started = psutil.Process(ui.pid).children(recursive=True)
        assert any("grpc" in " ".join(p.cmdline()) for p in started), "dg dev's code server was running"
        ui.send_signal(signal.SIGTERM)
        # make ui gives dg dev 20 s to stop by itself, then kills what is left; the margin is for a loaded machine.
        try:
            ui.wait(timeout=180)
        except subprocess.TimeoutExpired:
            left = [" ".join(p.cmdline())[:200] for p in started if p.is_running()]
            pytest.fail(f"make ui was still running 180 s after SIGTERM; of its processes these were left: {left}")
        _, alive = psutil.wait_procs(started, timeout=30)
        assert alive == [], [" ".join(p.cmdline())[:200] for p in alive]
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(timeout=60)


def test_make_run_names_a_tenant_that_is_not_configured():
    out = subprocess.run(["make", "-C", str(REPO), "run", "DAY=2026-11-20", "TENANT=nobody"], env=clean_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "no tenant named nobody; configured: contoso fabrikam" in out.stderr
