"""`make demo`: each demo tenant's daily job for the last 3 complete UTC days, then a report.

Each tenant and day is a run of `daily_activities` for its partition DAY|TENANT (scan to Parquet, the checks, the
DuckDB views) through the instance in DAGSTER_HOME, so the runs show up in `make ui` afterwards. The Makefile
configures two demo tenants (deploy/local/demo-tenants.yaml) unless a tenant is configured.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import textwrap

import dagster as dg
import duckdb

from activity_pipeline import config

DAYS = 3
EXAMPLE = """SELECT tenant, app_name, count(*) AS activities, count(DISTINCT user_name) AS users,
       count(*) FILTER (WHERE is_success = false) AS failures
FROM activities GROUP BY tenant, app_name
QUALIFY row_number() OVER (PARTITION BY tenant ORDER BY count(*) DESC) <= 3
ORDER BY tenant, activities DESC"""
ERRORS_ONLY = {"loggers": {"brief": {"config": {"log_level": "ERROR"}}}}


def main() -> int:
    settings = config.load()
    real = [t.name for t in settings.tenants if not t.uses_demo_tenant]
    if real:
        print(
            f"make demo reads built-in demo tenants only, and {', '.join(real)} is a real one; unset MDCA_API_URL "
            "and ACTIVITY_TENANTS_FILE to run it.",
            file=sys.stderr,
        )
        return 2
    from activity_pipeline.components.automation import JOB
    from activity_pipeline.components.checks import CHECKS
    from activity_pipeline.components.partitions import key
    from activity_pipeline.launch import INTERRUPTED, handle_stop_signals, launch, was_interrupted
    from activity_pipeline.run_summary import check_evaluations, run_line, verdict_of

    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=k) for k in range(DAYS, 0, -1)]
    tenants = [t.name for t in settings.tenants]
    instance = dg.DagsterInstance.get()
    data_dir = settings.data_dir
    print(f"demo: tenants {', '.join(tenants)}, {days[0]} .. {days[-1]}, into {data_dir}", flush=True)
    handle_stop_signals()
    outcomes: dict[tuple[str, dt.date], str] = {}
    warnings: dict[str, int] = {}
    skipped: dict[str, int] = {}
    failed = 0
    for tenant in tenants:
        for day in days:
            # A run of the code location `make ui` shows, so that it is on the UI's Overview timeline too.
            # Errors as they happen; one line per run below, and each warning once at the end.
            try:
                run = launch(instance, JOB, str(key(day, tenant)), ERRORS_ONLY)
            except KeyboardInterrupt:
                run = None
            if run is None or was_interrupted(instance, run):
                print(f"  {tenant} {day}: interrupted; the day is as it was. make demo runs it again.", flush=True)
                return INTERRUPTED
            failed += run.status != dg.DagsterRunStatus.SUCCESS
            print(f"  {run_line(instance, run, len(CHECKS))}", flush=True)
            for message in _warnings(instance, run.run_id):
                warnings[message] = warnings.get(message, 0) + 1
            # A planned check that yielded nothing had nothing to judge: Skipped, as the UI shows it.
            verdicts = dict.fromkeys(CHECKS, "skipped")
            for e in check_evaluations(instance, run.run_id):
                verdicts[e.check_name] = verdict_of(e)
            outcomes[tenant, day] = _checks_column(verdicts)
            for name, verdict in verdicts.items():
                if verdict == "skipped":
                    skipped[name] = skipped.get(name, 0) + 1
    database = data_dir / "activities.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        query = "SELECT tenant, date, rows_stored, source_total_at_last_check, drift FROM partition_health"
        health = {(row[0], row[1]): row[2:] for row in con.execute(query).fetchall()}
        print(f"\n{'tenant':<10}{'day':<12}{'stored':>9}{'at source':>11}{'drift':>7}  checks")
        for tenant, day in outcomes:
            stored, source, drift = health.get((tenant, day), (0, None, None))
            print(f"{tenant:<10}{day!s:<12}{stored:>9,}{source or 0:>11,}{drift or 0:>7}  {outcomes[tenant, day]}")
        if skipped:
            # Which checks had nothing to judge yet (each run's log says why: too few days before it, say).
            said = ", ".join(f"{name} ({n} of {len(outcomes)} runs)" for name, n in skipped.items())
            print(textwrap.fill(f"skipped: {said}", width=118, subsequent_indent="  "))
        print(f"\n{database}\n{EXAMPLE};")
        print(con.sql(EXAMPLE))
    if warnings:
        print("\nWarnings, each once:")
        for message, runs in warnings.items():
            print(textwrap.fill(f"({runs} of {len(outcomes)} runs) {message}", width=118, initial_indent="  ",
                                subsequent_indent="    "))  # fmt: skip
    print(f"\nTry it yourself:\n  .venv/bin/duckdb {database}")
    print(f"  make run DAY={days[-1]} TENANT={tenants[-1]}   # one day again, headless, into the same instance")
    print("  make ui                       # the Dagster UI over the same instance, http://127.0.0.1:3000")
    print("  make verify                   # read every stored day again against the digests taken as it was written")
    if failed:
        print(f"{failed} run(s) failed; see the logs above.")
    return 1 if failed else 0


def _checks_column(verdicts: dict[str, str]) -> str:
    """`7 pass, 3 skipped`, and the checks that did not pass by name: one short column of the table.

    >>> _checks_column({"a": "pass", "b": "skipped", "c": "warn"})
    '1 pass, 1 skipped, 1 warn (c)'
    """
    counts: dict[str, int] = {}
    for verdict in verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    shown = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items(), key=lambda kv: _ORDER.index(kv[0])))
    failing = [name for name, verdict in verdicts.items() if verdict in ("warn", "error")]
    return shown + (f" ({', '.join(failing)})" if failing else "")


_ORDER = ["pass", "skipped", "warn", "error"]


def _warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's warnings, each once, with what differs from run to run (a demo tenant's port) taken out."""
    found: list[str] = []
    for entry in instance.all_logs(run_id):
        if entry.level >= logging.WARNING and entry.level < logging.ERROR:
            text = entry.user_message if entry.dagster_event is None else entry.dagster_event.message or ""
            message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", " ".join(text.split()))
            if message not in found:
                found.append(message)
    return found


if __name__ == "__main__":
    sys.exit(main())
