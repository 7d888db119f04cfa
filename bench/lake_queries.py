"""The lake's layout (issue 24): queries over months of days, compacted against DuckDB's own rewrite of the same
rows; bytes per activity before and after compaction; what a compaction of a large day costs.

    python -m bench.lake_queries queries [--activities 1000000] [--days 90 180] [--rounds 2]
    python -m bench.lake_queries compaction [--activities 10000000]
    python -m bench.lake_queries upgrade [--activities 1000000]

`queries`: one day of the demo tenant is scanned as the pipeline stores it, compacted (`storage.compaction`),
and rewritten by DuckDB itself (`ORDER BY timestamp`, 122,880-row groups, zstd). Each layout is then laid out
as N days by hard links (the same rows under each day's folder: the disk holds one copy), and six
investigations run over all N days of each, alternating, the median of `--rounds`. "One user" and "one IP"
look up a typical one (the median of the day's users or addresses by activities: a handful of rows a day), as
an investigation does; the compacted day without its Bloom filters answers what those filters pay.
Target: each query on the compacted layout within 1.25x of DuckDB's own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from activity_pipeline.ingest import ingest_day
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter
from activity_pipeline.storage.compaction import compact_day, layout, writer_options
from activity_pipeline.storage.local import LocalStore
from activity_pipeline.storage.schema import SCHEMA
from bench.common import TOKEN, demo_tenant_process

TARGET = 1.25
OWN = "DuckDB's own"
TENANT = "bench"

QUERIES = {
    "one user's activities": "SELECT * FROM t WHERE user_name = $user",
    "one IP": "SELECT * FROM t WHERE ip_address = $ip",
    "failed sign-ins by user and day": "SELECT user_name, date, count(*) FROM t WHERE is_success = false "
    "AND event_type ILIKE '%login%' GROUP BY ALL",
    "apps per day (events, users)": "SELECT date, app_name, count(*), count(DISTINCT user_name) FROM t GROUP BY ALL",
    "the last two hours": "SELECT app_name, count(*) FROM t WHERE date = $last AND timestamp >= $since GROUP BY ALL",
    "a raw JSON field, one day": "SELECT json_extract_string(raw, '$.userAgent.deviceType') AS device, count(*) "
    "FROM t WHERE date = $last GROUP BY ALL",
}


def _scan_day(url: str, root: Path, day: dt.date) -> LocalStore:
    store = LocalStore(root, TENANT)
    ingest_day(MdcaClient(MdcaSettings(api_url=url, api_token=TOKEN, requests_per_minute=0), limiter=RateLimiter(0)),
               store, day)  # fmt: skip
    return store


def _copy_day(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        os.link(f, target / f.name)


def _lay_out(files: list[Path], root: Path, days: list[dt.date]) -> str:
    """`files` as each of `days` under `root` (hard links); the glob DuckDB reads."""
    for day in days:
        folder = root / f"tenant={TENANT}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(f, folder / f.name)
    return f"read_parquet('{root}/tenant=*/date=*/*.parquet', hive_partitioning = true)"


def _without_bloom(source: Path, target: Path) -> None:
    """The compacted file again, row group for row group, without its Bloom filters."""
    file = pq.ParquetFile(source)
    with pq.ParquetWriter(target, SCHEMA, **writer_options(0, bloom_filters=False)) as writer:
        for g in range(file.metadata.num_row_groups):
            table = file.read_row_group(g)
            writer.write_table(table, row_group_size=max(1, table.num_rows))


def _time(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> float:
    t0 = time.perf_counter()
    con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).to_arrow_table()
    return time.perf_counter() - t0


def queries(a: argparse.Namespace) -> None:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with demo_tenant_process(a.activities) as url, tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        scanned = _scan_day(url, root / "scan", day)
        print(f"scanned {a.activities:,} activities in {time.perf_counter() - t0:.0f} s")
        stored_files = sorted(scanned.day_location(day).glob("*.parquet"))
        before = layout(stored_files)
        _copy_day(scanned.day_location(day), LocalStore(root / "compacted", TENANT).day_location(day))
        done = compact_day(LocalStore(root / "compacted", TENANT), day)
        compacted_files = sorted(LocalStore(root / "compacted", TENANT).day_location(day).glob("*.parquet"))
        after = done.after
        own = root / "own.parquet"
        with duckdb.connect() as con:
            con.execute(f"SET temp_directory = '{root / 'spill'}'")
            listed = ", ".join(f"'{f}'" for f in stored_files)
            con.execute(f"COPY (SELECT * FROM read_parquet([{listed}], hive_partitioning = false) ORDER BY timestamp) "
                        f"TO '{own}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")  # fmt: skip
        plain = root / "no-bloom.parquet"
        _without_bloom(compacted_files[0], plain)
        own_layout, plain_layout = layout([own]), layout([plain])
        for name, lay in (("as scanned", before), ("compacted", after), ("DuckDB's own", own_layout),
                          ("compacted without Bloom filters", plain_layout)):  # fmt: skip
            print(f"layout {name}: {lay.files} files, {lay.row_groups} row groups, {lay.bytes / lay.rows:.1f} bytes "
                  f"per activity")  # fmt: skip
        print(f"bytes per activity: {before.bytes / before.rows:.1f} as scanned, {after.bytes / after.rows:.1f} "
              f"compacted ({after.bytes / before.bytes - 1:+.1%}); compaction took {done.seconds:.0f} s")  # fmt: skip
        with duckdb.connect() as con:
            src = f"read_parquet(['{compacted_files[0]}'])"
            typical = {}
            for column in ("user_name", "ip_address"):
                (n,) = con.execute(f"SELECT count(DISTINCT {column}) FROM {src}").fetchone()
                typical[column] = con.execute(
                    f"SELECT {column}, count(*) FROM {src} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1 OFFSET {n // 2}"
                ).fetchone()
                print(f"a typical {column}: the median of {n:,}, {typical[column][1]} activities a day")
            last_ts = con.execute(f"SELECT max(timestamp) FROM {src}").fetchone()[0]
        params = {"user": typical["user_name"][0], "ip": typical["ip_address"][0], "last": day,
                  "since": last_ts - dt.timedelta(hours=2)}  # fmt: skip
        missed = 0
        for n in a.days:
            days = [day - dt.timedelta(days=k) for k in range(n)]
            sides = {
                "compacted": _lay_out(compacted_files, root / f"c{n}", days),
                "DuckDB's own": _lay_out([own], root / f"o{n}", days),
                # The layout as scanned, for reference, at the first size only: it is the slow one.
                **({"as scanned": _lay_out(stored_files, root / f"s{n}", days)} if n == a.days[0] else {}),
                "no Bloom": _lay_out([plain], root / f"b{n}", days),
            }
            print(f"\n{n} days of {a.activities:,} activities ({n * a.activities:,} rows), median of {a.rounds}:")
            with duckdb.connect() as con:
                for name, sql in QUERIES.items():
                    wanted = [s for s in ("compacted", OWN, "as scanned") if s in sides]
                    if name in ("one user's activities", "one IP"):
                        wanted.append("no Bloom")
                    times: dict[str, list[float]] = {s: [] for s in wanted}
                    for _ in range(a.rounds):
                        for side in wanted:  # alternating, so that the machine's moods fall on both
                            times[side].append(_time(con, sql.replace(" t ", f" {sides[side]} ", 1), params))
                    med = {s: statistics.median(v) for s, v in times.items()}
                    ratio = med["compacted"] / med["DuckDB's own"]
                    missed += ratio > TARGET
                    extra = f", compacted without Bloom filters {med['no Bloom']:.2f} s" if "no Bloom" in med else ""
                    scanned = f", as scanned {med['as scanned']:.2f} s" if "as scanned" in med else ""
                    print(f"  {name}: compacted {med['compacted']:.2f} s, DuckDB's own {med[OWN]:.2f} s"
                          f"{scanned}{extra}: {ratio:.2f}x of DuckDB's own "
                          f"(target <= {TARGET}x): {'met' if ratio <= TARGET else 'MISSED'}")  # fmt: skip
        print(f"\n{missed} of {len(QUERIES) * len(a.days)} query lines missed the target")


def compaction(a: argparse.Namespace) -> None:
    """A large day scanned, then compacted in a process of its own: the compaction's time, its peak RSS."""
    import json
    import subprocess
    import sys

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        with demo_tenant_process(a.activities) as url:
            t0 = time.perf_counter()
            _scan_day(url, Path(tmp), day)
            scanned = time.perf_counter() - t0
        # The demo tenant is stopped: the compaction has the machine to itself.
        out = subprocess.run([sys.executable, "-m", "bench.lake_queries", "compact-one", "--root", tmp,
                              "--day", day.isoformat()], capture_output=True, text=True, check=True)  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peak = max(r["self_mb"], r["worker_mb"])
        print(f"{a.activities:,} activities: scanned in {scanned:.0f} s; compacted in {r['seconds']:.0f} s: "
              f"{r['files_before']} files / {r['row_groups_before']} row groups became {r['files_after']} / "
              f"{r['row_groups_after']}; {r['bytes_before'] / r['rows']:.1f} -> {r['bytes_after'] / r['rows']:.1f} "
              "bytes per activity")  # fmt: skip
        print(
            f"peak RSS: the compaction's worker {r['worker_mb']:.0f} MB, the process that asked for it "
            f"{r['self_mb']:.0f} MB (target <= 400 MB for the largest, as for the scan): "
            f"{'met' if peak <= 400 else 'MISSED'}"
        )


def _as_version_1(day_dir: Path) -> None:
    """A day written by today's writer, made what the writer of schema version 1 left: each file with version 1's
    columns only (5,000-row groups, as scanned), its manifest saying so, digests taken again."""
    import msgspec

    from activity_pipeline.storage.integrity import file_digests
    from activity_pipeline.storage.manifest import MANIFEST, dumps, loads
    from activity_pipeline.storage.schema import DICTIONARY_COLUMNS, schema_of

    old = schema_of(1)
    files = sorted(day_dir.glob("*.parquet"))
    for path in files:
        source = pq.ParquetFile(path)
        tmp = path.with_suffix(".v1")
        with pq.ParquetWriter(tmp, old, compression="zstd", use_dictionary=[c for c in DICTIONARY_COLUMNS
                                                                            if c in old.names]) as writer:  # fmt: skip
            for g in range(source.metadata.num_row_groups):
                writer.write_table(source.read_row_group(g, columns=old.names).cast(old))
        os.replace(tmp, path)
    manifest = loads((day_dir / MANIFEST).read_bytes())
    manifest = msgspec.structs.replace(manifest, schema_version=1, digests=file_digests(files),
                                       bytes=sum(p.stat().st_size for p in files))  # fmt: skip
    (day_dir / MANIFEST).write_bytes(dumps(manifest))


def upgrade(a: argparse.Namespace) -> None:
    """A day scanned; a copy of it made of schema version 1; then, each in a process of its own, the day compacted
    and the copy upgraded (compacted, its typed columns derived again from raw): time and peak RSS of each."""
    import json
    import shutil
    import subprocess
    import sys

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        current, old = Path(tmp) / "current", Path(tmp) / "old"
        with demo_tenant_process(a.activities) as url:
            _scan_day(url, current, day)
        shutil.copytree(current, old)
        _as_version_1(old / "activities" / f"tenant={TENANT}" / f"date={day}")
        results = {}
        for name, root in (("compaction", current), ("upgrade", old)):
            out = subprocess.run([sys.executable, "-m", "bench.lake_queries", "compact-one", "--root", str(root),
                                  "--day", day.isoformat()], capture_output=True, text=True, check=True)  # fmt: skip
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        up, co = results["upgrade"], results["compaction"]
        ratio = up["seconds"] / co["seconds"]
        peak = max(up["self_mb"], up["worker_mb"])
        print(f"{a.activities:,} activities, the same day: compacted (today's columns) in {co['seconds']:.1f} s, "
              f"peak RSS {max(co['self_mb'], co['worker_mb']):.0f} MB; upgraded from version 1 (compacted, every typed "
              f"column derived again from raw) in {up['seconds']:.1f} s, peak RSS {peak:.0f} MB")  # fmt: skip
        print(f"upgrade / compaction: {ratio:.2f}x (target <= 1.0x): {'met' if ratio <= 1.0 else 'MISSED'}")
        print(f"upgrade's peak RSS: the worker {up['worker_mb']:.0f} MB, the process that asked {up['self_mb']:.0f} MB "
              f"(target <= 400 MB): {'met' if peak <= 400 else 'MISSED'}")  # fmt: skip


def compact_one(a: argparse.Namespace) -> None:
    import json

    day = dt.date.fromisoformat(a.day)
    done = compact_day(LocalStore(Path(a.root), TENANT), day)
    mb = 1024 / 1e6  # ru_maxrss is in KiB
    print(json.dumps({
        "seconds": done.seconds, "rows": done.after.rows, "files_before": done.before.files,
        "row_groups_before": done.before.row_groups, "bytes_before": done.before.bytes,
        "files_after": done.after.files, "row_groups_after": done.after.row_groups, "bytes_after": done.after.bytes,
        "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mb,
        "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * mb,
    }))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["queries", "compaction", "compact-one", "upgrade"])
    p.add_argument("--root")
    p.add_argument("--day")
    p.add_argument("--activities", type=int)
    p.add_argument("--days", type=int, nargs="*", default=[90, 180])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tmp", default=None, help="where the layouts are built (default: the system's temp dir)")
    a = p.parse_args()
    if a.mode == "queries":
        a.activities = a.activities or 1_000_000
        queries(a)
    elif a.mode == "compact-one":
        compact_one(a)
    elif a.mode == "upgrade":
        a.activities = a.activities or 1_000_000
        upgrade(a)
    else:
        a.activities = a.activities or 10_000_000
        compaction(a)


if __name__ == "__main__":
    main()
