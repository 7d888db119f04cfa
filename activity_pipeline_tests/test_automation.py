"""When things run: the daily schedule (a run per tenant), the sensor that re-runs days whose source total grew,
which of them run by default, and that one tenant's failure does not stop another's."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from activity_pipeline import config
from activity_pipeline.components.partitions import TenantDays
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients, resources_for
from activity_pipeline.components.tenants import tenants_definitions
from activity_pipeline.definitions import build_defs, defs
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline_testing.helpers import (
    FORBIDDEN_TOKEN,
    JOB,
    TENANT,
    TODAY,
    last_days,
    partition,
    run_day,
    tenant_data,
    tenant_resource,
)


def sensor_context(url: str, data_dir: Path, **others: dg.ConfigurableResource) -> dg.SensorEvaluationContext:
    clients = TenantClients({TENANT: tenant_resource(url), **others})
    resources = {MDCA: clients, "storage": ActivityStorage(data_dir=str(data_dir))}
    return dg.build_sensor_context(resources=resources, definitions=build_defs(resources))


late_arrivals = defs().resolve_sensor_def("late_arrivals")


def _built(settings: config.PipelineConfig) -> dg.Definitions:
    """The definitions of `settings`, with the resources it configures."""
    return dg.Definitions.merge(tenants_definitions(settings), dg.Definitions(resources=resources_for(settings)))


def _three_tenants(tmp_path: Path) -> config.PipelineConfig:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        "  - {name: contoso, api_url: 'https://contoso.eu2.portal.cloudappsecurity.com', token_env: T}\n"
        "  - {name: quiet, api_url: 'https://quiet.eu2.portal.cloudappsecurity.com', token_env: T, automation: false}\n"
        "  - {name: lab, demo: true}\n"
    )
    return config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "T": "token", "ACTIVITY_DATA_DIR": str(tmp_path)})


def test_one_schedule_runs_yesterday_of_every_automated_tenant_at_0215_utc(tmp_path):
    built = _built(_three_tenants(tmp_path))
    schedule = built.resolve_schedule_def(f"{JOB}_schedule")
    assert schedule.cron_schedule == "15 2 * * *" and schedule.execution_timezone == "UTC"
    at = dt.datetime(2026, 11, 25, 2, 15, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=at, repository_def=built.get_repository_def())
    requests = schedule.evaluate_tick(context).run_requests
    # A run per tenant: one that fails fails only its own day.
    assert sorted(r.partition_key for r in requests) == ["2026-11-24|contoso", "2026-11-24|lab"]
    assert {r.tags["activity_pipeline/tenant"] for r in requests} == {"contoso", "lab"}
    assert {r.job_name for r in requests} <= {JOB, None}


def test_sensor_requests_a_rerun_for_days_whose_source_total_grew(tmp_path, served):
    days = last_days(3)
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=4_000))
    tenant.set_now(dt.datetime.combine(TODAY, dt.time(1), dt.UTC))
    url = served(tenant)
    for day in days:
        assert run_day(day, tenant_resource(url), tmp_path).success
    # As the daemon evaluates it: the sensor reaches its resources through the context.
    with sensor_context(url, tmp_path) as context:
        assert late_arrivals.evaluate_tick(context).skip_message
    tenant.advance(dt.timedelta(days=3))
    with sensor_context(url, tmp_path) as context:
        result = late_arrivals.evaluate_tick(context)
    grown = {r.partition_key for r in result.run_requests}
    assert grown and grown <= {partition(d) for d in days}
    assert partition(days[-1]) in grown, "yesterday always has late records in the demo tenant"


def test_a_tenant_whose_token_is_refused_does_not_stop_the_late_arrivals_of_another(tmp_path, served):
    days = last_days(3)
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=2_000))
    tenant.set_now(dt.datetime.combine(TODAY, dt.time(1), dt.UTC))
    url = served(tenant)
    refused = tenant_resource(url, api_token=FORBIDDEN_TOKEN, retry_max_attempts=1)
    settings = _tenants_file(tmp_path, url)
    for day in days:
        assert run_day(day, tenant_resource(url), tmp_path).success
    # The refused tenant has stored days too, so the sensor asks its API.
    for day in days:
        with tenant_data(tmp_path, "broken").writer(day) as writer:
            writer.commit()
    tenant.advance(dt.timedelta(days=3))
    sensor = _built(settings).resolve_sensor_def("late_arrivals")
    clients = TenantClients({TENANT: tenant_resource(url), "broken": refused})
    resources = {MDCA: clients, "storage": ActivityStorage(data_dir=str(tmp_path))}
    with dg.build_sensor_context(resources=resources, definitions=build_defs(resources, settings)) as context:
        result = sensor.evaluate_tick(context)
    assert {r.tags["activity_pipeline/tenant"] for r in result.run_requests} == {TENANT}
    # Both were looked at: the cursor says so, and the next tick within the hour looks at neither.
    assert set(json.loads(result.cursor)) == {TENANT, "broken"}


def _tenants_file(tmp_path: Path, url: str) -> config.PipelineConfig:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        f"tenants:\n  - {{name: {TENANT}, api_url: '{url}', token_env: T}}\n"
        f"  - {{name: broken, api_url: '{url}', token_env: T}}\n"
    )
    return config.load(
        {"ACTIVITY_TENANTS_FILE": str(tenants), "T": "t", "ACTIVITY_DATA_DIR": str(tmp_path),
         "ACTIVITY_START_DATE": "2026-01-01"}
    )  # fmt: skip


def test_retention_rescue_requests_missing_days_near_the_cliff_oldest_first(tmp_path):
    from activity_pipeline.components.automation import rescue_requests
    from activity_pipeline.service_window import first_scannable_day

    today = TODAY
    cliff = first_scannable_day(today)
    settings = config.load({"ACTIVITY_DATA_DIR": str(tmp_path), "ACTIVITY_START_DATE": "2026-01-01"})
    grid = TenantDays.of(settings.tenants, open_dataset(tmp_path), today)
    for day in (cliff + dt.timedelta(days=1), cliff + dt.timedelta(days=2)):
        with tenant_data(tmp_path).writer(day) as writer:
            writer.commit()
    ActivityStorage(data_dir=str(tmp_path)).record_count_check(
        TENANT, cliff + dt.timedelta(days=2), source_total=5, rows_checked=0, passed=False
    )
    requests = rescue_requests(TENANT, grid, ActivityStorage(data_dir=str(tmp_path)), today)
    wanted = [cliff, cliff + dt.timedelta(days=2), *(cliff + dt.timedelta(days=k) for k in range(3, 15))]
    assert [r.partition_key for r in requests] == [partition(d) for d in wanted]
    assert "incomplete" in requests[1].tags["activity_pipeline/reason"]
    assert "missing, 0 days left" in requests[0].tags["activity_pipeline/reason"]


def test_one_schedule_and_one_sensor_per_concern_run_by_default(tmp_path):
    built = _built(_three_tenants(tmp_path))
    statuses = {s.name: s.default_status.value for s in built.schedules}
    statuses |= {s.name: s.default_status.value for s in built.sensors}
    assert statuses == {
        f"{JOB}_schedule": "RUNNING",
        "activities_verification_schedule": "RUNNING",
        "late_arrivals": "RUNNING",
        # A real tenant's days are lost at the service window's end; a demo tenant's are made again on demand.
        "service_window_rescue": "RUNNING",
        "compaction": "RUNNING",
        "intraday": "RUNNING",
    }


def test_a_demo_only_deployment_does_not_run_the_service_window_rescue(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: lab, demo: true}\n  - {name: quiet, demo: true, automation: false}\n")
    built = _built(config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)}))
    assert built.resolve_sensor_def("service_window_rescue").default_status.value == "STOPPED"
    assert built.resolve_sensor_def("late_arrivals").default_status.value == "RUNNING"


def test_automation_takes_only_true_or_false(tmp_path):
    from activity_pipeline import config
    from activity_pipeline.errors import ConfigError

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: lab, demo: true, automation: 'off'}\n")
    with pytest.raises(ConfigError, match=r"tenant 'lab' \(line 2 .*`automation` must be true .* or false"):
        config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)})


def test_a_sensor_tick_looks_at_the_least_recently_seen_tenants_within_its_budget():
    from activity_pipeline.components.rotation import Rotation

    names = [f"t{i}" for i in range(5)]
    first = Rotation(None, names, every=3600, budget=0.0, now=1000.0)
    assert list(first) == ["t0"], "a spent budget still looks at one tenant, so every tick makes progress"
    assert first.left == 4
    second = Rotation(first.cursor(), names, every=3600, budget=30, now=1100.0)
    assert list(second) == ["t1", "t2", "t3", "t4"], "not looked at before: before the one seen at 1000"
    # An hour after each was seen, each is due again, the least recently seen first.
    later = Rotation(second.cursor(), names, every=3600, budget=30, now=4650.0)
    assert later.due == ["t0"]
    assert Rotation("not json", names, every=3600, budget=30, now=0.0).due == names, "a bad cursor starts again"
