"""Today within minutes: one intraday run collects every tenant that is due, exact as of each watermark, each id
once; the day's next run is a top-up; one tenant's refused token does not stop another's collection."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from activity_pipeline import config
from activity_pipeline.components.checks import judged
from activity_pipeline.components.intraday import JOB, days_in_progress
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients, resources_for
from activity_pipeline.definitions import build_defs
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline_testing.helpers import FORBIDDEN_TOKEN, TENANT, partition, run_day, tenant_data, tenant_resource

NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()


def _settings(tmp_path: Path, minutes: dict[str, int]) -> config.PipelineConfig:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n" + "".join(f"  - {{name: {n}, demo: true, intraday_minutes: {m}}}\n" for n, m in minutes.items())
    )
    return config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)})


def _defs(tmp_path: Path, settings: config.PipelineConfig, clients: dict) -> dg.Definitions:
    resources = {MDCA: TenantClients(clients), "storage": ActivityStorage(data_dir=str(tmp_path))}
    return build_defs(resources, settings)


def _exact_as_of_watermark(data: Path, tenant: str, truth: DemoTenant) -> int:
    """The stored rows of today, checked: every id the tenant held as of the watermark, each once, none it did
    not hold by now. Returns the rows."""
    store = tenant_data(data, tenant)
    manifest = store.manifest(TODAY)
    assert manifest is not None and manifest.watermark_ms is not None
    table = pq.read_table(store.paths.day_dir(TODAY), columns=["id", "created"])
    ids = table["id"].to_pylist()
    created = [int(c.timestamp() * 1000) for c in table["created"].to_pylist()]
    assert len(ids) == len(set(ids)), "each id once"
    upto = {i for i, c in zip(ids, created, strict=True) if c <= manifest.watermark_ms}
    assert upto == truth.truth_ids(TODAY, now=manifest.watermark_ms)
    assert set(ids) <= truth.truth_ids(TODAY)
    return len(ids)


def _materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dg.DagsterEvent]:
    events = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    return [e for e in events if e.event_specific_data.materialization.asset_key.path == [asset]]


def test_the_days_in_progress_are_today_and_yesterday_until_the_nightly_run():
    assert days_in_progress(dt.datetime(2026, 12, 5, 2, 14, tzinfo=dt.UTC)) == [
        dt.date(2026, 12, 4),
        dt.date(2026, 12, 5),
    ]
    assert days_in_progress(dt.datetime(2026, 12, 5, 2, 15, tzinfo=dt.UTC)) == [dt.date(2026, 12, 5)]


@pytest.mark.parametrize(("text", "ok"), [("0", 0), ("1", 1), ("1440", 1440), ("", 15)])
def test_intraday_minutes_takes_whole_minutes_or_0(tmp_path, text, ok):
    assert (
        config.load({"ACTIVITY_DATA_DIR": str(tmp_path), "MDCA_INTRADAY_MINUTES": text}).tenants[0].intraday_minutes
        == ok
    )


@pytest.mark.parametrize("value", ["-1", "1441", "5.5", "often", "true"])
def test_a_bad_intraday_minutes_names_the_key_and_the_range(tmp_path, value):
    from activity_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="MDCA_INTRADAY_MINUTES must be a whole number of minutes from 1 to 1440"):
        config.load({"ACTIVITY_DATA_DIR": str(tmp_path), "MDCA_INTRADAY_MINUTES": value})
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - {{name: lab, demo: true, intraday_minutes: {value}}}\n")
    with pytest.raises(ConfigError, match=r"tenant 'lab' \(line 2 .*`intraday_minutes` must be a whole number"):
        config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)})


def test_an_intraday_run_collects_today_so_far_exactly_and_then_tops_it_up(tmp_path, served):
    tenant = DemoTenant(TenantSpec(days=(TODAY,), activities_per_day=4_000))
    tenant.set_now(NOW - dt.timedelta(minutes=30))
    url = served(tenant)
    settings = _settings(tmp_path, {TENANT: 1})
    defs = _defs(tmp_path, settings, {TENANT: tenant_resource(url)})
    job = defs.resolve_job_def(JOB)
    first = job.execute_in_process(run_config={"ops": {"collect_intraday": {"config": {"tenants": [TENANT]}}}})
    assert first.success
    rows = _exact_as_of_watermark(tmp_path, TENANT, tenant)
    assert 0 < rows < tenant.truth_count(TODAY, now=int(NOW.timestamp() * 1000) + 86_400_000), "today so far"
    (event,) = _materializations(first, "activities")
    assert event.event_specific_data.materialization.partition == partition(TODAY)
    # There was no DuckDB file: the run built one, and its views return what the run stored.
    assert len(_materializations(first, "activities_duckdb")) == 1
    watermark = dt.datetime.fromtimestamp(tenant_data(tmp_path, TENANT).manifest(TODAY).watermark_ms / 1000, dt.UTC)
    with duckdb.connect(str(tmp_path / "activities.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM activities").fetchone() == (rows,)
        # Today is in progress, with its watermark; the tenant's clock is half an hour behind the real one, so its
        # watermark (five minutes before its scan began) is 35 minutes old: behind an interval of 1 minute.
        health = con.execute(
            "SELECT in_progress, collected_up_to, rows_stored FROM partition_health WHERE date = ?", [TODAY]
        ).fetchall()
        assert health == [(True, watermark, rows)]
        (fresh,) = con.execute(
            "SELECT tenant, intraday_minutes, newest_day, complete_up_to, lag_minutes, state, newest_activity "
            "FROM freshness"
        ).fetchall()
    assert fresh[:4] == (TENANT, 1, TODAY, watermark)
    # (NOW is when this module was collected: a long session runs the test minutes later, so the lag is now's.)
    lag = (dt.datetime.now(dt.UTC) - watermark).total_seconds() / 60
    assert lag - 1 <= fresh[4] <= lag + 0.1 and fresh[4] >= 34 and fresh[5] == "behind", (fresh, lag)
    assert fresh[6] <= NOW - dt.timedelta(minutes=30), "nothing newer than the tenant held"
    # Twenty minutes on: a top-up of what was created since the watermark.
    tenant.advance(dt.timedelta(minutes=20))
    second = job.execute_in_process(run_config={"ops": {"collect_intraday": {"config": {"tenants": [TENANT]}}}})
    (event,) = _materializations(second, "activities")
    assert event.event_specific_data.materialization.metadata["mode"].value == "top-up"
    assert not _materializations(second, "activities_duckdb"), "on local disk the views find new versions themselves"
    assert _exact_as_of_watermark(tmp_path, TENANT, tenant) > rows
    # The day's next run of the daily job (the nightly one, or the UI's) is a top-up too, and its checks pass.
    tenant.advance(dt.timedelta(minutes=10))
    nightly = run_day(TODAY, tenant_resource(url), tmp_path)
    assert nightly.success
    (materialization,) = nightly.asset_materializations_for_node("activities")
    assert materialization.metadata["mode"].value == "top-up"
    checks = {e.check_name: e for e in nightly.get_asset_check_evaluations()}
    assert checks["count_matches_source"].passed
    # A day in progress is not judged against whole days, and its check says so in its own result.
    silent = checks["no_unexpected_silent_hours"]
    assert (
        not judged(silent) and silent.description.startswith("Not judged yet: ") and "in progress" in silent.description
    )


def test_two_tenants_share_one_intervals_run_and_a_refused_token_stops_only_its_own(tmp_path, served):
    good = DemoTenant(TenantSpec(days=(TODAY,), activities_per_day=2_000, seed=3))
    good.set_now(NOW - dt.timedelta(minutes=30))
    url = served(good)
    settings = _settings(tmp_path, {"good": 1, "refused": 1, "quiet": 0})
    clients = {
        "good": tenant_resource(url),
        "refused": tenant_resource(url, api_token=FORBIDDEN_TOKEN, retry_max_attempts=1),
        "quiet": tenant_resource(url),
    }
    defs = _defs(tmp_path, settings, clients)
    sensor = defs.resolve_sensor_def("intraday")
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        tick = sensor.evaluate_tick(context)
    (request,) = tick.run_requests  # one run for every tenant that is due
    assert request.run_config["ops"]["collect_intraday"]["config"]["tenants"] == ["good", "refused"]
    assert set(json.loads(tick.cursor)) == {"good", "refused"}
    # Within the interval, nobody is due.
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=tick.cursor) as context:
        assert sensor.evaluate_tick(context).skip_message
    result = defs.resolve_job_def(JOB).execute_in_process(
        run_config=request.run_config, instance=instance, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.user_failure_data.description)
    assert "1 of 2 tenants were not collected: tenant refused:" in message and "good" not in message
    _exact_as_of_watermark(tmp_path, "good", good)
    assert tenant_data(tmp_path, "refused").manifest(TODAY) is None
    assert tenant_data(tmp_path, "quiet").manifest(TODAY) is None


def test_no_intraday_job_when_every_tenant_turns_it_off(tmp_path):
    settings = _settings(tmp_path, {"a": 0, "b": 0})
    defs = build_defs(resources_for(settings), settings)
    assert JOB not in {j.name for j in defs.resolve_all_job_defs()}


def test_the_uis_freshness_follows_the_shortest_interval_or_the_nightly_run(tmp_path):
    def policy(minutes: dict[str, int]) -> dg.FreshnessPolicy:
        settings = _settings(tmp_path, minutes)
        spec = build_defs(resources_for(settings), settings).resolve_assets_def("activities").specs_by_key
        return spec[dg.AssetKey("activities")].freshness_policy

    assert policy({"a": 15, "b": 5, "c": 0}).fail_window.to_timedelta() == dt.timedelta(minutes=15)
    assert policy({"a": 15}).warn_window.to_timedelta() == dt.timedelta(minutes=20)
    assert policy({"a": 0}).deadline_cron == "0 4 * * *"


def test_the_nightly_run_waits_for_a_day_an_intraday_collection_holds(tmp_path, served):
    """Until 02:15 yesterday is collected intraday: the nightly run that finds it locked waits, then tops it up."""
    import threading
    import time

    tenant = DemoTenant(TenantSpec(days=(TODAY,), activities_per_day=2_000))
    tenant.set_now(NOW - dt.timedelta(minutes=5))
    url = served(tenant)
    store = tenant_data(tmp_path, TENANT)
    held = threading.Event()

    def hold() -> None:
        with store.writer(TODAY, run_id="intraday-run"):
            held.set()
            time.sleep(4)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    instance = dg.DagsterInstance.ephemeral()
    result = run_day(TODAY, tenant_resource(url), tmp_path, instance=instance)
    holder.join()
    assert result.success
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("Another run is writing" in m and "waiting for it (up to 5 minutes)" in m for m in logs)
    assert store.manifest(TODAY) is not None
