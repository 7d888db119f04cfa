"""A night of many tenants (issue 33): 300 demo tenants of 1,000 activities each, yesterday of every one, through
`dagster-daemon` under the shipped local instance (deploy/local/dagster.yaml: at most 4 runs at once, one run of a
tenant at a time).

The runs are what the 02:15 schedule asks for (one per tenant, yesterday's partition `DAY|TENANT`); they are
submitted as a backfill of those 300 partitions (`dagster job backfill --partitions`), since the schedule's tick
cannot be called up on demand, and the daemon queues and launches them (a process per run, the default launcher).
Each run is the whole daily job: the scan (the tenant's demo server starts in the run's process), the ten checks,
the DuckDB views.

Figures: the number of runs, their outcomes, every day exact (stored ids against the tenant's own), the wall time
from submission to the last run's end, the machine's CPU (the daemon, its code server and the runs, from
/proc/stat, on an otherwise idle machine), and per run: its start-up and its steps.

Run: .venv/bin/python -m bench.night [--tenants 300] [--activities 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from activity_pipeline_testing.helpers import ready_instance


def busy_seconds() -> float:
    """The machine's CPU seconds spent busy so far (/proc/stat: user, nice, system, irq, softirq, steal), whichever
    process spent them: the daemon, its code server and the run processes it launched, none of which this process
    waits for. Run on an otherwise idle machine."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tenants", type=int, default=300)
    p.add_argument("--activities", type=int, default=1000)
    a = p.parse_args()
    import dagster as dg
    import pyarrow.parquet as pq

    from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
    from activity_pipeline.storage.local import LocalStore

    repo = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    names = [f"t{i:04d}" for i in range(a.tenants)]
    with tempfile.TemporaryDirectory() as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        home.mkdir()
        shutil.copy(repo / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
        tenants = Path(tmp) / "tenants.yaml"
        tenants.write_text(
            "tenants:\n"
            + "".join(f"  - {{name: {n}, demo: {{seed: {i + 1}, activities_per_day: {a.activities}}}}}\n"
                      for i, n in enumerate(names))
        )  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_", "DAGSTER_HOME"))},
            "DAGSTER_HOME": str(home),
            "ACTIVITY_DATA_DIR": str(data),
            "ACTIVITY_TENANTS_FILE": str(tenants),
        }
        ready_instance(env)
        workspace = ["-w", str(repo / "workspace.yaml")]
        daemon = subprocess.Popen(
            [str(bin_dir / "dagster-daemon"), "run", *workspace], env=env, cwd=repo,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        cpu_before = busy_seconds()
        try:
            t0 = time.monotonic()
            subprocess.run(
                [str(bin_dir / "dagster"), "job", "backfill", *workspace, "-j", "daily_activities",
                 "--partitions", ",".join(f"{day}|{n}" for n in names), "--noprompt"],
                env=env, cwd=repo, check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            instance = dg.DagsterInstance.from_config(str(home))
            done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            deadline = time.monotonic() + 4 * 3600
            runs: list = []
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                if len(runs) == a.tenants and all(r.status in done for r in runs):
                    break
                time.sleep(5)
            wall = time.monotonic() - t0
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=120)
        cpu = busy_seconds() - cpu_before
        statuses: dict[str, int] = {}
        for run in runs:
            statuses[run.status.value] = statuses.get(run.status.value, 0) + 1
        # Every day exact: each tenant's stored ids are its demo tenant's ids for the day, each once.
        exact = 0
        for i, name in enumerate(names):
            store = LocalStore(data, name)
            manifest = store.manifest(day)
            if manifest is None:
                continue
            # Exact as of the day's watermark (what the service held then: every record created up to it, once),
            # and nothing stored that the service did not hold by the end of the run.
            tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=a.activities, seed=i + 1))
            table = pq.read_table(store.paths.day_dir(day), columns=["id", "created"])
            ids = table["id"].to_pylist()
            created = [int(c.timestamp() * 1000) for c in table["created"].to_pylist()]
            upto = {i for i, c in zip(ids, created, strict=True) if c <= manifest.watermark_ms}
            held = tenant.truth_ids(day, now=int(time.time() * 1000))
            exact += (
                len(ids) == len(set(ids))
                and upto == tenant.truth_ids(day, now=manifest.watermark_ms)
                and set(ids) <= held
            )
        starts, steps = [], []
        for run in runs:
            stats = instance.get_run_stats(run.run_id)
            records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
            if stats.launch_time and stats.start_time and records:
                starts.append(min(r.event_log_entry.timestamp for r in records) - stats.launch_time)
            if stats.start_time and stats.end_time and records:
                steps.append(stats.end_time - min(r.event_log_entry.timestamp for r in records))
    print(f"night: {a.tenants} demo tenants of {a.activities:,} activities, yesterday ({day}) of each, through "
          f"dagster-daemon (deploy/local/dagster.yaml: 4 runs at once, one run of a tenant at a time)")  # fmt: skip
    print(f"night: {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
          f"{exact} of {a.tenants} days exact (every id the tenant held as of the day's watermark, once; none it "
          "did not hold)")  # fmt: skip
    print(f"night: {wall:.0f} s from submission to the last run's end ({wall / max(1, len(runs)):.1f} s a run); "
          f"the machine's CPU (daemon, code server, runs) {cpu:.0f} s ({cpu / max(1, len(runs)):.1f} s a run, "
          f"{cpu / wall / (os.cpu_count() or 1):.0%} of the machine's {os.cpu_count()} cores)")  # fmt: skip
    if starts and steps:
        print(f"night: a run's launch to its first step, median {statistics.median(starts):.1f} s; its steps (scan, "
              f"checks, views), median {statistics.median(steps):.1f} s")  # fmt: skip
    return 0 if exact == a.tenants else 1


if __name__ == "__main__":
    sys.exit(main())
