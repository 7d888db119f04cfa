"""`activities_verification`: every stored day read again, weekly, whatever the backend (`activity_pipeline.verify`).

One job for all tenants. Its weekly run reads the days not read in the last four weeks (or replaced since, or
damaged last time), oldest-read first, one file at a time (bounded memory); each day's result is kept as it
goes, so a run that is stopped resumes where it was at the next. Each day's verdict is the tenant's
`stored_files_intact` check on that day; a damaged day fails the run, which the run-failure alert sends on,
naming each day and its repair.
"""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from activity_pipeline.components.checks import verification_metadata
from activity_pipeline.components.partitions import key, run_start
from activity_pipeline.components.resources import ActivityStorage
from activity_pipeline.config import TenantConfig
from activity_pipeline.storage.integrity import Verification
from activity_pipeline.verify import VERIFY_EVERY_DAYS, verify_days

JOB = "activities_verification"


class VerificationConfig(dg.Config):
    # One tenant (default: every one), one day (YYYY-MM-DD; default: every stored day).
    tenant: str = ""
    day: str = ""
    # Read every day named, not only those due (not read within VERIFY_EVERY_DAYS, replaced, or damaged).
    every_day: bool = False


def build_verification(
    tenants: Sequence[TenantConfig], activities: dg.AssetsDefinition
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """The job and its weekly schedule (Sunday 05:15 UTC, after the vacuum and the retention's deletions)."""
    by_name = {t.name: t for t in tenants}

    @dg.op(name="verify_stored_days", required_resource_keys={"storage"})
    def verify_stored_days(context: dg.OpExecutionContext, config: VerificationConfig) -> None:
        storage: ActivityStorage = context.resources.storage
        if config.tenant and config.tenant not in by_name:
            raise dg.Failure(
                description=f"no tenant named {config.tenant}; configured: {', '.join(by_name)}", allow_retries=False
            )
        chosen = [by_name[config.tenant]] if config.tenant else list(tenants)
        days = [dt.date.fromisoformat(config.day)] if config.day else None

        def on_verified(tenant: TenantConfig, v: Verification, fix: str | None) -> None:
            description = "; ".join(v.problems) + (f". Repair: {fix}" if fix else "") if not v.intact else None
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=activities.key,
                    check_name="stored_files_intact",
                    passed=v.intact,
                    severity=dg.AssetCheckSeverity.ERROR,
                    partition=str(key(v.day, tenant.name)),
                    description=description,
                    metadata=verification_metadata(v),
                )
            )

        done = verify_days(
            storage.tenant, chosen, days, now=run_start(context), report=context.log.info,
            only_due=not config.every_day and days is None, on_verified=on_verified,
        )  # fmt: skip
        damaged = [(t, v, fix) for t, v, fix in done if not v.intact]
        context.add_output_metadata(
            {
                "days_verified": len(done),
                "rows": sum(v.rows for _, v, _ in done),
                "bytes": sum(v.bytes for _, v, _ in done),
                "damaged_days": len(damaged),
            }
        )
        if damaged:
            raise dg.Failure(
                description=f"{len(damaged)} stored days are damaged: "
                + " | ".join(f"{t.name} {v.day}: {'; '.join(v.problems)}. Repair: {fix}" for t, v, fix in damaged),
                allow_retries=False,
            )

    @dg.job(
        name=JOB,
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "verification"},
        description="Read stored days again: each file's bytes against the digest taken when it was written, every "
        f"column decoded (the days not read within {VERIFY_EVERY_DAYS} days, or replaced, or damaged; every_day: "
        "all). A damaged day fails the run and shows on its stored_files_intact check.",
    )
    def verification_job() -> None:
        verify_stored_days()

    schedule = dg.ScheduleDefinition(
        name=f"{JOB}_schedule",
        job=verification_job,
        cron_schedule="15 5 * * 0",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return verification_job, schedule
