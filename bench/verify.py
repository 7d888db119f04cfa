"""Verifying stored days (issue 31): `make verify`'s reading of N days of a 1,000,000-activity day, against
reading the same files once with DuckDB (every column decoded), time and peak memory, both in the same run.

    python -m bench.verify [--activities 1000000] [--days 90]

One day of the demo tenant is scanned as the pipeline stores it; it is then laid out as N days by hard links
(the disk and the page cache hold one copy; each day has its own manifest), so both sides read from memory and
what differs is the work. Each side runs in a fresh interpreter of its own, whose peak RSS is its own.
Targets: verification faster than DuckDB's one read, and at most 400 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from activity_pipeline.storage.local import LocalStore
from activity_pipeline.storage.manifest import MANIFEST, dumps, loads
from activity_pipeline.storage.schema import SCHEMA
from bench.common import demo_tenant_process
from bench.lake_queries import TENANT, _scan_day

MEMORY_TARGET_MB = 400
# The demo tenant serves the last complete UTC day.
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _lay_out(root: Path, n: int) -> list[dt.date]:
    """The scanned day's files as `n` days (hard links), each with its manifest naming its own day."""
    source = LocalStore(root, TENANT).day_location(DAY)
    manifest = loads((source / MANIFEST).read_bytes())
    days = [DAY - dt.timedelta(days=k) for k in range(1, n)]
    for day in days:
        folder = LocalStore(root, TENANT).day_location(day)
        folder.mkdir(parents=True)
        for name in manifest.files:
            os.link(source / name, folder / name)
        (folder / MANIFEST).write_bytes(dumps(msgspec.structs.replace(manifest, day=day)))
    return [*days, DAY]


def _child(kind: str, root: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.verify", "--side", kind, "--root", str(root)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def side(kind: str, root: Path) -> None:
    """One side, in this (fresh) process: its seconds, peak RSS and what it read, as JSON."""
    started = time.monotonic()
    if kind == "verify":
        store = LocalStore(root, TENANT)
        found = [store.verify_day(day) for day in store.days()]
        assert all(v is not None and v.intact for v in found), [v.problems for v in found if v and not v.intact]
        rows = sum(v.rows for v in found if v is not None)
    else:
        import duckdb

        every = ", ".join(f"max({c})" if c != "raw" else "sum(strlen(raw))" for c in SCHEMA.names)
        with duckdb.connect() as con:
            rows = con.execute(
                f"SELECT count(*), {every} FROM read_parquet('{root}/activities/tenant=*/date=*/*.parquet')"
            ).fetchone()[0]
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak * 1.048576, "rows": rows}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--activities", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--side", choices=["verify", "duckdb"])
    p.add_argument("--root", type=Path)
    a = p.parse_args()
    if a.side:
        side(a.side, a.root)
        return
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1] / "data") as folder:
        root = Path(folder)
        with demo_tenant_process(a.activities) as url:
            _scan_day(url, root, DAY)
        days = _lay_out(root, a.days)
        size = sum(p.stat().st_size for p in LocalStore(root, TENANT).day_location(DAY).glob("*.parquet"))
        print(f"{len(days)} days of {a.activities:,} activities ({size / 1e6:,.0f} MB a day, "
              f"{len(days) * size / 1e9:,.1f} GB in all, one copy on disk)")  # fmt: skip
        duck = _child("duckdb", root)  # first: it warms the page cache for both
        verify = _child("verify", root)
        duck_again = _child("duckdb", root)
    duck_s = min(duck["seconds"], duck_again["seconds"])
    ratio = verify["seconds"] / duck_s
    print(f"make verify's reading: {verify['seconds']:.1f} s, peak {verify['peak_mb']:.0f} MB, {verify['rows']:,} rows")
    print(f"DuckDB reading every column once: {duck_s:.1f} s (best of 2), peak {duck['peak_mb']:.0f} MB")
    print(f"verification / DuckDB's read: {ratio:.2f}x (target below 1.00x): {'met' if ratio < 1 else 'MISSED'}")
    print(f"verification memory: {verify['peak_mb']:.0f} MB (target at most {MEMORY_TARGET_MB} MB): "
          f"{'met' if verify['peak_mb'] <= MEMORY_TARGET_MB else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
