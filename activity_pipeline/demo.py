"""`make demo`: materialize the last complete UTC days from the demo tenant through Dagster, then report.

Runs go through the instance in DAGSTER_HOME, so they show up in `make ui` afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import warnings

import dagster as dg
import pyarrow.parquet as pq

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec

DAYS = 3


def main() -> int:
    if os.environ.get("MDCA_API_URL"):
        print("make demo reads the built-in demo tenant; unset MDCA_API_URL to run it.", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from activity_pipeline.definitions import defs

    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=k) for k in range(DAYS, 0, -1)]
    instance = dg.DagsterInstance.get()
    job = defs.get_implicit_global_asset_job_def()
    storage = defs.resources["storage"]
    data_dir = storage.path  # type: ignore[attr-defined]
    print(f"demo: materializing activities for {days[0]} .. {days[-1]} into {data_dir}")
    failed = 0
    for day in days:
        result = job.execute_in_process(
            instance=instance, partition_key=day.isoformat(), asset_selection=[dg.AssetKey("activities")],
            raise_on_error=False,
        )  # fmt: skip
        failed += not result.success
    mdca = defs.resources["mdca"]
    truth = DemoTenant(TenantSpec(days=tuple(days), activities_per_day=mdca.demo_activities_per_day))  # type: ignore[attr-defined]
    print(f"\n{'day':<12}{'stored':>10}{'in tenant now':>15}  files")
    for day in days:
        folder = data_dir / "activities" / f"date={day}"
        rows = pq.read_table(folder).num_rows if folder.exists() else 0
        files = ", ".join(sorted(p.name for p in folder.glob("*.parquet")))
        print(f"{day!s:<12}{rows:>10,}{truth.truth_count(day):>15,}  {files}")
    print(
        "\nLate records (created after the scan) arrive for up to three days; a re-run of a day picks them up."
        if not failed
        else f"\n{failed} run(s) failed; see the logs above."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
