"""Many tenants (issue 13): 20 demo tenants, one 50,000-activity day each, materialized by concurrent runs.

Each tenant is a demo tenant in its own process, with its own data (seed) and token, listed in a tenants
file as a real tenant would be (`api_url`, `token_env`, no client-side limit). All 20 tenants' daily jobs
start at once, each as `make run` starts one (`dg launch --job <tenant>_daily_activities`, the scan, the
checks and the views in one run process), into one Dagster instance and one dataset.

Figures: total wall time and records a second; each run's peak RSS (the `dg launch` process and the run
it executes; target 400 MB) and CPU seconds; and from those, how many tenants this machine keeps busy at
the service's real limit of 30 requests a minute.

Run: .venv/bin/python -m bench.tenants [--tenants 20] [--activities 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from activity_pipeline_testing.helpers import launch, ready_instance, tenants_yaml
from bench.common import demo_tenant_process, yesterday

MB = 10**6
TARGET_MB = 400
PROBE = "probe"
# The service: 30 requests a minute, up to 5,000 records a page.
SERVICE_RECORDS_PER_SECOND = 30 * 5_000 / 60


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tenants", type=int, default=20)
    p.add_argument("--activities", type=int, default=50_000)
    a = p.parse_args()
    repo = Path(__file__).resolve().parents[1]
    day, _, _ = yesterday()
    names = [f"tenant{i:02d}" for i in range(a.tenants)]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {
            name: stack.enter_context(
                demo_tenant_process(a.activities, processes=1, seed=100 + i, token=f"token-{name}")
            )
            for i, name in enumerate(names)
        }
        # A tenant with a 1,000-activity day, run alone first: what a run costs before its records do.
        urls[PROBE] = stack.enter_context(demo_tenant_process(1_000, processes=1, token=f"token-{PROBE}"))
        tenants_file = Path(tmp) / "tenants.yaml"
        tenants_file.write_text(tenants_yaml(urls))
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        home.mkdir()
        shutil.copy(repo / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_", "DAGSTER_HOME"))}
        env.update(
            ACTIVITY_TENANTS_FILE=str(tenants_file),
            ACTIVITY_DATA_DIR=str(data),
            ACTIVITY_START_DATE=(day - dt.timedelta(days=30)).isoformat(),
            DAGSTER_HOME=str(home),
            **{f"{n.upper()}_TOKEN": f"token-{n}" for n in urls},
        )
        ready_instance(env)
        probe = subprocess.Popen(launch(day, job=True, tenant=PROBE), env=env, cwd=repo,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _, status, usage = os.wait4(probe.pid, 0)
        probe.returncode = os.waitstatus_to_exitcode(status)
        start_up_cpu, start_up_mb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / MB
        t0 = time.perf_counter()
        logs = {name: stack.enter_context(open(Path(tmp) / f"{name}.log", "w+")) for name in names}
        procs = {
            name: subprocess.Popen(
                launch(day, job=True, tenant=name), env=env, cwd=repo, stdout=logs[name], stderr=subprocess.STDOUT
            )
            for name in names
        }
        runs = {}
        pending = {p.pid: name for name, p in procs.items()}
        while pending:
            # wait4: each run's own peak RSS (the dg process and what it ran) and CPU time.
            pid, status, usage = os.wait4(-1, 0)
            if pid not in pending:
                continue
            name = pending.pop(pid)
            runs[name] = {
                "exit": os.waitstatus_to_exitcode(status),
                "seconds": time.perf_counter() - t0,
                "peak_mb": usage.ru_maxrss * 1024 / MB,
                "cpu": usage.ru_utime + usage.ru_stime,
            }
            procs[name].returncode = runs[name]["exit"]
        wall = time.perf_counter() - t0
        failed = {n: (Path(tmp) / f"{n}.log").read_text()[-1500:] for n in names if runs[n]["exit"] != 0}
        with duckdb.connect(str(data / "activities.duckdb"), read_only=True) as con:
            health = con.execute(
                "SELECT tenant, rows_stored, drift, last_check_passed FROM partition_health WHERE date = ? "
                "AND tenant <> ?",
                [day, PROBE],
            ).fetchall()
    records = sum(r[1] for r in health)
    exact = [r for r in health if r[2] == 0 and r[3]]
    peaks = [r["peak_mb"] for r in runs.values()]
    cpu = [r["cpu"] for r in runs.values()]
    print(f"tenants: {a.tenants} demo tenants x one {a.activities:,}-activity day, all runs launched at once")
    print(f"tenants: {len(runs) - len(failed)} of {a.tenants} runs succeeded; {len(exact)} days exact (drift 0, "
          f"count check passed); {records:,} activities stored")  # fmt: skip
    for name, text in failed.items():
        print(f"tenants: {name} failed: {text}")
    print(f"tenants: wall {wall:.1f}s from the first launch to the last run's end; {records / wall:,.0f} records/s")
    print(f"tenants: run process peak RSS: max {max(peaks):.0f} MB, median {statistics.median(peaks):.0f} MB, "
          f"min {min(peaks):.0f} MB; CPU per run: median {statistics.median(cpu):.1f}s "
          f"(total {sum(cpu):.0f}s on {os.cpu_count()} cores)")  # fmt: skip
    verdict = "met" if max(peaks) <= TARGET_MB else "MISSED"
    print(f"tenants: every run process at or below {TARGET_MB} MB: {verdict} (max {max(peaks):.0f} MB)")
    # At the service's limit a tenant yields at most 2,500 records a second. What a record costs this machine,
    # with each run's start-up (measured on the probe: a run of a 1,000-activity day) taken out:
    per_record = max(sum(cpu) - len(cpu) * start_up_cpu, 0.0) / max(records, 1)
    cores = os.cpu_count() or 1
    by_cpu = cores / (per_record * SERVICE_RECORDS_PER_SECOND)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    by_memory = memory / (max(peaks) * MB)
    print(f"tenants: a run's start-up costs {start_up_cpu:.1f}s of CPU and peaks at {start_up_mb:.0f} MB (a "
          "1,000-activity day, run alone); "
          f"past it, a record costs {per_record * 1e6:.0f} us of CPU")  # fmt: skip
    print(f"tenants: at 30 requests a minute a tenant yields at most {SERVICE_RECORDS_PER_SECOND:,.0f} records/s: "
          f"{cores} cores keep about {by_cpu:.0f} tenants scanning at that rate at once, and {memory / 2**30:.0f} GiB "
          f"holds {by_memory:.0f} run processes of {max(peaks):.0f} MB: about {min(by_cpu, by_memory):.0f} tenants "
          f"busy at once, bound by {'CPU' if by_cpu < by_memory else 'memory'}; over a day, "
          f"{cores / per_record * 86_400 / 1e6:,.0f} million records (runs' start-up aside)")  # fmt: skip
    return 0 if not failed and len(exact) == a.tenants else 1


if __name__ == "__main__":
    sys.exit(main())
