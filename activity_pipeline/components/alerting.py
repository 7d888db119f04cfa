"""When an alert is sent, to the destinations of the tenants file's `alerts:` list (`activity_pipeline.alerts`):

- a tenant's run failed: its failed step's message, and any blocking check that failed in it (a failed blocking
  check fails its run). One alert per failed run: a step's retries happen inside the run, and a run the instance
  will retry (`dagster/will_retry`) waits for its last attempt;
- a WARN check still fails on a day past its settle window (the last 3 days are still filling with late records);
- days about to leave the service's 180 days (within half the rescue margin) are still missing or incomplete:
  the retention rescue has not managed them.

The first is a run-failure sensor; the other two, an hourly sensor whose cursor keeps what it already said, so
that each standing problem is said once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from activity_pipeline.alerts import Alert, AlertDeliveryError, Destination
from activity_pipeline.alerts.message import RETENTION_RUNBOOK, RUN_RUNBOOK, RUNBOOK
from activity_pipeline.components.automation import TENANT_TAG, TICK_BUDGET_SECONDS, rescue_requests
from activity_pipeline.components.partitions import DAY, TENANT, TenantDays, key
from activity_pipeline.components.resources import ActivityStorage
from activity_pipeline.components.rotation import Rotation
from activity_pipeline.components.verification import JOB as VERIFICATION_JOB
from activity_pipeline.days import SETTLE_DAYS
from activity_pipeline.mdca.redact import redact
from activity_pipeline.service_window import RESCUE_MARGIN_DAYS

# Checks whose failure is a warning: alerted only once it stands past the settle window.
WARN_CHECKS = ("count_matches_source", "no_unexpected_silent_hours", "apps_still_reporting")
# How far back the hourly sensor looks for standing warnings: a week past the settle window.
WARN_LOOKBACK_DAYS = 7
_SENT_KEPT = 2000
# A tenant's name, and whether it is a demo tenant.
Watched = tuple[str, bool]


def deliver(alert: Alert, destinations: Sequence[Destination], log: Any) -> int:
    """Send `alert` to each destination that wants its tenant; returns how many took it. A destination that fails
    is logged (never its URL) and does not stop the others."""
    sent = 0
    for destination in destinations:
        if not destination.wants(alert.tenant):
            continue
        run_url = f"{destination.ui_url}/runs/{alert.run_url}" if destination.ui_url and alert.run_url else None
        try:
            destination.send(dataclasses.replace(alert, run_url=run_url))
            sent += 1
        except AlertDeliveryError as exc:
            log.warning(str(exc))
    return sent


def _tenant_of(run: dg.DagsterRun) -> str | None:
    # A backfill's runs carry Dagster's partition tags only.
    return run.tags.get(TENANT_TAG) or run.tags.get(f"dagster/partition/{TENANT}")


def _failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(check, description) of the ERROR checks that failed in the run."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    failed = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        # ERROR checks only: a WARN fails no run, and has its own alert once it stands past the settle window.
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed.append((evaluation.check_name, evaluation.description or ""))
    return failed


def run_failure_alert(context: dg.RunFailureSensorContext) -> Alert | None:
    """The alert for a failed run of a tenant's day; None for runs that are not a tenant's, or will be retried."""
    run = context.dagster_run
    tenant = _tenant_of(run)
    if tenant is None and run.job_name == VERIFICATION_JOB:
        tenant = "every tenant"  # the failure names each damaged tenant and day
    if tenant is None or run.tags.get("dagster/will_retry", "").lower() == "true":
        return None
    day = run.tags.get(f"dagster/partition/{DAY}")
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        text = (data.user_failure_data.description if data.user_failure_data else None) or (
            data.error.message if data.error else ""
        )
        steps.append(f"{event.step_key}: {' '.join((text or '').split())[:1500]}")
    checks = _failed_checks(context.instance, run.run_id)
    details = "; ".join(steps) or context.failure_event.message or "the run failed"
    runbook = RUNBOOK["stored_files_intact"] if run.job_name == VERIFICATION_JOB else RUN_RUNBOOK
    what = "stored days are damaged" if run.job_name == VERIFICATION_JOB else "the run failed"
    if checks:
        what = "check failed: " + ", ".join(name for name, _ in checks)
        details = " ".join(f"{name}: {text}" for name, text in checks) + (f" ({details})" if steps else "")
        runbook = "; ".join(RUNBOOK.get(name, RUN_RUNBOOK) for name, _ in checks)
    return Alert(
        tenant, day, what, redact(details, []), runbook.replace("<tenant>", tenant).replace("<day>", day or "DAY"),
        run_url=run.run_id, key=f"run:{run.run_id}",
    )  # fmt: skip


def standing_alerts(
    instance: dg.DagsterInstance,
    storage: ActivityStorage,
    activities: dg.AssetKey,
    grid: TenantDays,
    tenants: Sequence[Watched],
    today: dt.date,
) -> list[Alert]:
    """Warnings still standing past the settle window, and days about to leave the service's window unstored, of
    `tenants`."""
    from dagster._core.event_api import PartitionKeyFilter

    found = []
    for tenant, demo in tenants:
        first = grid.first[tenant]
        days = [today - dt.timedelta(days=k) for k in range(SETTLE_DAYS + 1, SETTLE_DAYS + 1 + WARN_LOOKBACK_DAYS)]
        for day in (d for d in days if d >= first):
            for check in WARN_CHECKS:
                check_key = dg.AssetCheckKey(activities, check)
                latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                    [check_key], partition_filter=PartitionKeyFilter(key=str(key(day, tenant)))
                ).get(check_key)
                entry = latest.event if latest is not None else None
                evaluation = entry.dagster_event.event_specific_data if entry and entry.dagster_event else None
                if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
                    continue
                found.append(
                    Alert(
                        tenant,
                        day.isoformat(),
                        f"{check} still failing past the settle window",
                        redact(evaluation.description or "", []),
                        RUNBOOK[check],
                        run_url=latest.run_id,
                        severity="WARN",
                        key=f"warn:{tenant}:{day}:{check}:{latest.run_id}",
                    )
                )
        if demo:
            continue  # a demo tenant's days are made again on demand: none is lost
        risky = rescue_requests(tenant, grid, storage, today, margin_days=RESCUE_MARGIN_DAYS // 2)
        if risky:
            days_at_risk = [str(r.partition_key).split("|")[0] for r in risky]
            listed = ", ".join(
                f"{d} ({r.tags['activity_pipeline/reason']})" for d, r in zip(days_at_risk, risky, strict=True)
            )
            found.append(
                Alert(
                    tenant,
                    None,
                    f"{len(risky)} days leave the service's window unstored",
                    f"Missing or incomplete, within {RESCUE_MARGIN_DAYS // 2} days of the service's 180: {listed}",
                    RETENTION_RUNBOOK,
                    key=f"retention:{tenant}:{','.join(days_at_risk)}",
                )
            )
    return found


def build_alert_sensors(
    destinations: Sequence[Destination],
    activities: dg.AssetKey,
    grid: TenantDays,
    tenants: Sequence[Watched],
) -> list[dg.SensorDefinition]:
    """The two alert sensors, on by default; none when no destination is configured."""
    if not destinations:
        return []

    @dg.run_failure_sensor(
        name="activity_alerts_failed_runs",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert for each failed run of a tenant's day to the tenants file's `alerts:`.",
    )
    def failed_runs(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        alert = run_failure_alert(context)
        if alert is None:
            return dg.SkipReason(f"run {context.dagster_run.run_id} is not a tenant's last attempt")
        sent = deliver(alert, destinations, context.log)
        context.log.info(f"alert for {alert.tenant} {alert.day}: {alert.what}: sent to {sent} destination(s)")
        return None

    @dg.sensor(
        name="activity_alerts_standing",
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"storage"},
        description="Sends an alert, once, for a warning still standing past the settle window and for days about "
        "to leave the service's retention unstored.",
    )
    def standing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        # A cursor of an older release was the list of keys said.
        said = state.get("said", []) if isinstance(state, dict) else state
        now = time.time()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        demo = dict(tenants)
        rotation = Rotation(
            state.get("looked") if isinstance(state, dict) else None, list(demo), every=3600,
            budget=TICK_BUDGET_SECONDS, now=now,
        )  # fmt: skip
        found = []
        for tenant in rotation:
            try:
                found += standing_alerts(
                    context.instance, context.resources.storage, activities, grid, [(tenant, demo[tenant])], today
                )
            except Exception as exc:  # one tenant's storage failing never stops the others
                context.log.warning(f"standing alerts of {tenant} not looked at: {' '.join(str(exc).split())[:300]}")
        new = [a for a in found if a.key not in said]
        for alert in new:
            deliver(alert, destinations, context.log)
            said.append(alert.key)
        return dg.SensorResult(
            skip_reason=None if new else dg.SkipReason("nothing new is standing"),
            cursor=json.dumps({"said": said[-_SENT_KEPT:], "looked": rotation.cursor()}),
        )

    return [failed_runs, standing]
