"""Fifty tenants in one deployment: one schedule asks for every tenant's day, one tenant's refused token fails only
its own run and its alert names it, each tenant's rate limit holds, and a backfill of one tenant touches only it.

Each tenant is a demo tenant on its own port (a real tenant has its own URL), listed in one tenants file as real
tenants are (`api_url`, `token_env`), with a limit of 4 requests in any 2 s."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from activity_pipeline import config
from activity_pipeline.components.resources import resources_for
from activity_pipeline.definitions import build_defs
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.demo_tenant.server import credential_digest
from activity_pipeline_testing.helpers import JOB, REPO, TODAY, clean_env, run_failure_context, serve, tenant_data
from activity_pipeline_tests.receivers import HttpReceiver

TENANTS = [f"t{i:02d}" for i in range(50)]
REFUSED = "t13"
LIMIT, WINDOW = 4, 2.0
YESTERDAY = TODAY - dt.timedelta(days=1)


def token(name: str) -> str:
    return f"token-{name}-do-not-log"


@pytest.fixture(scope="module")
def fifty(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fifty")
    days = (YESTERDAY - dt.timedelta(days=2), YESTERDAY - dt.timedelta(days=1), YESTERDAY)
    tenants = {
        n: DemoTenant(TenantSpec(days=days, activities_per_day=300, seed=100 + i)) for i, n in enumerate(TENANTS)
    }
    servers = {}
    for name, tenant in tenants.items():
        tenant.set_now(dt.datetime.combine(TODAY + dt.timedelta(days=5), dt.time(), dt.UTC))
        servers[name] = serve(tenant, tokens=(token(name),), requests_per_minute=LIMIT, window_seconds=WINDOW)
    receiver = HttpReceiver()
    path = tmp / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        + "".join(
            f"  - {{name: {n}, api_url: '{s.url}', token_env: {n.upper()}_TOKEN, requests_per_minute: {LIMIT}, "
            f"rate_window_seconds: {WINDOW}, start_date: {days[0]}}}\n"
            for n, s in servers.items()
        )
        + "alerts:\n  - {kind: webhook, url_env: HOOK_URL}\n"
    )
    env = {f"{n.upper()}_TOKEN": token(n) for n in TENANTS} | {f"{REFUSED.upper()}_TOKEN": "revoked-" + token(REFUSED)}
    env |= {"ACTIVITY_TENANTS_FILE": str(path), "ACTIVITY_DATA_DIR": str(tmp / "data"), "HOOK_URL": receiver.url("/h")}
    try:
        yield {"tenants": tenants, "servers": servers, "env": env, "data": tmp / "data", "receiver": receiver,
               "days": days, "tmp": tmp}  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
        receiver.close()


@pytest.fixture(scope="module")
def night(fifty) -> dict[str, Any]:
    """The 02:15 schedule's runs of yesterday, four at a time, each in an instance of its own."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in fifty["env"].items():
            mp.setenv(key, value)
        settings = config.load()
        defs = build_defs(resources_for(settings), settings)
        schedule = defs.resolve_schedule_def(f"{JOB}_schedule")
        at = dt.datetime.combine(TODAY, dt.time(2, 15), dt.UTC)
        context = dg.build_schedule_context(scheduled_execution_time=at, repository_def=defs.get_repository_def())
        requests = list(schedule.evaluate_tick(context).run_requests or [])
        job = defs.resolve_job_def(JOB)
        results: dict[str, tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]] = {}
        queue = list(requests)
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    request = queue.pop()
                instance = dg.DagsterInstance.ephemeral()
                result = job.execute_in_process(
                    partition_key=request.partition_key, tags=request.tags, instance=instance, raise_on_error=False
                )
                results[request.tags["activity_pipeline/tenant"]] = (result, instance)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed_runs = [s for s in defs.sensors if s.name == "activity_alerts_failed_runs"]
    return {"requests": requests, "results": results, "defs": defs, "failed_runs": failed_runs[0]}


def test_one_schedule_asks_for_every_tenants_yesterday(night):
    keys = sorted(str(r.partition_key) for r in night["requests"])
    assert keys == sorted(f"{YESTERDAY}|{n}" for n in TENANTS)


def test_every_other_tenants_day_is_stored_and_exact(fifty, night):
    failed = {n for n, (result, _) in night["results"].items() if not result.success}
    assert failed == {REFUSED}
    for name in TENANTS:
        if name == REFUSED:
            assert tenant_data(fifty["data"], name).manifest(YESTERDAY) is None
            continue
        ids = pq.read_table(tenant_data(fifty["data"], name).paths.day_dir(YESTERDAY), columns=["id"])["id"]
        assert sorted(ids.to_pylist()) == sorted(fifty["tenants"][name].truth_ids(YESTERDAY)), name


def test_the_refused_tenants_alert_names_it(fifty, night):
    result, instance = night["results"][REFUSED]
    sensor = night["failed_runs"]
    context = run_failure_context(instance, result.run_id, sensor.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOOK_URL", fifty["env"]["HOOK_URL"])
        sensor(context)
    (alert,) = fifty["receiver"].bodies("/h")
    assert alert["tenant"] == REFUSED and alert["day"] == str(YESTERDAY)
    assert f"tenant {REFUSED}:" in alert["details"] and "401" in alert["details"]
    assert token(REFUSED) not in str(alert)


def test_each_tenants_server_sees_no_more_than_its_limit_in_any_window(fifty, night):
    for name, server in fifty["servers"].items():
        times = sorted(t for t, digest in server.stats.arrivals if digest == credential_digest(token(name)))
        if name == REFUSED:
            continue
        # As in test_tenants: a slack of 30% of the window for the time from the client's limiter to the server.
        busiest = max(sum(1 for t in times[i:] if t < start + WINDOW * 0.7) for i, start in enumerate(times))
        assert busiest <= LIMIT, (name, busiest)
        assert server.stats.by_status.get(429, 0) == 0, name


def test_a_backfill_of_one_tenant_touches_only_that_tenant(fifty, night):
    before = {n: sorted(p.name for p in (fifty["data"] / "activities").glob(f"tenant={n}/date=*")) for n in TENANTS}
    requests_before = {n: len(s.stats.arrivals) for n, s in fifty["servers"].items()}
    home = fifty["tmp"] / "home"
    home.mkdir(exist_ok=True)
    env = clean_env(**fifty["env"], DAGSTER_HOME=str(home))
    first, second = fifty["days"][:2]
    out = subprocess.run(["make", "-s", "backfill", f"FROM={first}", f"TO={second}", "TENANT=t07"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after = {n: sorted(p.name for p in (fifty["data"] / "activities").glob(f"tenant={n}/date=*")) for n in TENANTS}
    assert after["t07"] == sorted({*before["t07"], f"date={first}", f"date={second}"})
    assert {n: d for n, d in after.items() if n != "t07"} == {n: d for n, d in before.items() if n != "t07"}
    asked = {n for n, s in fifty["servers"].items() if len(s.stats.arrivals) > requests_before[n]}
    assert asked == {"t07"}, "no other tenant's API was asked anything"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert sorted(r.tags["dagster/partition"] for r in runs) == [f"{first}|t07", f"{second}|t07"]
