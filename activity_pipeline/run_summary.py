"""One line for a finished run of a tenant's day: its outcome, the activities stored, requests, seconds, and the
checks' verdicts. `make run` and `make backfill` print it after each run, `make demo` after each of its runs.

    python -m activity_pipeline.run_summary daily_activities 2026-11-24 contoso
    contoso 2026-11-24: SUCCESS, 19,926 activities stored, 6 requests, 12.3 s; checks: 6 pass, 2 skipped
"""

from __future__ import annotations

import sys

import dagster as dg


def run_line(instance: dg.DagsterInstance, run: dg.DagsterRun, checks: int) -> str:
    """The line for `run`, whose job plans `checks` checks (those without a verdict had nothing to judge)."""
    tenant = run.tags.get("dagster/partition/tenant") or run.tags.get("activity_pipeline/tenant", run.job_name)
    day = run.tags.get("dagster/partition/day") or run.tags.get("dagster/partition", "?")
    parts = [run.status.value]
    quarantined = stored_quarantined(instance, run.run_id)
    if quarantined:
        parts[0] += f" WITH {quarantined:,} RECORDS IN QUARANTINE"
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if "dagster/partition_row_count" in metadata:
            rows, requests = metadata["dagster/partition_row_count"].value, metadata["requests"].value
            parts.append(f"{rows:,} activities stored, {requests} requests, {metadata['seconds'].value} s")
            if quarantined:
                parts.append(
                    f"{quarantined:,} records without a usable _id or timestamp kept as received in "
                    f"{metadata['path'].value}/_quarantine.jsonl, not in the views"
                )
    verdicts: dict[str, int] = {}
    for evaluation in check_evaluations(instance, run.run_id):
        verdict = "pass" if evaluation.passed else evaluation.severity.value.lower()
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    if checks > sum(verdicts.values()):
        verdicts["skipped"] = checks - sum(verdicts.values())
    summary = ", ".join(parts)
    if verdicts:
        summary += "; checks: " + ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items()))
    return f"{tenant} {day}: {summary}"


def stored_quarantined(instance: dg.DagsterInstance, run_id: str) -> int:
    """Records the run's stored day holds in quarantine (none: 0), from its materialization."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if "quarantined" in metadata:
            return int(metadata["quarantined"].value)
    return 0


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    """The check verdicts the run recorded."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [record.event_log_entry.dagster_event.event_specific_data for record in records]  # type: ignore[union-attr,misc]


def main(argv: list[str]) -> int:
    """`python -m activity_pipeline.run_summary JOB DAY TENANT`: the line for the latest run of JOB for the
    tenant's DAY."""
    from activity_pipeline.components.checks import CHECKS
    from activity_pipeline.components.partitions import key

    job, day, tenant = argv
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(dg.RunsFilter(job_name=job, tags={"dagster/partition": str(key(day, tenant))}), limit=1)
    if not runs:
        print(f"no run of {job} for {tenant} {day} in this instance", file=sys.stderr)
        return 1
    print(run_line(instance, runs[0], len(CHECKS)))
    # A day stored with records in quarantine needs a person: make run says so in its exit status.
    ok = runs[0].status == dg.DagsterRunStatus.SUCCESS and not stored_quarantined(instance, runs[0].run_id)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
