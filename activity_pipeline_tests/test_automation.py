"""When things run: the daily schedule, and the sensor that re-runs days whose source total grew."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline.definitions import defs
from activity_pipeline.defs.resources import ActivityStorage
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline_tests.helpers import TODAY, last_days, run_day, tenant_resource


def sensor_resources(url: str, data_dir: Path) -> dict[str, Any]:
    return {"mdca": tenant_resource(url), "storage": ActivityStorage(data_dir=str(data_dir))}


late_arrivals = defs().resolve_sensor_def("late_arrivals")


def test_schedule_materializes_yesterday_at_0215_utc():
    schedule = defs().resolve_schedule_def("daily_activities_schedule")
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
        assert run_day(day, tenant_resource(url), tmp_path).success
    with dg.build_sensor_context(resources=sensor_resources(url, tmp_path)) as context:
        assert isinstance(late_arrivals(context), dg.SkipReason)
    tenant.advance(dt.timedelta(days=3))
    with dg.build_sensor_context(resources=sensor_resources(url, tmp_path)) as context:
        result = late_arrivals(context)
    grown = {r.partition_key for r in result.run_requests}
    assert grown and grown <= {d.isoformat() for d in days}
    assert days[-1].isoformat() in grown, "yesterday always has late records in the demo tenant"
