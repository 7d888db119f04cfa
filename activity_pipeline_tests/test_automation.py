"""When things run: the daily schedule, the sensor that re-runs days whose source total grew, and which of them
run by default."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from activity_pipeline.definitions import build_defs, defs
from activity_pipeline.defs.resources import ActivityStorage, mdca_key
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline_testing.helpers import JOB, TENANT, TODAY, last_days, run_day, tenant_data, tenant_resource


def sensor_context(url: str, data_dir: Path) -> dg.SensorEvaluationContext:
    resources = {mdca_key(TENANT): tenant_resource(url), "storage": ActivityStorage(data_dir=str(data_dir))}
    return dg.build_sensor_context(resources=resources, definitions=build_defs(resources))


late_arrivals = defs().resolve_sensor_def(f"{TENANT}_late_arrivals")


def test_schedule_materializes_yesterday_at_0215_utc():
    schedule = defs().resolve_schedule_def(f"{JOB}_schedule")
    assert schedule.cron_schedule == "15 2 * * *" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 25, 2, 15, tzinfo=dt.UTC))
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-24"
    assert request.job_name == JOB


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
    assert grown and grown <= {d.isoformat() for d in days}
    assert days[-1].isoformat() in grown, "yesterday always has late records in the demo tenant"


def test_retention_rescue_requests_missing_days_near_the_cliff_oldest_first(tmp_path):
    from activity_pipeline.defs.automation import rescue_requests
    from activity_pipeline.retention import first_retained_day

    partitions = defs().resolve_job_def(JOB).partitions_def
    today = dt.date.fromisoformat(partitions.get_last_partition_key())
    today += dt.timedelta(days=1)
    cliff = first_retained_day(today)
    for day in (cliff + dt.timedelta(days=1), cliff + dt.timedelta(days=2)):
        with tenant_data(tmp_path).writer(day) as writer:
            writer.commit()
    ActivityStorage(data_dir=str(tmp_path)).record_count_check(
        TENANT, cliff + dt.timedelta(days=2), source_total=5, rows_checked=0, passed=False
    )
    requests = rescue_requests(TENANT, partitions, ActivityStorage(data_dir=str(tmp_path)), today)
    wanted = [cliff, cliff + dt.timedelta(days=2), *(cliff + dt.timedelta(days=k) for k in range(3, 15))]
    assert [r.partition_key for r in requests] == [d.isoformat() for d in wanted]
    assert "incomplete" in requests[1].tags["activity_pipeline/reason"]
    assert "missing, 0 days left" in requests[0].tags["activity_pipeline/reason"]


def _statuses(tenants_file: Path, **env: str) -> dict[str, str]:
    from activity_pipeline import config
    from activity_pipeline.components.tenants import tenants_definitions

    built = tenants_definitions(config.load({"ACTIVITY_TENANTS_FILE": str(tenants_file), **env}))
    found = {s.name: s.default_status.value for s in built.schedules}
    found |= {s.name: s.default_status.value for s in built.sensors}
    return found


def test_a_configured_tenants_schedule_and_sensors_run_by_default_unless_it_opts_out(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        "  - {name: contoso, api_url: 'https://contoso.eu2.portal.cloudappsecurity.com', token_env: T}\n"
        "  - {name: quiet, api_url: 'https://quiet.eu2.portal.cloudappsecurity.com', token_env: T, automation: false}\n"
        "  - {name: lab, demo: true}\n"
    )
    statuses = _statuses(tenants, T="token", ACTIVITY_DATA_DIR=str(tmp_path))
    assert {k: v for k, v in statuses.items() if k.startswith("contoso")} == {
        "contoso_daily_activities_schedule": "RUNNING",
        "contoso_late_arrivals": "RUNNING",
        "contoso_retention_rescue": "RUNNING",
        "contoso_compaction": "RUNNING",
    }
    assert {v for k, v in statuses.items() if k.startswith("quiet")} == {"STOPPED"}
    # A demo tenant runs nightly too; its days are made again on demand, so there is nothing to rescue.
    assert statuses["lab_daily_activities_schedule"] == statuses["lab_late_arrivals"] == "RUNNING"
    assert statuses["lab_retention_rescue"] == "STOPPED"


def test_automation_takes_only_true_or_false(tmp_path):
    from activity_pipeline import config
    from activity_pipeline.mdca import ConfigError

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  - {name: lab, demo: true, automation: 'off'}\n")
    with pytest.raises(ConfigError, match=r"tenant 'lab' \(line 2 .*`automation` must be true .* or false"):
        config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)})
