"""One line for a finished run of a tenant's day: its outcome, the activities stored, requests, seconds, and the
checks' verdicts. `make run` and `make backfill` print it after each run, `make demo` after each of its runs.

    python -m activity_pipeline.run_summary daily_activities 2026-11-24 contoso
    contoso 2026-11-24: SUCCESS, 19,926 activities stored, 6 requests, 12.3 s; checks: 6 pass, 2 skipped
"""

from __future__ import annotations

import sys

import dagster as dg


def verdict_of(evaluation: dg.AssetCheckEvaluation) -> str:
    """`pass`, `warn` or `error`; `skipped` for a check that said it had nothing to judge yet."""
    from activity_pipeline.components.checks import judged

    if not judged(evaluation):
        return "skipped"
    return "pass" if evaluation.passed else evaluation.severity.value.lower()


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
    failed: list[tuple[int, str]] = []
    for evaluation in check_evaluations(instance, run.run_id):
        verdict = verdict_of(evaluation)
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if not evaluation.passed:
            # Warnings first, errors last: the line ends with what failed the run.
            rank = 0 if evaluation.severity == dg.AssetCheckSeverity.WARN else 1
            failed.append((rank, f"{evaluation.check_name}: {evaluation.description or 'failed'}"))
    cause = failure_cause(instance, run.run_id)
    if checks > sum(verdicts.values()):
        verdicts["not run" if cause and not verdicts else "skipped"] = checks - sum(verdicts.values())
    summary = ", ".join(parts)
    if verdicts:
        summary += "; checks: " + ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items()))
    # The cause (and its fix) last: an expected failure's one line, or each failed check's numbers.
    if cause:
        summary += f". {cause}"
    for _rank, text in sorted(failed, key=lambda f: f[0]):
        summary += f". {' '.join(text.split())}"
    return f"{tenant} {day}: {summary}"


def failure_cause(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first failed step's cause, on one line (`components.console.failure_text`); None when no step failed."""
    from activity_pipeline.components.console import failure_text

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
            continue  # a blocking check failed: its own line (with its numbers) says why
        text = failure_text(event)
        if text:
            return text
    return None


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
    tenant's DAY.

    `python -m activity_pipeline.run_summary --failed JOB TENANT:DAY...`: what make prints last when runs failed,
    each failed run's line (its cause and fix last), to stderr."""
    if argv and argv[0] == "--job":
        # A job without partitions (`make retention`): its latest run's outcome, and the cause when it failed.
        runs = dg.DagsterInstance.get().get_runs(dg.RunsFilter(job_name=argv[1]), limit=1)
        if not runs:
            print(f"no run of {argv[1]} in this instance", file=sys.stderr)
            return 1
        cause = failure_cause(dg.DagsterInstance.get(), runs[0].run_id)
        print(f"{argv[1]}: {runs[0].status.value}" + (f". {cause}" if cause else ""))
        return 0 if runs[0].status == dg.DagsterRunStatus.SUCCESS else 1
    if argv and argv[0] == "--failed":
        job, pairs = argv[1], argv[2:]
        print(f"{len(pairs)} failed run{'s' if len(pairs) > 1 else ''} ({job}):", file=sys.stderr)
        for pair in pairs:
            tenant, _, day = pair.partition(":")
            line = _latest_line(dg.DagsterInstance.get(), job, day, tenant)
            print(line[0] if line else f"{tenant} {day}: no run in this instance", file=sys.stderr)
        return 1
    job, day, tenant = argv
    found = _latest_line(dg.DagsterInstance.get(), job, day, tenant)
    if found is None:
        print(f"no run of {job} for {tenant} {day} in this instance", file=sys.stderr)
        return 1
    print(found[0])
    return 0 if found[1] else 1


def _latest_line(instance: dg.DagsterInstance, job: str, day: str, tenant: str) -> tuple[str, bool] | None:
    """The line of the latest run of `job` for the tenant's day, and whether it needs no one."""
    from activity_pipeline.components.checks import CHECKS
    from activity_pipeline.components.partitions import key

    runs = instance.get_runs(dg.RunsFilter(job_name=job, tags={"dagster/partition": str(key(day, tenant))}), limit=1)
    if not runs:
        return None
    line = run_line(instance, runs[0], len(CHECKS) if job in ("daily_activities", "check_day") else 0)
    # A day stored with records in quarantine needs a person: make run says so in its exit status.
    ok = runs[0].status == dg.DagsterRunStatus.SUCCESS and not stored_quarantined(instance, runs[0].run_id)
    return line, ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
