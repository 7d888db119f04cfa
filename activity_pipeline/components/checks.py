"""Partition-aware checks on `activities`: is each tenant's stored day complete, unique, in range, well formed?

The ten checks run as one step that reads the day once (`@dg.multi_asset_check`, `can_subset=True`).
Each reports `actual`, `expected` and `diff` in its metadata. A check with nothing to judge yields no
result: Dagster shows it as Skipped, and the step's log says why. The two ERROR checks marked blocking stop
`activities_duckdb` in the same run when they fail.
"""

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from typing import Any

import dagster as dg
import numpy as np

from activity_pipeline.components.partitions import TenantDays, partition_day, partition_tenant, run_start
from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantResource
from activity_pipeline.days import SETTLE_DAYS, day_window
from activity_pipeline.ingest import filters_changed_message
from activity_pipeline.mdca import MdcaClient
from activity_pipeline.mdca.filters import describe
from activity_pipeline.service_window import RESCUE_MARGIN_DAYS, SERVICE_WINDOW_DAYS, DayAtRisk, at_risk
from activity_pipeline.storage.core import TenantStore
from activity_pipeline.storage.facts import DayFacts
from activity_pipeline.storage.integrity import Verification
from activity_pipeline.storage.manifest import Manifest

TRAILING_DAYS = 7
# An hour with no rows is suspicious only if that hour usually carries at least this many.
SILENT_HOUR_MIN_AVERAGE = 20
# Of the TRAILING_DAYS days before, this many must be stored before the history-based checks judge at all.
MIN_HISTORY_DAYS = 3

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@dataclasses.dataclass
class Evidence:
    """What the checks of one day look at, read once."""

    tenant: str
    facts: DayFacts
    # Manifests of the stored days among the TRAILING_DAYS before this one.
    history: dict[dt.date, Manifest]
    # Opens a client for the source's count, only when count_matches_source runs.
    client: Callable[[], AbstractContextManager[MdcaClient]] | None = None
    storage: ActivityStorage | None = None
    # The tenant's days that leave the service's retention soon and are missing or incomplete, as of the run's
    # start; None when the check that reads them is not selected.
    at_risk: list[DayAtRisk] | None = None
    # The tenant's API filters now (`mdca.filters`); each stored day's manifest says which it was collected under.
    filters: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The day's last verification (`make verify`, the weekly activities_verification job), if any.
    verification: Verification | None = None
    # The day has not ended (today): what needs the whole day waits for it.
    in_progress: bool = False


@dataclasses.dataclass
class Verdict:
    passed: bool
    severity: dg.AssetCheckSeverity
    metadata: dict[str, Any]
    description: str | None = None


# A judge returns a verdict, or the reason it has nothing to judge (the check is then Skipped).
Judge = Callable[[Evidence], "Verdict | str"]


def _missing(day: dt.date, severity: dg.AssetCheckSeverity) -> Verdict:
    return Verdict(False, severity, {"actual": 0, "expected": "a stored day", "diff": "day missing"},
                   f"{day} has not been materialized: nothing is stored for it")  # fmt: skip


def _none_found(count: int, description: str | None = None, **metadata: Any) -> Verdict:
    """An ERROR verdict that passes when `count`, of things that must not exist, is 0."""
    return Verdict(count == 0, ERROR, {"actual": count, "expected": 0, "diff": count, **metadata}, description)


def _iso(ms: int | None) -> str:
    return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def count_matches_source(e: Evidence) -> Verdict | str:
    facts, day = e.facts, e.facts.day
    assert e.client is not None and e.storage is not None
    start, end = day_window(day)
    watermark = facts.watermark_ms
    # Counted under the filters the day was collected under (the tenant's, for a day not stored): exact either
    # way. A day stored under other filters than the tenant's now is collected_under_current_filters' to flag.
    under = facts.manifest.filters if facts.manifest is not None else None
    with e.client() as client:
        total = client.count(start, end, under=under)
        # As of the watermark the stored day must be exact: every record created by then was there to scan.
        at_watermark = (
            total if watermark is None else client.count(start, end, {"created": {"lte": watermark}}, under=under)
        )
    stored = facts.rows if watermark is None else (facts.rows_at_watermark or 0)
    # Records received but kept in quarantine (no usable `_id` or `timestamp`) are at the source and not rows:
    # they close the gap as far as they go, and no_quarantined_records reports them.
    quarantined = facts.quarantined
    diff = stored + quarantined - at_watermark
    # At the source, not (yet) stored: created after the watermark, for the late-arrivals sensor to top up.
    pending = max(0, total - facts.rows - quarantined)
    as_of = "" if watermark is None else f" created up to {_iso(watermark)}"
    settled = watermark is not None and dt.datetime.fromtimestamp(watermark / 1000, dt.UTC).date() > day + dt.timedelta(
        days=SETTLE_DAYS
    )
    kept = f" ({stored:,} stored and {quarantined:,} in quarantine)" if quarantined else ""
    if not facts.exists:
        verdict = Verdict(False, ERROR, {}, f"{day} is not stored; the source holds {total:,}")
    elif (damage := facts.damage()) is not None:
        verdict = Verdict(False, ERROR, {}, damage)
    elif diff < 0:
        note = f"{-diff:,} activities{as_of} at the source are not stored{kept}: a real gap (the scan lost records); "
        verdict = Verdict(False, ERROR, {}, note + f"scan it again in full: make run DAY={day} TENANT={e.tenant} "
                          "FULL_RESCAN=1 (from the UI: a run tagged activity_pipeline/full_rescan=true)")  # fmt: skip
    elif diff > 0:
        verdict = Verdict(False, ERROR, {}, f"{diff:,} more rows{as_of} stored{kept} than the source reports")
    elif pending and settled:
        verdict = Verdict(False, WARN, {}, f"{pending:,} activities created after the watermark are still not "
                          f"stored, more than {SETTLE_DAYS} days on: top the day up "
                          f"(make run DAY={day} TENANT={e.tenant})")  # fmt: skip
    else:
        late = f"; {pending:,} created since, for the late-arrivals sensor to top up" if pending else ""
        held = f" ({quarantined:,} of them in quarantine, see no_quarantined_records)" if quarantined else ""
        verdict = Verdict(True, ERROR, {}, f"all {at_watermark:,} activities{as_of} stored{held}{late}")
    verdict.metadata = {
        "actual": stored,
        "expected": at_watermark,
        "diff": diff,
        "quarantined": quarantined,
        "watermark": dg.MetadataValue.timestamp(watermark / 1000) if watermark is not None else "none",
        "source_total_now": total,
        "pending_after_watermark": pending,
        "source_total_at_scan": facts.manifest.source_total_at_scan if facts.manifest is not None else None,
    }
    # The one thing a check leaves behind: its finding, for the partition_health view.
    e.storage.record_count_check(
        e.tenant, day, source_total=total, rows_checked=facts.rows, passed=verdict.passed or verdict.severity == WARN,
        watermark_ms=watermark, pending=pending, filters=describe(under or {}),
    )  # fmt: skip
    return verdict


def _damaged(facts: DayFacts) -> Verdict | None:
    """An ERROR naming the files that cannot be read: what they hold cannot be judged, nor served."""
    damage = facts.damage()
    if damage is None:
        return None
    return Verdict(False, ERROR, {"unreadable_files": ", ".join(sorted(facts.unreadable))}, damage)


def ids_unique(e: Evidence) -> Verdict | str:
    facts = e.facts
    if not facts.exists:
        return _missing(facts.day, ERROR)
    if (damaged := _damaged(facts)) is not None:
        return damaged
    dups = facts.duplicate_ids
    return _none_found(dups, f"{dups:,} duplicate rows" if dups else "every id once", rows=facts.rows)


def timestamps_in_partition(e: Evidence) -> Verdict | str:
    facts = e.facts
    if not facts.exists:
        return _missing(facts.day, ERROR)
    if (damaged := _damaged(facts)) is not None:
        return damaged
    start, end = day_window(facts.day)
    window = f"[{_iso(start)}, {_iso(end)})"
    return _none_found(facts.outside, min_timestamp=_iso(facts.min_ms), max_timestamp=_iso(facts.max_ms), window=window)


def no_quarantined_records(e: Evidence) -> Verdict | str:
    facts = e.facts
    if not facts.exists:
        return _missing(facts.day, ERROR)
    n = facts.quarantined
    where = f"{facts.manifest.tenant or ''} {facts.day}".strip() if facts.manifest is not None else str(facts.day)
    return _none_found(
        n,
        f"{n:,} records of {where} had no usable _id or timestamp: kept exactly as received in the day's "
        "_quarantine.jsonl, not in the table or the views"
        if n
        else None,
    )


def schema_matches(e: Evidence) -> Verdict | str:
    facts = e.facts
    if not facts.exists:
        return _missing(facts.day, ERROR)
    if (damaged := _damaged(facts)) is not None:
        return damaged
    bad = facts.schema_mismatches
    return _none_found(len(bad), files_with_other_schema=", ".join(bad))


def _too_little_history(e: Evidence) -> Verdict | str | None:
    if e.in_progress:
        return f"{e.facts.day} is in progress: it is judged against the days before once it ends (00:00 UTC)"
    if not e.facts.exists or e.facts.manifest is None:
        return _missing(e.facts.day, WARN)
    if len(e.history) < MIN_HISTORY_DAYS:
        return (
            f"only {len(e.history)} of the {TRAILING_DAYS} days before {e.facts.day} are stored; "
            f"it judges once {MIN_HISTORY_DAYS} of them are"
        )
    return None


def no_unexpected_silent_hours(e: Evidence) -> Verdict | str:
    if (early := _too_little_history(e)) is not None:
        return early
    today = np.array(e.facts.manifest.hourly)  # type: ignore[union-attr]
    average = np.mean([m.hourly for m in e.history.values()], axis=0)
    silent = [h for h in range(24) if today[h] == 0 and average[h] >= SILENT_HOUR_MIN_AVERAGE]
    metadata = {
        "actual": len(silent),
        "expected": 0,
        "diff": len(silent),
        "silent_hours_utc": str(silent),
        "trailing_average_of_those_hours": str([round(float(average[h]), 1) for h in silent]),
        "trailing_days": len(e.history),
    }
    return Verdict(
        not silent, WARN, metadata, f"silent hours (UTC) that are usually busy: {silent}" if silent else None
    )


def apps_still_reporting(e: Evidence) -> Verdict | str:
    if (early := _too_little_history(e)) is not None:
        return early
    regular = set.intersection(*(set(m.apps) for m in e.history.values())) - {"None"}
    today = set(e.facts.manifest.apps)  # type: ignore[union-attr]
    missing = sorted(regular - today, key=int)
    metadata = {
        "actual": len(regular & today),
        "expected": len(regular),
        "diff": -len(missing),
        "missing_app_ids": ", ".join(missing),
        "trailing_days": len(e.history),
    }
    note = f"apps that reported every trailing day but not today: {missing}" if missing else None
    return Verdict(not missing, WARN, metadata, note)


def collected_under_current_filters(e: Evidence) -> Verdict | str:
    """The day's filters (its manifest) against the tenant's now: a day of other filters is not silently mixed."""
    manifest = e.facts.manifest
    if manifest is None:
        return "nothing is stored for the day"
    stored, now = describe(manifest.filters), describe(e.filters)
    metadata = {"actual": stored or "none", "expected": now or "none", "diff": "same" if stored == now else "changed"}
    if stored == now:
        return Verdict(True, WARN, metadata, f"collected under {'the filters ' + now if now else 'no filters'}")
    return Verdict(False, WARN, metadata, filters_changed_message(e.facts.day, manifest.filters, e.filters))


def no_days_leaving_retention_unstored(e: Evidence) -> Verdict | str:
    """The tenant's risk, not the day's: every run's checks say it again, so the latest partition shows it."""
    risky = e.at_risk or []
    listed = ", ".join(f"{r.day} ({r.state}, {r.days_left} days left)" for r in risky[:10])
    more = f" and {len(risky) - 10} more" if len(risky) > 10 else ""
    metadata = {"actual": len(risky), "expected": 0, "diff": len(risky), "days": listed + more}
    note = (
        f"{len(risky)} days of {e.tenant} leave the service's {SERVICE_WINDOW_DAYS} days within {RESCUE_MARGIN_DAYS} "
        f"and are not stored whole: {listed}{more}. The service_window_rescue sensor runs them; or "
        f"make backfill FROM={risky[0].day} TO={risky[-1].day} TENANT={e.tenant}"
        if risky
        else None
    )
    return Verdict(not risky, WARN, metadata, note)


def stored_files_intact(e: Evidence) -> Verdict | str:
    """The day's last verification, when it read the version stored now."""
    manifest, v = e.facts.manifest, e.verification
    if manifest is None:
        return _missing(e.facts.day, ERROR)
    if v is None or v.version != manifest.run_id:
        return (
            f"the version stored now (written by run {manifest.run_id}) has not been read again since it was written "
            "(it was checked before its commit); the weekly activities_verification job reads it, or make verify "
            f"DAY={e.facts.day} TENANT={e.tenant} now"
        )
    return Verdict(v.intact, ERROR, verification_metadata(v), "; ".join(v.problems) or None)


def verification_metadata(v: Verification) -> dict[str, Any]:
    """What stored_files_intact shows of a verification, from the daily job's checks and the verification job."""
    return {"actual": len(v.problems), "expected": 0, "diff": len(v.problems), "verified_at": v.verified_at,
            "files": v.files, "rows": v.rows, "written_before_digests": v.undigested}  # fmt: skip


# name: (judge, blocking, what passing means: the UI's description)
CHECKS: dict[str, tuple[Judge, bool, str]] = {
    "count_matches_source": (count_matches_source, True,
        "Rows stored for the day that were created up to its watermark equal the API's own list-mode count of "
        "the day's records created up to it, asked at check time. Records created later are reported as "
        f"pending; still pending {SETTLE_DAYS} days on, they are a warning."),
    "ids_unique": (ids_unique, True, "No `id` appears twice in the day."),
    "timestamps_in_partition": (timestamps_in_partition, False,
        "Every row's timestamp falls inside the partition's UTC day."),
    "no_quarantined_records": (no_quarantined_records, False,
        "The day's quarantine file holds nothing: every record had an `_id` and a `timestamp`."),
    "schema_matches": (schema_matches, False,
        "Every file of the day has the documented schema, and every column the checks read decodes."),
    "no_unexpected_silent_hours": (no_unexpected_silent_hours, False,
        f"No hour is empty when that hour averaged at least {SILENT_HOUR_MIN_AVERAGE} rows over the stored days "
        f"among the {TRAILING_DAYS} before (judged once {MIN_HISTORY_DAYS} of them are stored)."),
    "apps_still_reporting": (apps_still_reporting, False,
        f"Every app that reported on each stored day among the {TRAILING_DAYS} before also reported on this day "
        f"(judged once {MIN_HISTORY_DAYS} of them are stored)."),
    "collected_under_current_filters": (collected_under_current_filters, False,
        "The day was collected under the tenant's API filters as they are now (`filters:`, MDCA_FILTERS); a day "
        "stored under others is collected again with activity_pipeline/full_rescan=true."),
    "no_days_leaving_retention_unstored": (no_days_leaving_retention_unstored, False,
        f"No day of the tenant leaves the service's {SERVICE_WINDOW_DAYS}-day window within {RESCUE_MARGIN_DAYS} days "
        "while missing or incomplete (the tenant's risk as of the run, shown on every day's checks)."),
    "stored_files_intact": (stored_files_intact, False,
        "When the day was last read again (make verify, the weekly activities_verification job), every file was "
        "as written: the same bytes (SHA-256), every column decoding, the rows its manifest records."),
}  # fmt: skip
_HISTORY = {"no_unexpected_silent_hours", "apps_still_reporting"}
# A check with nothing to judge yet (too few days before it, a day in progress) says so in its result: passed, with
# this description and `judged: false` in its metadata; `judged` (below) tells such a result from a real pass.
NOT_JUDGED, JUDGED = "Not judged yet", "judged"


def judged(evaluation: dg.AssetCheckEvaluation) -> bool:
    """Whether the evaluation is a verdict, not a check saying it had nothing to judge yet."""
    value = evaluation.metadata.get(JUDGED)
    return getattr(value, "value", value) is not False


_RETENTION = "no_days_leaving_retention_unstored"


def build_checks(
    activities: dg.AssetsDefinition, grid: TenantDays, *, demo: Collection[str] = ()
) -> dg.AssetChecksDefinition:
    """The ten checks on `activities`, for every tenant's days, in one step a day. `demo`: the demo tenants, whose
    days are made again on demand, so that none is ever at risk of leaving the service's window."""

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                name, asset=activities, partitions_def=grid.partitions, blocking=blocking, description=text
            )
            for name, (_, blocking, text) in CHECKS.items()
        ],
        can_subset=True,
        name="activities_checks",
        description="The ten checks of a tenant's day, in one step that reads the stored day once.",
        required_resource_keys={MDCA, "storage"},
    )
    def activities_checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        storage: ActivityStorage = context.resources.storage
        tenant, day = partition_tenant(context), partition_day(context)
        store = storage.tenant(tenant)
        mdca: TenantResource = getattr(context.resources, MDCA)[tenant]
        wanted = {key.name for key in context.selected_asset_check_keys}
        watch = tenant not in demo and _RETENTION in wanted
        evidence = Evidence(
            tenant=tenant,
            facts=store.facts(day),
            history=store.trailing_manifests(day, TRAILING_DAYS) if wanted & _HISTORY else {},
            client=lambda: mdca.client(context.log),
            storage=storage,
            at_risk=_at_risk(context, store, grid.days_of(tenant)) if watch else [],
            filters=mdca.filters,
            verification=store.verification(day) if "stored_files_intact" in wanted else None,
            in_progress=day >= run_start(context).date(),
        )
        for name, (judge, _, _) in CHECKS.items():
            if name not in wanted:
                continue
            verdict = judge(evidence)
            if isinstance(verdict, str):
                context.log.info(f"{name} skipped for {tenant} {day}: {verdict}")
                # In the check's own result, for this day, so that the UI says why (Dagster has no verdict for
                # "not judged": it is a pass that says so, marked `judged: false`, never a gate).
                yield dg.AssetCheckResult(
                    asset_key=activities.key,
                    check_name=name,
                    passed=True,
                    severity=WARN,
                    description=f"{NOT_JUDGED}: {verdict}",
                    metadata={JUDGED: False},
                )
                continue
            yield dg.AssetCheckResult(
                asset_key=activities.key,
                check_name=name,
                passed=verdict.passed,
                severity=verdict.severity,
                description=verdict.description,
                metadata=verdict.metadata,
            )

    return activities_checks


def _at_risk(context: dg.AssetCheckExecutionContext, store: TenantStore, days: list[dt.date]) -> list[DayAtRisk]:
    """The tenant's days at risk as of the run's start (the clock is never read inside a check)."""
    today = run_start(context).date()
    return at_risk(days, today=today, stored=store.days(), incomplete=store.failed_days())
