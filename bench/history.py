"""Daily cost with history (issue 15, part 3): the daily run, scan aside, with 180 stored days against 3.

One demo tenant serves 181 days of 2,000 activities. One data directory holds the 3 days before yesterday,
another the 180; both then run the daily job for yesterday (the scan, the ten checks, the DuckDB views) in
this process, alternating, a fresh full scan each time. What is timed is the run less its scan: the asset
step's time less the scan's own seconds, the checks' step and the views' step. Target: 180 days cost at most
1.2x what 3 cost.

Run: .venv/bin/python -m bench.history [--rounds 5] [--activities 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.common import TOKEN, demo_tenant_process, yesterday


def _steps(instance: object, run_id: str) -> dict[str, float]:
    """Seconds per step, from the run's own STEP_START and STEP_SUCCESS events."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):  # type: ignore[attr-defined]
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return seconds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--activities", type=int, default=2_000)
    p.add_argument("--history", type=int, default=180)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    import dagster as dg

    from activity_pipeline.components.resources import ActivityStorage, MdcaResource, mdca_key
    from activity_pipeline.definitions import build_defs
    from activity_pipeline.ingest import ingest_day
    from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter
    from activity_pipeline.storage.local import LocalStore
    from activity_pipeline_testing.helpers import JOB, NODE, TENANT

    day, _, _ = yesterday()
    history = {"3 days": 3, f"{a.history} days": a.history}
    timings: dict[str, list[float]] = {label: [] for label in history}
    parts: dict[str, list[dict[str, float]]] = {label: [] for label in history}
    with demo_tenant_process(a.activities, days=a.history + 1) as url, tempfile.TemporaryDirectory() as tmp:
        settings = MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=0)
        dirs = {}
        t0 = time.perf_counter()
        for label, n in history.items():
            dirs[label] = Path(tmp) / label.replace(" ", "_")
            for k in range(1, n + 1):
                with MdcaClient(settings, limiter=RateLimiter(0)) as client:
                    ingest_day(client, LocalStore(dirs[label], TENANT), day - dt.timedelta(days=k))
        print(f"history: stored {sum(history.values())} days of {a.activities:,} in {time.perf_counter() - t0:.0f}s")
        for _ in range(a.rounds):
            for label in history:
                data = dirs[label]
                shutil.rmtree(LocalStore(data, TENANT).day_location(day), ignore_errors=True)
                resources = {
                    mdca_key(TENANT): MdcaResource(api_url=url, api_token=TOKEN, requests_per_minute=0),
                    "storage": ActivityStorage(data_dir=str(data)),
                }
                job = build_defs(resources).resolve_job_def(JOB)
                with dg.DagsterInstance.ephemeral() as instance:
                    result = job.execute_in_process(partition_key=day.isoformat(), instance=instance)
                    steps = _steps(instance, result.run_id)
                scan = result.asset_materializations_for_node(NODE)[0].metadata["seconds"].value
                timings[label].append(sum(steps.values()) - scan)
                parts[label].append({**{k: round(v, 3) for k, v in steps.items()}, "scan": round(scan, 3)})
    medians = {label: statistics.median(v) for label, v in timings.items()}
    for label, values in timings.items():
        print(f"history: {label} stored: the daily run less its scan, median {medians[label]:.2f}s of "
              f"{a.rounds} ({', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
        print(f"history: {label} stored, the steps' seconds of the last round: {parts[label][-1]}")
    few, many = medians.values()
    verdict = "met" if many <= 1.2 * few else "MISSED"
    print(f"history: {a.history} days cost {many / few:.2f}x what 3 days cost; target at most 1.2x: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
