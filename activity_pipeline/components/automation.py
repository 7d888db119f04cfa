"""When each tenant's days run: yesterday at 02:15 UTC; recent days again, topped up, when their source count
grows; and days about to leave the service's window that are not safely stored.

One job, one schedule and one sensor per concern for every tenant. Each asks for one run per tenant and day, so one
tenant that fails (a revoked token, an outage) only fails its own runs; a sensor passes over a tenant whose API
fails and goes on with the others (`rotation`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from activity_pipeline.components.partitions import TenantDays, key
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients
from activity_pipeline.components.rotation import Rotation
from activity_pipeline.config import TenantConfig
from activity_pipeline.days import SETTLE_DAYS, day_window
from activity_pipeline.service_window import RESCUE_MARGIN_DAYS, at_risk

JOB = "daily_activities"
# Every run of a tenant's day carries its name here (Dagster adds `dagster/partition/tenant` too): alerts and the
# instance's run limits read it.
TENANT_TAG = "activity_pipeline/tenant"
# The most a sensor's tick spends looking at tenants: Dagster ends an evaluation after 60 s.
TICK_BUDGET_SECONDS = 40.0


@dataclasses.dataclass
class Automation:
    # An unresolved asset job: Dagster exports no type for it by name.
    job: Any
    schedule: dg.ScheduleDefinition
    sensors: list[dg.SensorDefinition]


def run_request(tenant: str, day: dt.date, run_key: str | None, **tags: str) -> dg.RunRequest:
    return dg.RunRequest(partition_key=key(day, tenant), run_key=run_key, tags={TENANT_TAG: tenant, **tags})


def sensor_status(on: bool) -> dg.DefaultSensorStatus:
    """A sensor's default status: running when it has a tenant to serve (one with automation on)."""
    return dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED


def build_automation(
    tenants: Sequence[TenantConfig], activities: dg.AssetsDefinition, duckdb: dg.AssetsDefinition, grid: TenantDays
) -> Automation:
    # On by default: a team that configures a tenant expects its nightly run without a visit to the UI.
    # `automation: false` in the tenants file leaves a tenant out of the schedule and the sensors.
    automated = [t.name for t in tenants if t.automation]
    real = [t.name for t in tenants if t.automation and not t.uses_demo_tenant]
    job = dg.define_asset_job(
        JOB,
        selection=dg.AssetSelection.assets(activities, duckdb),
        description="One UTC day of one tenant: scan it into Parquet, run its checks, refresh the DuckDB views.",
        # One process for the scan, the checks and the views: a process per step would cost ~2 s of start-up each
        # and buy nothing, since the steps run one after another anyway.
        executor_def=dg.in_process_executor,
    )

    @dg.schedule(
        name=f"{JOB}_schedule",
        job=job,
        cron_schedule="15 2 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if automated else dg.DefaultScheduleStatus.STOPPED,
        description="At 02:15 UTC, yesterday of every tenant (but those with `automation: false`): a run each.",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> Sequence[dg.RunRequest] | dg.SkipReason:
        day = (context.scheduled_execution_time or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
        yesterday = day - dt.timedelta(days=1)
        runs = [run_request(t, yesterday, f"daily:{t}:{yesterday}") for t in automated]
        return runs or dg.SkipReason("every tenant has automation: false")

    @dg.sensor(
        name="late_arrivals",
        job=job,
        minimum_interval_seconds=300,
        default_status=sensor_status(bool(automated)),
        required_resource_keys={MDCA, "storage"},
        description="Tops up the days of the settle window (the last 3 complete days) whose source count has passed "
        "what is stored: each tenant looked at about hourly, least recently first.",
    )
    def late_arrivals(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        clients: TenantClients = getattr(context.resources, MDCA)
        storage: ActivityStorage = context.resources.storage
        now = time.time()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        rotation = Rotation(context.cursor, automated, every=3600, budget=TICK_BUDGET_SECONDS, now=now)
        requests, notes = [], []
        for tenant in rotation:
            try:
                requests += _grown_days(tenant, clients, storage, grid.newest(SETTLE_DAYS, today), context.log)
            except Exception as exc:  # one tenant's API or storage failing never stops the others
                notes.append(f"{tenant}: {' '.join(str(exc).split())[:300]}")
        for note in notes:
            context.log.warning(f"late arrivals not looked at for {note}")
        reached = f"looked at {len(rotation.looked)} tenants ({rotation.left} due left for the next tick)"
        return dg.SensorResult(
            run_requests=requests,
            cursor=rotation.cursor(),
            skip_reason=None if requests else dg.SkipReason(f"no day in the settle window has grown: {reached}"),
        )

    @dg.sensor(
        name="service_window_rescue",
        job=job,
        minimum_interval_seconds=3600,
        # Against a real tenant a day not stored before the cliff is lost for good. A demo tenant's days are made
        # again on demand: nothing is lost, and rescuing them would only run a fortnight of synthetic days.
        default_status=sensor_status(bool(real)),
        required_resource_keys={"storage"},
        description="Materializes days that leave the service's 180-day window within 14 days and are missing or "
        "incomplete, oldest first (real tenants only).",
    )
    def rescue(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        storage: ActivityStorage = context.resources.storage
        today = dt.datetime.now(dt.UTC).date()
        requests = []
        for tenant in real:
            try:
                requests += rescue_requests(tenant, grid, storage, today)
            except Exception as exc:  # one tenant's storage failing never stops the others
                context.log.warning(f"service window rescue of {tenant} skipped: {' '.join(str(exc).split())[:300]}")
        if not requests:
            return dg.SkipReason(
                f"no missing or incomplete day of {len(real)} tenants within {RESCUE_MARGIN_DAYS} days of leaving "
                "the service's window"
            )
        context.log.warning(
            "service window rescue: "
            + ", ".join(
                f"{r.tags[TENANT_TAG]} {r.partition_key} ({r.tags['activity_pipeline/reason']})" for r in requests
            )
        )
        return dg.SensorResult(run_requests=requests)

    return Automation(job, daily, [late_arrivals, rescue])


def _grown_days(
    tenant: str, clients: TenantClients, storage: ActivityStorage, days: Sequence[dt.date], log: Any
) -> list[dg.RunRequest]:
    """Runs for the tenant's stored days among `days` whose source count has passed what is stored."""
    store = storage.tenant(tenant)
    manifests = {day: store.manifest(day) for day in days}
    if all(m is None for m in manifests.values()):
        return []  # never materialized: the schedule or a backfill owns them
    requests = []
    with clients.client(tenant, log) as client:
        for day, manifest in manifests.items():
            if manifest is None:
                continue
            if manifest.filters != client.filters:
                # A top-up would mix two filters; the check collected_under_current_filters flags the day.
                continue
            total = client.count(*day_window(day))
            if total > manifest.rows:
                requests.append(run_request(tenant, day, f"{tenant}:{day}:{total}"))
    return requests


def rescue_requests(
    tenant: str,
    grid: TenantDays,
    storage: ActivityStorage,
    today: dt.date,
    margin_days: int = RESCUE_MARGIN_DAYS,
) -> list[dg.RunRequest]:
    """Runs for the tenant's days about to leave the service's window that are missing or incomplete, oldest
    first."""
    store = storage.tenant(tenant)
    risky = at_risk(
        grid.days_of(tenant, today),
        today=today,
        stored=store.days(),
        incomplete=store.failed_days(),
        margin_days=margin_days,
    )
    return [
        # Once a day per day at risk: a run that is still going is not asked for twice.
        run_request(
            tenant,
            d.day,
            f"service-window-rescue:{tenant}:{d.day}:{today}",
            **{"activity_pipeline/reason": f"service window rescue: {d.state}, {d.days_left} days left"},
        )
        for d in risky
    ]
