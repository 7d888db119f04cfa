"""Today's activities within minutes: every tenant with `intraday_minutes` has today (and yesterday, until the
nightly run at 02:15 UTC) collected that often, by `created` since the day's watermark.

One run per interval collects every tenant that is due (`intraday_activities`), so the runs an instance makes do not
grow with the tenants. Each tenant's day is collected as any run collects it (`ingest.collect_day`: the first time
a full scan of the day so far, then top-ups; under the day's lock, exact as of each watermark, each id once), and
recorded as a materialization of its partition `DAY|TENANT`. A tenant that fails (a refused token, an outage) is
named and passed over; the others' days land, and the run fails at its end, naming it, so the alert says so.
"""

import concurrent.futures
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Sequence

import dagster as dg
import pydantic

from activity_pipeline.components.assets import RebuildViews
from activity_pipeline.components.automation import sensor_status
from activity_pipeline.components.partitions import TenantDays, key, run_start
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients
from activity_pipeline.components.rotation import Rotation
from activity_pipeline.config import TenantConfig
from activity_pipeline.ingest import collect_day
from activity_pipeline.storage.errors import DayLockedError

JOB = "intraday_activities"
# Until then each day, yesterday is collected intraday too: the nightly run (02:15 UTC) takes it over.
NIGHTLY = dt.time(2, 15)
# Tenants collected at once in one run: each waits mostly on its API.
WORKERS = 4


class IntradayConfig(dg.Config):
    # The tenants to collect (the sensor names those that are due); empty: every tenant with intraday_minutes.
    tenants: list[str] = pydantic.Field(default_factory=list)


@dataclasses.dataclass
class Intraday:
    job: dg.JobDefinition
    sensor: dg.SensorDefinition


def days_in_progress(now: dt.datetime) -> list[dt.date]:
    """The days an intraday run collects at `now`: today, and yesterday until the nightly run.

    >>> days_in_progress(dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC))
    [datetime.date(2026, 12, 4), datetime.date(2026, 12, 5)]
    >>> days_in_progress(dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC))
    [datetime.date(2026, 12, 5)]
    """
    today = now.astimezone(dt.UTC).date()
    yesterday = [today - dt.timedelta(days=1)] if now.astimezone(dt.UTC).time() < NIGHTLY else []
    return [*yesterday, today]


def build_intraday(
    tenants: Sequence[TenantConfig], activities: dg.AssetsDefinition, grid: TenantDays, views: RebuildViews
) -> Intraday | None:
    """The intraday job and the sensor that asks for it; None when no tenant collects intraday. A day in progress
    that is not one of a tenant's days (yesterday, when it starts today) is not collected for it.

    `views` builds the DuckDB file again after a run, when its views cannot see the new versions by themselves
    (`Dataset.views_follow_writes`: on object storage), or when there is none yet."""
    minutes = {t.name: t.intraday_minutes for t in tenants if t.intraday_minutes > 0}
    if not minutes:
        return None
    automated = {t.name for t in tenants if t.automation and t.name in minutes}

    @dg.op(name="collect_intraday", required_resource_keys={MDCA, "storage"})
    def collect(context: dg.OpExecutionContext, config: IntradayConfig) -> None:
        unknown = sorted(set(config.tenants) - set(minutes))
        if unknown:
            raise dg.Failure(
                description=f"not tenants that collect intraday: {', '.join(unknown)}; those that do: "
                f"{', '.join(minutes)}",
                allow_retries=False,
            )
        chosen = list(config.tenants) or list(minutes)
        now = run_start(context)
        days = {t: [d for d in days_in_progress(now) if grid.refusal(t, d, now.date()) is None] for t in chosen}
        clients: TenantClients = getattr(context.resources, MDCA)
        storage: ActivityStorage = context.resources.storage
        failures: dict[str, str] = {}
        with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="intraday") as pool:
            futures = {
                pool.submit(_collect_tenant, context, clients, storage, activities.key, tenant, days[tenant]): tenant
                for tenant in chosen
            }
            for future in concurrent.futures.as_completed(futures):
                tenant = futures[future]
                try:
                    future.result()
                except Exception as exc:  # one tenant's failure never stops another's collection
                    failures[tenant] = " ".join(str(exc).split())[:500]
                    context.log.error(f"tenant {tenant}: intraday collection failed: {failures[tenant]}")
        if len(failures) < len(chosen):
            views(context, storage, "rebuilt after an intraday collection", only_if_stale=True)
        if failures:
            raise dg.Failure(
                description=f"{len(failures)} of {len(chosen)} tenants were not collected: "
                + " | ".join(f"tenant {t}: {why}" for t, why in sorted(failures.items())),
                allow_retries=False,
            )

    @dg.job(
        name=JOB,
        executor_def=dg.in_process_executor,
        tags={"activity_pipeline/work": "intraday"},
        description="Today (and yesterday until its nightly run) of every tenant that is due, by `created` since "
        "each day's watermark; one run for all of them.",
    )
    def intraday_job() -> None:
        collect()

    @dg.sensor(
        name="intraday",
        job=intraday_job,
        minimum_interval_seconds=60,
        default_status=sensor_status(bool(automated)),
        description="Asks for one run of intraday_activities for the tenants whose intraday_minutes have passed "
        "since they were last asked for, unless one is still going.",
    )
    def intraday(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        going = context.instance.get_runs_count(dg.RunsFilter(job_name=JOB, statuses=_GOING))
        if going:
            return dg.SkipReason("an intraday run is still going: the tenants due wait for the next tick")
        now = time.time()
        # Each tenant's own interval: the rotation's `every` is per tenant, so one Rotation per interval.
        due: list[str] = []
        seen: dict[str, float] = {}
        cursor = context.cursor
        for interval in sorted(set(minutes.values())):
            names = [n for n in sorted(automated) if minutes[n] == interval]
            # Half a minute early: the sensor ticks about every minute, and a tenant due at 60 s must not wait 120.
            rotation = Rotation(cursor, names, every=interval * 60 - 30, budget=float("inf"), now=now)
            due += list(rotation)
            seen |= rotation.seen
        if not due:
            intervals = ", ".join(f"{m} min" for m in sorted(set(minutes.values())))
            return dg.SkipReason(f"no tenant is due (intervals: {intervals})")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"intraday:{int(now)}",
                    run_config={"ops": {"collect_intraday": {"config": {"tenants": due}}}},
                    tags={"activity_pipeline/tenants": str(len(due))},
                )
            ],
            cursor=json.dumps(seen, sort_keys=True),
        )

    return Intraday(intraday_job, intraday)


_GOING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _collect_tenant(
    context: dg.OpExecutionContext,
    clients: TenantClients,
    storage: ActivityStorage,
    asset: dg.AssetKey,
    tenant: str,
    days: list[dt.date],
) -> None:
    if not days:
        return
    store = storage.tenant(tenant)
    with clients.client(tenant, context.log) as client:
        for day in days:
            try:
                run_id = context.run.run_id[:12]
                result = collect_day(client, store, day, mode="auto", logger=context.log, run_id=run_id)
            except DayLockedError as exc:
                context.log.info(f"tenant {tenant} {day}: {exc}; the next interval collects it")
                continue
            how = "scanned so far" if result.mode == "full" else f"topped up with {result.added:,}"
            context.log.info(f"tenant {tenant} {day}: {how}, {result.rows:,} stored, {result.requests} requests")
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=asset,
                    partition=str(key(day, tenant)),
                    description=f"intraday: {how}",
                    metadata={
                        "dagster/partition_row_count": result.rows,
                        "mode": result.mode,
                        "added": result.added,
                        "intraday": True,
                        "watermark": dg.MetadataValue.timestamp((result.manifest.watermark_ms or 0) / 1000),
                        "requests": result.requests,
                        "seconds": round(result.seconds, 2),
                    },
                )
            )
