"""Ingest benchmarks (issue 4): the `activities` asset against the seed document's loop, same server.

- memory: peak RSS of a process that materializes a 1,000,000-activity day (target <= 400 MB), next to a
  process running the seed loop on the same day (it holds every record: about 10 GB expected).
- throughput: records a second for a 200,000-activity day, asset (to Parquet) versus the seed loop (to a
  list in memory), medians of several alternating runs. Target: at least 3x.

Each side runs in a fresh interpreter (`python -m bench.ingest child ...`) so that peak RSS is its own.
Run: .venv/bin/python -m bench.ingest memory|throughput [--activities N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.common import TOKEN, demo_tenant_process, peak_rss_mib, yesterday


def child_pipeline(url: str, data_dir: str, data_url: str | None = None) -> dict[str, float]:
    warnings.filterwarnings("ignore")
    import dagster as dg

    from activity_pipeline.components.resources import ActivityStorage, MdcaResource, mdca_key
    from activity_pipeline.definitions import build_defs
    from activity_pipeline_testing.helpers import ASSET, NODE, TENANT

    day, _, _ = yesterday()
    t0 = time.perf_counter()
    resources = {
        mdca_key(TENANT): MdcaResource(api_url=url, api_token=TOKEN, requests_per_minute=0),
        "storage": ActivityStorage(data_dir=data_dir, data_url=data_url),
    }
    asset = build_defs(resources).resolve_assets_def(ASSET)
    result = dg.materialize([asset], partition_key=day.isoformat(), instance=dg.DagsterInstance.ephemeral())
    wall = time.perf_counter() - t0
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    return {
        "records": meta["dagster/partition_row_count"].value,
        "asset_seconds": meta["seconds"].value,
        "wall_seconds": wall,
        "slices": meta["slices"].value,
        "ids_held_peak": meta["ids_held_peak"].value,
        "bytes_written": meta["bytes_written"].value,
        "bytes_received": meta["bytes_received"].value,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_seed(url: str) -> dict[str, float]:
    from activity_pipeline_testing.helpers import seed_loop

    _, start, end = yesterday()
    body = {"filters": {"date": {"gte": start, "lte": end - 1}}, "isScan": True, "limit": 5000}
    t0 = time.perf_counter()
    records = seed_loop(url + "/api/v1/activities/", TOKEN, body)
    seconds = time.perf_counter() - t0
    return {"records": len(records), "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def child_run(url: str, data_dir: str) -> dict[str, float]:
    """The whole daily job, headless, as `make run` runs it: command start to its last check and the views."""
    import resource as rlimits

    import dagster as dg

    from activity_pipeline_testing.helpers import ASSET, REPO, TENANT, cli_env

    day, _, _ = yesterday()
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", Path(home) / "dagster.yaml")
        env = cli_env(url, Path(data_dir), Path(home))
        env.update(MDCA_API_TOKEN=TOKEN, ACTIVITY_START_DATE=(day - dt.timedelta(days=30)).isoformat())
        started = time.time()  # the clock the run's events are stamped with
        t0 = time.perf_counter()
        # What `make run` runs: the run made as the UI's code location makes it, executed in this process's child.
        command = [sys.executable, "-m", "activity_pipeline.launch", f"{TENANT}_daily_activities", day.isoformat()]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        instance = dg.DagsterInstance.from_config(home)
        event = instance.get_latest_materialization_event(ASSET)
        meta = event.asset_materialization.metadata  # type: ignore[union-attr]
        (run,) = instance.get_runs()
        events = instance.all_logs(run.run_id)
        checks = sum(1 for e in events if e.dagster_event_type and
                     e.dagster_event_type.value == "ASSET_CHECK_EVALUATION")  # fmt: skip
        (ended,) = [e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS]
    return {
        "records": meta["dagster/partition_row_count"].value,
        "asset_seconds": meta["seconds"].value,
        # Command start to the run's end (its last check and the views done, RUN_SUCCESS), and to the
        # command's exit, which adds Python tearing down the modules it loaded.
        "run_seconds": ended - started,
        "wall_seconds": wall,
        "checks": checks,
        # The run process: `activity_pipeline.launch` executes the job in its own process (in-process executor).
        "peak_rss_mib": rlimits.getrusage(rlimits.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_child(*args: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-m", "bench.ingest", "child", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def _alternate(kind: str, activities: int, rounds: int) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """`kind` (a child with a data directory) and the seed loop, `rounds` times each, alternating, on one server."""
    ours, seeds = [], []
    with demo_tenant_process(activities) as url:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as data_dir:
                ours.append(run_child(kind, url, data_dir))
            seeds.append(run_child("seed", url))
    return ours, seeds


def compare(activities: int, label: str, rounds: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """Each side `rounds` times, alternating, on one server; the median of every figure."""
    pipes, seeds = _alternate("pipeline", activities, rounds)
    pipe, seed = _median(pipes), _median(seeds)
    if rounds > 1:
        asset_rates = ", ".join(f"{r['records'] / r['asset_seconds']:,.0f}" for r in pipes)
        seed_rates = ", ".join(f"{r['records'] / r['seconds']:,.0f}" for r in seeds)
        print(f"{label}: medians of {rounds} runs each; records/s per run: asset {asset_rates}; seed {seed_rates}")
    print(
        f"{label}: asset: {pipe['records']:,.0f} records to Parquet in {pipe['asset_seconds']:.1f}s "
        f"({pipe['records'] / pipe['asset_seconds']:,.0f} records/s; {pipe['wall_seconds']:.1f}s with Dagster's "
        f"run start-up), {pipe['slices']:.0f} slices, peak RSS {pipe['peak_rss_mib']:,.0f} MiB, "
        f"{pipe['bytes_written'] / 2**20:,.0f} MiB Parquet from {pipe['bytes_received'] / 2**20:,.0f} MiB JSON"
    )
    print(
        f"{label}: seed loop: {seed['records']:,.0f} records into a list in {seed['seconds']:.1f}s "
        f"({seed['records'] / seed['seconds']:,.0f} records/s), peak RSS {seed['peak_rss_mib']:,.0f} MiB"
    )
    return pipe, seed


def whole_run(activities: int, rounds: int) -> None:
    """The headless daily run against the seed loop's bare collection, alternating, on one server."""
    runs, seeds = _alternate("run", activities, rounds)
    run, seed = _median(runs), _median(seeds)
    label = "daily run"

    def seconds(rs: list[dict[str, float]], key: str) -> str:
        return ", ".join(f"{r[key]:.1f}" for r in rs)

    print(f"{label}: medians of {rounds} runs each; whole run s: {seconds(runs, 'run_seconds')}; to the "
          f"command's exit s: {seconds(runs, 'wall_seconds')}; asset step s: {seconds(runs, 'asset_seconds')}; "
          f"seed loop s: {seconds(seeds, 'seconds')}")  # fmt: skip
    print(f"{label}: {run['records']:,.0f} records; whole headless run (make run's command start to its last check "
          f"and the views: the run's end) {run['run_seconds']:.1f}s, of which the asset's step "
          f"{run['asset_seconds']:.1f}s; the command exits {run['wall_seconds'] - run['run_seconds']:.1f}s later "
          "(Python unloading); "
          f"{run['checks']:.0f} check verdicts; run process peak RSS {run['peak_rss_mib']:,.0f} MiB")  # fmt: skip
    print(f"{label}: seed loop: {seed['records']:,.0f} records into a list in {seed['seconds']:.1f}s")
    whole, step = seed["seconds"] / run["run_seconds"], seed["seconds"] / run["asset_seconds"]
    to_exit = seed["seconds"] / run["wall_seconds"]
    print(f"{label}: whole run {whole:.2f}x faster than the seed loop ({to_exit:.2f}x to the command's exit); "
          f"target at least 2x: {'met' if whole >= 2 else 'MISSED'}")  # fmt: skip
    print(f"{label}: asset step {step:.2f}x faster than the seed loop; target at least 3x: "
          f"{'met' if step >= 3 else 'MISSED'}")  # fmt: skip


def run_memory(activities: int) -> None:
    """Peak RSS of the run process over the whole daily job (scan, checks, views) of one large day, and
    whether it succeeded with every check's verdict."""
    with demo_tenant_process(activities) as url, tempfile.TemporaryDirectory() as data_dir:
        run = run_child("run", url, data_dir)
    mb = run["peak_rss_mib"] * 2**20 / 1e6
    print(
        f"daily run memory: {run['records']:,.0f} records, whole run {run['wall_seconds']:.1f}s (the scan "
        f"{run['asset_seconds']:.1f}s), RUN_SUCCESS with {run['checks']:.0f} check verdicts; run process peak RSS "
        f"{run['peak_rss_mib']:,.0f} MiB = {mb:,.0f} MB"
    )
    print(f"daily run memory: target <= 400 MB for the whole run, checks included: {'met' if mb <= 400 else 'MISSED'}")


def scale(small: int, large: int) -> None:
    """The asset alone on a `small` and a `large` day (issue 15): peak RSS of the materializing process and
    records a second at both sizes, each in a fresh process, the demo tenant serving from 2 processes."""
    runs = {}
    for n in (small, large):
        with demo_tenant_process(n, processes=2) as url, tempfile.TemporaryDirectory() as data_dir:
            runs[n] = run_child("pipeline", url, data_dir)
    for r in runs.values():
        mb = r["peak_rss_mib"] * 2**20 / 1e6
        rate = r["records"] / r["asset_seconds"]
        print(f"scale: {r['records']:,.0f} records in {r['asset_seconds']:.1f}s ({rate:,.0f} records/s), "
              f"{r['slices']:.0f} slices, at most {r['ids_held_peak']:,.0f} ids held for duplicates; "
              f"materializing process peak RSS {r['peak_rss_mib']:,.0f} MiB = {mb:,.0f} MB")  # fmt: skip
    big = runs[large]
    mb = big["peak_rss_mib"] * 2**20 / 1e6
    print(f"scale: {large:,} records, materializing process at or below 400 MB: {'met' if mb <= 400 else 'MISSED'} "
          f"({mb:,.0f} MB)")  # fmt: skip
    per_small = runs[small]["asset_seconds"] / runs[small]["records"]
    per_large = big["asset_seconds"] / big["records"]
    growth = per_large / per_small
    print(f"scale: seconds a record at {large:,} are {growth:.2f}x those at {small:,}; time grows no faster than "
          f"linearly (at most 1.10x, for noise): {'met' if growth <= 1.10 else 'MISSED'}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["memory", "throughput", "run", "run-memory", "scale", "child"])
    p.add_argument("args", nargs="*")
    p.add_argument("--activities", type=int)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if a.what == "child":
        kind, url, *rest = a.args
        children = {"pipeline": lambda: child_pipeline(url, *rest), "run": lambda: child_run(url, rest[0]),
                    "seed": lambda: child_seed(url)}  # fmt: skip
        print(json.dumps(children[kind]()))
        return
    if a.what == "run":
        whole_run(a.activities or 200_000, a.rounds)
        return
    if a.what == "scale":
        scale(1_000_000, a.activities or 10_000_000)
        return
    if a.what == "run-memory":
        run_memory(a.activities or 1_000_000)
        return
    if a.what == "memory":
        pipe, seed = compare(a.activities or 1_000_000, "ingest memory")
        print(
            f"ingest memory: peak RSS asset {pipe['peak_rss_mib']:,.0f} MiB vs seed loop "
            f"{seed['peak_rss_mib']:,.0f} MiB: the seed loop holds {seed['peak_rss_mib'] / pipe['peak_rss_mib']:.0f}x "
            "more"
        )
        mb = pipe["peak_rss_mib"] * 2**20 / 1e6
        print(f"ingest memory: target asset <= 400 MB: {'met' if mb <= 400 else 'MISSED'} ({mb:,.0f} MB)")
    else:
        pipe, seed = compare(a.activities or 200_000, "ingest throughput", a.rounds)
        ratio = (pipe["records"] / pipe["asset_seconds"]) / (seed["records"] / seed["seconds"])
        verdict = "met" if ratio >= 3 else "MISSED"
        print(f"ingest throughput: asset / seed loop, records a second: {ratio:.2f}x; target at least 3x: {verdict}")


if __name__ == "__main__":
    main()
