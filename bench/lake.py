"""The dataset on object storage (issue 14): the `activities` asset writing a Delta table on moto's S3 server,
against the seed loop on the same day, and its peak RSS on a 1,000,000-activity day.

Targets, those of the local path: the asset at least 3x the seed loop's records a second; the materializing
process at or below 400 MB. moto's server runs on loopback in its own process (one core of two shared with
the demo tenant, the asset and the seed loop), so uploads cost CPU here that a real bucket's network would not.

Run: .venv/bin/python -m bench.lake [--activities N] [--memory-activities N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from activity_pipeline_testing.object_storage import moto_server, new_bucket, s3_env
from bench.common import demo_tenant_process
from bench.ingest import run_child


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--activities", type=int, default=200_000)
    p.add_argument("--memory-activities", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with moto_server() as endpoint:
        os.environ.update(s3_env(endpoint))  # the children inherit the standard AWS variables
        ours, seeds = [], []
        with demo_tenant_process(a.activities) as url:
            for _ in range(a.rounds):
                with tempfile.TemporaryDirectory() as data_dir:
                    ours.append(run_child("pipeline", url, data_dir, new_bucket("s3", endpoint)))
                seeds.append(run_child("seed", url))
        rate = statistics.median(r["records"] / r["asset_seconds"] for r in ours)
        seed_rate = statistics.median(r["records"] / r["seconds"] for r in seeds)
        print(f"lake throughput: {a.rounds} runs each, alternating; records/s per run: asset to S3 "
              + ", ".join(f"{r['records'] / r['asset_seconds']:,.0f}" for r in ours) + "; seed loop "
              + ", ".join(f"{r['records'] / r['seconds']:,.0f}" for r in seeds))  # fmt: skip
        print(f"lake throughput: {ours[0]['records']:,.0f} records; asset to a Delta table on S3 (moto) "
              f"{rate:,.0f} records/s (median), seed loop {seed_rate:,.0f} records/s (median)")  # fmt: skip
        ratio = rate / seed_rate
        print(f"lake throughput: asset {ratio:.2f}x the seed loop; target at least 3x (the local path's): "
              f"{'met' if ratio >= 3 else 'MISSED'}")  # fmt: skip
        with demo_tenant_process(a.memory_activities) as url, tempfile.TemporaryDirectory() as data_dir:
            run = run_child("pipeline", url, data_dir, new_bucket("s3", endpoint))
        mb = run["peak_rss_mib"] * 2**20 / 1e6
        print(f"lake memory: {run['records']:,.0f} records to a Delta table on S3 in {run['asset_seconds']:.1f}s; "
              f"materializing process peak RSS {run['peak_rss_mib']:,.0f} MiB = {mb:,.0f} MB")  # fmt: skip
        print(f"lake memory: target <= 400 MB: {'met' if mb <= 400 else 'MISSED'}")


if __name__ == "__main__":
    main()
