"""Today within minutes, from the daemon as it runs in production: `dagster-daemon run` under the shipped local
instance, tenants whose demo servers create records in real time, `intraday_minutes: 1`.

Every record created 3 or more minutes ago is stored, exactly once, within minutes of the daemon starting; two
tenants (and a third whose token is refused) share each interval's run, and the refused token stops only its own
collection; the day's nightly run afterwards is a top-up; `freshness` says the two are current."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq

from activity_pipeline.components.intraday import JOB
from activity_pipeline.daemon_check import stale
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline_testing.helpers import (
    REPO,
    TOKEN,
    clean_env,
    ready_instance,
    tenant_data,
)

# Long enough on a loaded machine: the daemon's start, a run a minute, three minutes of records.
DEADLINE_SECONDS = 8 * 60


def _stored_ids(data: Path, tenant: str, day: dt.date) -> list[str]:
    store = tenant_data(data, tenant)
    if store.manifest(day) is None:
        return []
    return pq.read_table(store.paths.day_dir(day), columns=["id"])["id"].to_pylist()


def test_the_daemon_collects_today_within_minutes_for_every_tenant_but_the_refused_one(tmp_path, served):
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    # Records created in real time: the tenant's clock is the real one; a day holds 20,000 (about 14 a minute).
    live = {
        name: DemoTenant(TenantSpec(days=(today - dt.timedelta(days=1), today), activities_per_day=20_000, seed=seed))
        for name, seed in (("north", 21), ("south", 22))
    }
    urls = {name: served(tenant) for name, tenant in live.items()}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        + "".join(
            f"  - {{name: {n}, api_url: '{url}', token_env: GOOD_TOKEN, intraday_minutes: 1, start_date: {today}}}\n"
            for n, url in urls.items()
        )
        + f"  - {{name: refused, api_url: '{urls['north']}', token_env: BAD_TOKEN, intraday_minutes: 1, "
        f"start_date: {today}}}\n"
    )
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    env = clean_env(
        DAGSTER_HOME=str(home),
        ACTIVITY_DATA_DIR=str(data),
        ACTIVITY_TENANTS_FILE=str(tenants),
        GOOD_TOKEN=TOKEN,
        BAD_TOKEN="revoked-" + TOKEN,
    )
    ready_instance(env)
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    try:
        instance = dg.DagsterInstance.from_config(str(home))
        done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        complete_at = None
        while time.monotonic() - started < DEADLINE_SECONDS:
            time.sleep(5)
            finished = [r for r in instance.get_runs(dg.RunsFilter(job_name=JOB)) if r.status in done]
            if len(finished) < 2:
                continue
            check_ms = int(time.time() * 1000)
            ok = True
            for name, tenant in live.items():
                ids = _stored_ids(data, name, today)
                # Each id once; every record created 3 minutes ago or earlier; nothing the tenant does not hold.
                assert len(ids) == len(set(ids)), f"{name}: an id stored twice"
                assert set(ids) <= tenant.truth_ids(today), f"{name}: a record the tenant does not hold"
                ok &= tenant.truth_ids(today, now=check_ms - 3 * 60_000) <= set(ids)
            if ok:
                complete_at = time.monotonic() - started
                break
        assert complete_at is not None, "records created 3 minutes ago were still not stored"
        runs = instance.get_runs(dg.RunsFilter(job_name=JOB))
        # The daemon's health as a supervisor should ask it: running now; and five minutes without a heartbeat
        # is not running (where Dagster's own liveness-check waits 30).
        checked = subprocess.run(["make", "-s", "daemon-check"], env=env, cwd=REPO, capture_output=True, text=True,
                                 timeout=120)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert set(stale(instance, 120, now=time.time() + 300)) == set(instance.get_required_daemon_types())
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=120)
    # One run per interval for the three tenants; each failed at its end naming only the refused one.
    assert all(r.tags.get("activity_pipeline/tenants") == "3" for r in runs)
    for run in [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]:
        failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        message = failure[0].event_log_entry.dagster_event.event_specific_data.error.message
        assert "1 of 3 tenants were not collected: tenant refused:" in message and "north" not in message
    assert tenant_data(data, "refused").manifest(today) is None
    with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
        fresh = dict(con.execute("SELECT tenant, state FROM freshness").fetchall())
        query = "SELECT DISTINCT in_progress FROM partition_health WHERE date = ?"
        in_progress = con.execute(query, [today]).fetchall()
    assert fresh == {"north": "current", "south": "current", "refused": "nothing stored"}
    assert in_progress == [(True,)]
    # The day's nightly run afterwards (here `make run`, as an operator would) is a top-up, and its checks pass.
    before = len(tenant_data(data, "north").manifest(today).top_ups)
    made = subprocess.run(
        ["make", "--no-print-directory", "run", f"DAY={today}", "TENANT=north"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    (run,) = instance.get_runs(dg.RunsFilter(job_name="daily_activities"))
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    made_of = {r.asset_key.to_user_string(): r.event_log_entry.dagster_event.materialization for r in records}
    assert made_of["activities"].metadata["mode"].value == "top-up"
    assert len(tenant_data(data, "north").manifest(today).top_ups) == before + 1
    checks = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    verdicts = {e.check_name: e.passed for e in (r.event_log_entry.dagster_event.event_specific_data for r in checks)}
    assert verdicts["count_matches_source"] is True
