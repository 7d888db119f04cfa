"""A commit never adds a wrong row: whatever the server sends, a day's new version holds each id once, every row
inside the day, and (a top-up) only records created from the watermark it asked for; refused versions change
nothing. Against servers that ignore the `created` filter, repeat ids far apart, and two runs at once."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.ingest import collect_day, ingest_day, top_up_day
from activity_pipeline.mdca import FilterIgnoredError
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.errors import DayLockedError, UnsafeVersionError
from activity_pipeline.storage.layout import KEPT_ASIDE
from activity_pipeline_testing import helpers
from activity_pipeline_testing.backends import early_tenant
from activity_pipeline_testing.helpers import (
    NODE,
    RECENT,
    STRESS_DAY,
    IgnoresCreated,
    RepeatsIds,
    broken,
    client_for,
    serve,
    stored,
    tenant_resource,
)


def _ids(backend, day=STRESS_DAY) -> list[str]:
    return [i for i, _ in stored(backend.dataset, "contoso", day)]


def _unchanged(backend, before, day=STRESS_DAY) -> None:
    store = backend.store()
    after = store.manifest(day)
    assert after is not None and after.run_id == before.run_id and after.rows == before.rows
    assert not [p for p in store.staging.iterdir() if p.is_dir() and p.name != KEPT_ASIDE], "staging is clean"


def test_a_top_up_from_a_server_that_ignores_created_is_refused_and_changes_nothing(backend):
    tenant = early_tenant(8_000)
    with serve(tenant) as server:
        ingest_day(client_for(server.url), backend.store(), STRESS_DAY)
    before = backend.store().manifest(STRESS_DAY)
    tenant.advance(dt.timedelta(days=3))
    with broken(IgnoresCreated, tenant) as server, pytest.raises(FilterIgnoredError) as caught:
        top_up_day(client_for(server.url), backend.store(), STRESS_DAY)
    message = str(caught.value)
    assert "ignored the request's `created` filter" in message and "stored day is unchanged" in message
    assert "full_rescan=true" in message, "says how to collect the day anyway"
    _unchanged(backend, before)
    ids = _ids(backend)
    assert len(ids) == len(set(ids)) == before.rows


def test_a_full_scan_that_repeats_ids_far_apart_is_kept_aside_not_swapped_in(backend):
    tenant = DemoTenant(TenantSpec(days=(STRESS_DAY,), activities_per_day=20_000))
    tenant.set_now(helpers.later(10))
    with serve(tenant) as server:
        ingest_day(client_for(server.url), backend.store(), STRESS_DAY, slices=1)
    before = backend.store().manifest(STRESS_DAY)
    with broken(RepeatsIds, tenant) as server, pytest.raises(UnsafeVersionError) as caught:
        ingest_day(client_for(server.url), backend.store(), STRESS_DAY, slices=1)
    message = str(caught.value)
    assert "repeat an id" in message and "stored day is unchanged" in message and "kept aside" in message
    assert caught.value.path.exists() and list(caught.value.path.glob("*.parquet")), "the refused files are kept"
    _unchanged(backend, before)
    ids = _ids(backend)
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(STRESS_DAY)


def test_a_first_scan_that_repeats_ids_stores_no_day(tmp_path):
    tenant = DemoTenant(TenantSpec(days=(STRESS_DAY,), activities_per_day=20_000))
    tenant.set_now(helpers.later(10))
    store = helpers.tenant_data(tmp_path)
    with broken(RepeatsIds, tenant) as server, pytest.raises(UnsafeVersionError):
        ingest_day(client_for(server.url), store, STRESS_DAY, slices=1)
    assert store.manifest(STRESS_DAY) is None and not store.day_location(STRESS_DAY).exists()


def test_two_runs_at_once_against_a_server_that_ignores_created_commit_nothing(tmp_path):
    tenant = early_tenant(8_000)
    store = helpers.tenant_data(tmp_path)
    with serve(tenant) as server:
        ingest_day(client_for(server.url), store, STRESS_DAY)
    before = store.manifest(STRESS_DAY)
    tenant.advance(dt.timedelta(days=3))
    outcomes: list[str] = []
    with broken(IgnoresCreated, tenant, latency_ms=300) as server:

        def run() -> None:
            try:
                collect_day(client_for(server.url), store, STRESS_DAY)
                outcomes.append("landed")
            except DayLockedError:
                outcomes.append("locked")
            except FilterIgnoredError:
                outcomes.append("refused")

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(outcomes) == ["locked", "refused"]
    assert store.manifest(STRESS_DAY).run_id == before.run_id
    ids = stored(open_dataset(tmp_path), "default", STRESS_DAY)
    assert len(ids) == len({i for i, _ in ids}) == before.rows


def test_the_choice_of_top_up_is_made_under_the_lock_from_what_is_committed(tmp_path):
    """Two runs of a day never stored, one after the other as the lock lets them: the second tops up the
    version the first committed (it decided after the lock, not before the first run's commit)."""
    tenant = early_tenant(6_000)
    store = helpers.tenant_data(tmp_path)
    with serve(tenant, latency_ms=200) as server:
        first = collect_day(client_for(server.url), store, STRESS_DAY)
        tenant.advance(dt.timedelta(days=3))
        second = collect_day(client_for(server.url), store, STRESS_DAY)
    assert (first.mode, second.mode) == ("full", "top-up")
    ids = stored(open_dataset(tmp_path), "default", STRESS_DAY)
    assert len(ids) == len({i for i, _ in ids}) and {i for i, _ in ids} == tenant.truth_ids(STRESS_DAY)


def test_make_run_against_a_server_that_ignores_created_fails_naming_it(tmp_path):
    day = RECENT[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=3_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    with serve(tenant) as server:
        assert helpers.materialize(day, tmp_path, tenant_resource(server.url)).success
    before = helpers.tenant_data(tmp_path).manifest(day)
    tenant.advance(dt.timedelta(days=2))
    with broken(IgnoresCreated, tenant) as server:
        result = helpers.materialize(day, tmp_path, tenant_resource(server.url), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node(NODE).user_failure_data.description
    assert "ignored the request's `created` filter" in failure
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events), "no retry"
    assert helpers.tenant_data(tmp_path).manifest(day).run_id == before.run_id


def test_make_run_fails_naming_a_server_that_ignores_created_and_keeps_the_day(tmp_path):
    import subprocess

    from activity_pipeline_testing.helpers import REPO, cli_env

    day = RECENT[0]
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=3_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))

    def make_run(url: str) -> subprocess.CompletedProcess[str]:
        env = cli_env(url, tmp_path / "data", tmp_path / "home")
        return subprocess.run(["make", "-s", "run", f"DAY={day}"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    with serve(tenant) as server:
        assert make_run(server.url).returncode == 0
    before = helpers.tenant_data(tmp_path / "data").manifest(day)
    tenant.advance(dt.timedelta(days=2))
    with broken(IgnoresCreated, tenant) as server:
        proc = make_run(server.url)
    assert proc.returncode != 0 and f"1 failed run (daily_activities):\ndefault {day}: FAILURE" in proc.stderr
    assert "ignored the request's `created` filter" in proc.stdout + proc.stderr
    after = helpers.tenant_data(tmp_path / "data").manifest(day)
    assert after.run_id == before.run_id and after.rows == before.rows
