"""The production instance (deploy/dagster.yaml) on a real PostgreSQL server: the daily job, a backfill through
the daemon, and a schedule tick.

The server is Debian's PostgreSQL (`apt-get install postgresql`; `.ci/run` installs it), started by the test
with `initdb` and `pg_ctl` as the `postgres` user, on a free loopback port, in a temporary folder.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, TenantSpec
from activity_pipeline_testing.helpers import (
    ASSET,
    JOB,
    REPO,
    TENANT,
    cli_env,
    free_port,
    last_days,
    later,
    launch,
    partition,
    serve,
)

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent


def _pg_tool(name: str) -> str | None:
    """Debian keeps the server's tools out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as the package's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server for this module, with a database `dagster` that user `dagster` reaches by password."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does it)")
    # Not under pytest's own temporary folder: its parent is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="activity-pg-"))
    root.chmod(0o755)
    password = secrets.token_urlsafe(18)
    (root / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "dagster", "--auth=scram-sha-256", f"--pwfile={root / 'pw'}",
                      "-E", "UTF8", "--no-sync"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=port, user="dagster", password=password, dbname="postgres")
        admin.autocommit = True  # CREATE DATABASE cannot run in a transaction
        admin.cursor().execute("CREATE DATABASE dagster")
        admin.close()
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_DB": "dagster",
        }
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tenant() -> Iterator[tuple[DemoTenant, DemoTenantServer]]:
    t = DemoTenant(TenantSpec(days=last_days(4), activities_per_day=3_000))
    t.set_now(later(5))
    with serve(t) as server:
        yield t, server


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, postgres, tenant) -> dict[str, Any]:
    """DAGSTER_HOME holding the shipped deploy/dagster.yaml, and the environment its processes run with."""
    tmp = tmp_path_factory.mktemp("deploy")
    home, data = tmp / "home", tmp / "data"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {**cli_env(tenant[1].url, data, home), **postgres}
    return {"home": home, "data": data, "env": env}


def _instance(deployment: dict[str, Any]) -> dg.DagsterInstance:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in deployment["env"].items():
            if name.startswith("DAGSTER_PG_"):
                mp.setenv(name, value)
        return dg.DagsterInstance.from_config(str(deployment["home"]))


def _psql(postgres: dict[str, str], query: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(host=postgres["DAGSTER_PG_HOST"], port=int(postgres["DAGSTER_PG_PORT"]),
                          user=postgres["DAGSTER_PG_USER"], password=postgres["DAGSTER_PG_PASSWORD"],
                          dbname=postgres["DAGSTER_PG_DB"]) as conn:  # fmt: skip
        cur = conn.cursor()
        cur.execute(query)
        return cur.fetchall()


def test_the_daily_job_runs_into_the_postgres_instance(deployment, postgres, tenant):
    day = last_days(4)[0]
    out = subprocess.run(launch(day, job=True), env=deployment["env"], cwd=REPO, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    instance = _instance(deployment)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition(day)}))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    event = instance.get_latest_materialization_event(ASSET)
    assert event is not None and event.run_id == run.run_id
    assert event.asset_materialization.metadata["dagster/partition_row_count"].value == tenant[0].truth_count(day)
    assert _psql(postgres, f"SELECT status FROM runs WHERE run_id = '{run.run_id}'") == [("SUCCESS",)]
    password = postgres["DAGSTER_PG_PASSWORD"]
    assert password not in out.stdout + out.stderr
    assert not [p for p in deployment["home"].rglob("*") if p.is_file() and password in p.read_text(errors="ignore")]


def test_a_three_day_backfill_runs_through_the_daemon(deployment, tenant):
    days = last_days(4)[1:]
    env = deployment["env"]
    workspace = ["-w", str(REPO / "workspace.yaml")]
    out = subprocess.run(
        [str(BIN / "dagster"), "job", "backfill", *workspace, "-j", JOB, "--partitions",
         ",".join(partition(d) for d in days), "--noprompt"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *workspace], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    instance = _instance(deployment)
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            runs = [r for r in instance.get_runs() if "dagster/backfill" in r.tags]
            if len(runs) == 3 and all(r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                                      for r in runs):  # fmt: skip
                break
            assert daemon.poll() is None, "the daemon exited"
            time.sleep(2)
    finally:
        os.killpg(daemon.pid, 15)
        daemon.wait(timeout=60)
    assert sorted(r.tags["dagster/partition"] for r in runs) == [partition(d) for d in days]
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert {partition(d) for d in days} <= instance.get_materialized_partitions(ASSET)


def test_a_schedule_tick_requests_yesterday_in_the_postgres_instance(deployment, postgres, monkeypatch):
    """The scheduler's own tick, as the daemon runs it, for the 02:15 UTC tick that has passed today."""
    import logging

    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, ScheduleInstigatorData
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._scheduler.scheduler import launch_scheduled_runs

    for name, value in deployment["env"].items():
        monkeypatch.setenv(name, value)
    instance = _instance(deployment)
    now = dt.datetime.now(dt.UTC)
    tick_time = dt.datetime.combine(now.date(), dt.time(2, 15), dt.UTC)
    if now < tick_time + dt.timedelta(minutes=1):
        tick_time -= dt.timedelta(days=1)
    target = WorkspaceFileTarget([str(REPO / "workspace.yaml")])
    with create_test_daemon_workspace_context(target, instance) as context:
        location = next(iter(context.create_request_context().get_code_location_entries().values()))
        repo = next(iter(location.code_location.get_repositories().values()))  # type: ignore[union-attr]
        schedule = repo.get_schedule(f"{JOB}_schedule")
        # Started a day before the tick, as a deployment that has been running: the tick is due. (The schedule is
        # on by default, so the daemon of an earlier test may have stored its state already: replace it.)
        state = InstigatorState(
            schedule.get_remote_origin(),
            InstigatorType.SCHEDULE,
            InstigatorStatus.RUNNING,
            ScheduleInstigatorData(
                schedule.cron_schedule, start_timestamp=(tick_time - dt.timedelta(days=1)).timestamp()
            ),
        )
        if instance.get_instigator_state(schedule.get_remote_origin_id(), schedule.selector_id) is None:
            instance.add_instigator_state(state)
        else:
            instance.update_instigator_state(state)
        list(launch_scheduled_runs(context, logging.getLogger("scheduler"), tick_time + dt.timedelta(minutes=1), {}))
    ticks = instance.get_ticks(schedule.get_remote_origin_id(), schedule.selector_id)
    assert ticks and ticks[0].status.value == "SUCCESS", ticks[:1]
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": f"{JOB}_schedule"}))
    assert run.tags["dagster/partition"] == partition(tick_time.date() - dt.timedelta(days=1))
    assert run.tags["activity_pipeline/tenant"] == TENANT
    # Queued by the QueuedRunCoordinator of deploy/dagster.yaml, for the daemon to dequeue.
    assert run.status == dg.DagsterRunStatus.QUEUED
    rows = _psql(postgres, "SELECT count(*) FROM job_ticks WHERE status = 'SUCCESS'")
    assert rows[0][0] >= 1
