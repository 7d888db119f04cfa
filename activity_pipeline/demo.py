"""`make demo`: the daily job for the last 3 complete UTC days from the demo tenant, then a report.

Each day runs `daily_activities` (scan to Parquet, the checks, the DuckDB views) through the instance in
DAGSTER_HOME, so the runs show up in `make ui` afterwards.
"""

from __future__ import annotations

import datetime as dt
import sys

import dagster as dg
import duckdb

from activity_pipeline import config

DAYS = 3
EXAMPLE = """SELECT app_name, count(*) AS activities, count(DISTINCT user_name) AS users,
       count(*) FILTER (WHERE is_success = false) AS failures
FROM activities GROUP BY ALL ORDER BY activities DESC LIMIT 5"""


def main() -> int:
    settings = config.load()
    if not settings.uses_demo_tenant:
        print("make demo reads the built-in demo tenant; unset MDCA_API_URL to run it.", file=sys.stderr)
        return 2
    from activity_pipeline.definitions import defs
    from activity_pipeline.defs.checks import CHECKS

    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=k) for k in range(DAYS, 0, -1)]
    instance = dg.DagsterInstance.get()
    job = defs().resolve_job_def("daily_activities")
    data_dir = settings.data_dir
    print(f"demo: running daily_activities for {days[0]} .. {days[-1]} into {data_dir}", flush=True)
    outcomes: dict[dt.date, list[str]] = {}
    failed = 0
    for day in days:
        result = job.execute_in_process(
            instance=instance,
            partition_key=day.isoformat(),
            raise_on_error=False,
            # Progress and warnings, not every engine event.
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        failed += not result.success
        # A planned check that yielded nothing had nothing to judge: Skipped, as the UI shows it.
        verdicts = dict.fromkeys(CHECKS, "skipped")
        for e in result.get_asset_check_evaluations():
            verdicts[e.check_name] = "pass" if e.passed else e.severity.value.lower()
        outcomes[day] = [f"{name}={verdict}" for name, verdict in verdicts.items()]
    database = data_dir / "activities.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        query = "SELECT date, rows_stored, source_total_at_last_check, drift FROM partition_health"
        health = {row[0]: row[1:] for row in con.execute(query).fetchall()}
        print(f"\n{'day':<12}{'stored':>9}{'at source':>11}{'drift':>7}  checks")
        for day in days:
            stored, source, drift = health.get(day, (0, None, None))
            print(f"{day!s:<12}{stored:>9,}{source or 0:>11,}{drift or 0:>7}  {' '.join(sorted(outcomes[day]))}")
        print(f"\n{database}\n{EXAMPLE};")
        print(con.sql(EXAMPLE))
    print(f"Try it yourself:\n  .venv/bin/duckdb {database}")
    print(f"  make run DAY={days[-1]}        # one day again, headless, into the same instance")
    print("  make ui                       # the Dagster UI over the same instance, http://127.0.0.1:3000")
    if failed:
        print(f"{failed} run(s) failed; see the logs above.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
