"""Hundreds of tenants in one deployment (issue 33): what the code location costs to load, a run's start-up, and
`make tenants`, at 1, 100, 300 and 1,000 tenants.

Each figure comes from a fresh interpreter, as the UI's code server, the daemon and every run worker start one:
- load: import the definitions, build them, resolve every job (what the code server does before the UI can use
  it); peak RSS from wait4. Targets at 1,000 tenants: at most 10 s and 400 MB.
- start-up: `make run`'s command for one tenant's day (`python -m activity_pipeline.launch daily_activities
  DAY|TENANT`), from the process's start to its first step's start (the STEP_START event's time in the
  instance). Target: at 1,000 tenants within 1.5x of one tenant's.
- `make tenants` (make itself, then `python -m activity_pipeline.config`): at most 5 s at 1,000 tenants.

The tenants are real tenants in the file (`api_url`, `token_env`), but the one a run starts for, a demo tenant
(`demo: {activities_per_day: 1000}`), so that its run needs nothing outside this machine.

Run: .venv/bin/python -m bench.many_tenants [--tenants 1 100 300 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 10**6
LOAD = """
import json, time
t0 = time.perf_counter()
from activity_pipeline.definitions import defs
d = defs()
jobs = d.resolve_all_job_defs()
print(json.dumps({"seconds": time.perf_counter() - t0, "jobs": len(jobs), "schedules": len(list(d.schedules or [])),
                  "sensors": len(list(d.sensors or [])), "assets": len(list(d.assets or []))}))
"""


def tenants_file(path: Path, n: int) -> None:
    lines = ["tenants:", "  - {name: t0000, demo: {activities_per_day: 1000}}"]
    lines += [
        f"  - {{name: t{i:04d}, api_url: 'https://t{i:04d}.eu2.portal.cloudappsecurity.com', token_env: T}}"
        for i in range(1, n)
    ]
    path.write_text("\n".join(lines) + "\n")


def measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, int]:
    """(wall seconds, peak RSS in MB, stdout, exit status) of `cmd`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss * 1024 / MB, out, os.waitstatus_to_exitcode(status)


def first_step_after(home: Path, started: float) -> float:
    """Seconds from `started` (epoch) to the first STEP_START of the instance's latest run."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(limit=1)
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        return min(r.event_log_entry.timestamp for r in records) - started


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tenants", type=int, nargs="+", default=[1, 100, 300, 1000])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    repo = Path(__file__).resolve().parents[1]
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    startups = {}
    print("| tenants | load | peak memory | jobs | schedules | sensors | run start-up | make tenants |")
    print("|---|---|---|---|---|---|---|---|")
    for n in a.tenants:
        with tempfile.TemporaryDirectory() as tmp:
            home, data = Path(tmp) / "home", Path(tmp) / "data"
            home.mkdir()
            shutil.copy(repo / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
            tenants_file(Path(tmp) / "tenants.yaml", n)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_", "DAGSTER_HOME"))}
            env.update(ACTIVITY_TENANTS_FILE=str(Path(tmp) / "tenants.yaml"), ACTIVITY_DATA_DIR=str(data),
                       DAGSTER_HOME=str(home), T="bench-token")  # fmt: skip
            subprocess.run([sys.executable, "-m", "dagster", "instance", "migrate"], env=env, check=True,
                           capture_output=True)  # fmt: skip
            loads, mbs, counts = [], [], {}
            for _ in range(a.rounds):
                _, mb, out, rc = measured([sys.executable, "-c", LOAD], env, repo)
                assert rc == 0, out
                counts = json.loads(out.strip().splitlines()[-1])
                loads.append(counts["seconds"])
                mbs.append(mb)
            starts = []
            for _ in range(a.rounds):
                started = time.time()
                cmd = [sys.executable, "-m", "activity_pipeline.launch", "daily_activities", f"{day}|t0000"]
                _, _, out, rc = measured(cmd, env, repo)
                assert rc == 0, out[-2000:]
                starts.append(first_step_after(home, started))
            makes = []
            for _ in range(a.rounds):
                wall, _, out, rc = measured(["make", "-s", "tenants"], env, repo)
                assert rc == 0, out[-2000:]
                makes.append(wall)
        load, mb = statistics.median(loads), max(mbs)
        startups[n] = statistics.median(starts)
        make = statistics.median(makes)
        print(f"| {n:,} | {load:.1f} s | {mb:.0f} MB | {counts['jobs']} | {counts['schedules']} | "
              f"{counts['sensors']} | {startups[n]:.1f} s | {make:.1f} s |", flush=True)  # fmt: skip
        if n == max(a.tenants):
            biggest = (n, load, mb, make)
    n, load, mb, make = biggest
    print(f"\nmany tenants: medians of {a.rounds}; peak memory is the largest of the loads (wait4's ru_maxrss)")
    print(f"many tenants: at {n:,} tenants the code location loads in {load:.1f} s (target at most 10 s: "
          f"{'met' if load <= 10 else 'MISSED'}) and {mb:.0f} MB (target at most 400 MB: "
          f"{'met' if mb <= 400 else 'MISSED'})")  # fmt: skip
    one = startups[min(startups)]
    ratio = startups[n] / one
    print(f"many tenants: a run's start-up at {n:,} tenants {startups[n]:.1f} s, at {min(startups):,} {one:.1f} s: "
          f"{ratio:.2f}x (target at most 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")  # fmt: skip
    print(f"many tenants: make tenants at {n:,} tenants {make:.1f} s (target at most 5 s: "
          f"{'met' if make <= 5 else 'MISSED'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
