"""Compaction: a settled day's files rewritten into one file of large row groups, ordered by timestamp (then
`id`), with column statistics, and verified before it replaces the day.

A day as the scan stores it is a file per slice (and one per top-up) of 5,000-row row groups, one per API page,
in the order the pages came. Queries over months of days then open thousands of small row groups and can skip
few of them. Compaction rewrites the day once its late arrivals are in:

1. The day's current files are fetched into the writer's staging folder (hard links on disk; downloads from
   object storage), under the day's lock, so a run and a compaction of the day never interleave.
2. They are rewritten in two streaming passes, so that memory is bounded by one row group, not by the day:
   rows go to temporary files by time window, then each window is sorted and written as one row group.
   A row group is as large as `ROW_GROUP_BYTES` of Arrow data allows (the `raw` column dominates), at most
   `MAX_ROW_GROUP_ROWS`: pyarrow writes a row group from one table held whole, so the 400 MB a run may use
   bounds it (DuckDB's writer holds a row group whole too, and arrow-rs, which encodes as it goes, is reached
   from Python only through DataFusion, whose sort alone needed 600 MB for a 1,000,000-activity day).
3. The new file is verified against the old files: the same number of rows, and the same multiset of
   (`id`, `raw`) and of whole rows (two 64-bit hashes summed over the rows, in DuckDB). A mismatch leaves
   the day as it was. Files of an older version of the typed columns are upgraded on the way: their typed
   columns derived again from `raw` (`schema.derive_table`), the (`id`, `raw`) multiset verified unchanged.
4. The writer replaces the day in one step: the rename swap on disk; on object storage one Delta commit whose
   actions all say `dataChange: false` (a rearrangement, as OPTIMIZE writes it).

The rewrite and the verification run in a process of their own, so that the Dagster run that asked for them
keeps its own size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from activity_pipeline.storage.core import TenantStore
from activity_pipeline.storage.manifest import Compaction, Manifest
from activity_pipeline.storage.schema import DICTIONARY_COLUMNS, SCHEMA, SCHEMA_VERSION, derive_table, version_of

# Arrow bytes a row group may hold while it is written. pyarrow writes a row group from one table, and the
# process peaks at about six times that (the window read, sorted, encoded): 36 MiB keeps a compaction within
# 400 MB. At the demo tenant's 3.7 KB a row (the `raw` column is most of it) that is about 10,000 rows.
ROW_GROUP_BYTES = 36 * 2**20
# Reads go through a buffer of this size instead of whole column chunks at once.
READ_BUFFER = 1 << 20
MAX_ROW_GROUP_ROWS = 122_880
MIN_ROW_GROUP_ROWS = 8_192
# The columns an investigation looks one value up in. A Bloom filter per row group lets a reader skip the row
# groups that do not hold the value (min/max cannot: a user's or an address's rows are spread over the day).
# Measured over 90 and 180 days of 1,000,000 activities, a typical user's rows 14-17% faster, an address's 0-5%,
# for 0.1% more bytes (`bench.lake_queries`).
BLOOM_FILTER_COLUMNS = ("user_name", "ip_address")
BLOOM_FILTER_FPP = 0.01
COMPACTED_PREFIX = "compact"
_POOL = pa.default_memory_pool()


class CompactionError(RuntimeError):
    """The rewrite does not hold exactly the day's rows; the day was left as it was."""


class NotStoredError(ValueError):
    """There is no stored day to compact."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a day's rows lie in its files."""

    files: int
    row_groups: int
    bytes: int
    rows: int


@dataclasses.dataclass(frozen=True)
class Compacted:
    """What a compaction did."""

    day: dt.date
    before: Layout
    after: Layout
    seconds: float
    manifest: Manifest


def is_compacted(names: Sequence[str]) -> bool:
    """Whether a day whose files are `names` is one compaction's output (a top-up since adds a file)."""
    return len(names) == 1 and names[0].startswith(f"{COMPACTED_PREFIX}-")


def compacted_name(run_id: str) -> str:
    """A compaction's file: its name says the version of the typed columns (`compact-v2-<run>.parquet`), so that a
    day's files alone tell whether it is compacted and current (files of version 1 are `compact-<run>.parquet`)."""
    return f"{COMPACTED_PREFIX}-v{SCHEMA_VERSION}-{run_id}.parquet"


def is_current(names: Sequence[str]) -> bool:
    """Whether a day whose files are `names` is compacted with today's typed columns: nothing to rewrite."""
    return is_compacted(names) and names[0].startswith(f"{COMPACTED_PREFIX}-v{SCHEMA_VERSION}-")


def layout(paths: Sequence[Path]) -> Layout:
    groups = rows = 0
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        groups += meta.num_row_groups
        rows += meta.num_rows
    return Layout(len(paths), groups, sum(p.stat().st_size for p in paths), rows)


def row_group_rows(paths: Sequence[Path]) -> int:
    """Rows per row group: as many as ROW_GROUP_BYTES of this day's rows, within the bounds."""
    size = rows = 0
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            size += meta.row_group(g).total_byte_size
            rows += meta.row_group(g).num_rows
    per_row = size / rows if rows else 1
    return int(min(MAX_ROW_GROUP_ROWS, max(MIN_ROW_GROUP_ROWS, ROW_GROUP_BYTES // max(per_row, 1))))


def _windows(paths: Sequence[Path], target: int) -> np.ndarray:
    """Window starts (epoch ms), each window holding about `target` rows, from the timestamps' histogram by
    second. A window never splits a second, so one second busier than `target` is one larger window."""
    counts: dict[int, int] = {}
    for path in paths:
        file = pq.ParquetFile(path, buffer_size=READ_BUFFER)
        for g in range(file.metadata.num_row_groups):
            ts = file.read_row_group(g, columns=["timestamp"]).column(0).cast(pa.int64()).to_numpy()
            seconds, n = np.unique(ts // 1000, return_counts=True)
            for s, k in zip(seconds.tolist(), n.tolist(), strict=True):
                counts[s] = counts.get(s, 0) + k
    starts, held = [], target
    for second in sorted(counts):
        if held >= target:
            starts.append(second * 1000)
            held = 0
        held += counts[second]
    return np.array(starts or [0], dtype=np.int64)


def writer_options(rows_per_group: int, *, bloom_filters: bool = True) -> dict[str, Any]:
    """The `pq.ParquetWriter` options of a compacted file of `rows_per_group`-row row groups."""
    options: dict[str, Any] = {
        "compression": "zstd",
        "compression_level": 3,
        "use_dictionary": DICTIONARY_COLUMNS,
        "write_statistics": [c for c in SCHEMA.names if c != "raw"],
        # A CRC per page, for readers that check them: a flipped byte is found, not decoded into garbage.
        "write_page_checksum": True,
    }
    if bloom_filters:
        # Sized for a row group whose values all differ: the filter never saturates.
        options["bloom_filter_options"] = {c: {"ndv": rows_per_group, "fpp": BLOOM_FILTER_FPP}
                                           for c in BLOOM_FILTER_COLUMNS}  # fmt: skip
    return options


def rewrite_sorted(paths: Sequence[Path], out: Path, work: Path, rows_per_group: int) -> Layout:
    """Write the rows of `paths` to `out`, ordered by (timestamp, id), `rows_per_group` rows or so per row
    group, with statistics on every column but `raw` and Bloom filters on BLOOM_FILTER_COLUMNS. Temporary files
    go to `work` (removed)."""
    starts = _windows(paths, rows_per_group)
    work.mkdir(parents=True, exist_ok=True)
    buckets: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    # Arrow IPC, compressed: a writer keeps no encoder state (an open Parquet writer per window would).
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    try:
        for path in paths:  # pass 1: each row group's rows to their window's file
            file = pq.ParquetFile(path, buffer_size=READ_BUFFER)
            current = version_of(file.schema_arrow) == SCHEMA_VERSION
            for g in range(file.metadata.num_row_groups):
                # A file of older columns is upgraded on the way: its typed columns derived again from `raw`.
                table = (
                    file.read_row_group(g).cast(SCHEMA)
                    if current
                    else derive_table(file.read_row_group(g, ["id", "raw"]))
                )
                ts = table.column("timestamp").cast(pa.int64()).to_numpy()
                window = np.searchsorted(starts, ts, side="right") - 1
                order = np.argsort(window, kind="stable")
                cuts = np.flatnonzero(np.diff(window[order])) + 1
                for part in np.split(order, cuts):
                    if not len(part):
                        continue
                    k = int(window[part[0]])
                    if k not in buckets:
                        buckets[k] = pa.ipc.new_stream(work / f"window-{k:06d}.arrows", SCHEMA, options=options)
                    buckets[k].write_table(table.take(part))
                del table
                _POOL.release_unused()
    finally:
        for writer in buckets.values():
            writer.close()
    writer = pq.ParquetWriter(out, SCHEMA, **writer_options(rows_per_group))
    try:
        for k in sorted(buckets):  # pass 2: each window sorted, one row group
            bucket = work / f"window-{k:06d}.arrows"
            with pa.ipc.open_stream(bucket) as reader:
                table = reader.read_all()
            table = table.take(pc.sort_indices(table, [("timestamp", "ascending"), ("id", "ascending")]))
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            del table
            _POOL.release_unused()  # mimalloc keeps freed pages otherwise: the next window would add to them
            bucket.unlink()
        if not buckets:
            writer.write_table(SCHEMA.empty_table())
    finally:
        writer.close()
        shutil.rmtree(work, ignore_errors=True)
    return layout([out])


def digest(paths: Sequence[Path], spill: Path, *, whole: bool = True) -> tuple[int, int, int | None]:
    """(rows, sum of hash(id, raw), sum of hash(whole row)) over `paths`: equal for the same multiset of rows. The
    whole rows' sum is None when not asked for, or when the files are not all of today's columns (an upgrade
    changes the typed columns; its `id` and `raw` must stay as they were)."""
    import duckdb

    spill.mkdir(parents=True, exist_ok=True)
    config = {"memory_limit": "64MB", "threads": 1, "temp_directory": str(spill), "preserve_insertion_order": False}
    whole = whole and all(version_of(pq.read_schema(p)) == SCHEMA_VERSION for p in paths)
    rows_sum = "coalesce(sum(hash(t)), 0)" if whole else "NULL"
    with duckdb.connect(config=config) as con:
        row = con.execute(
            f"SELECT count(*), coalesce(sum(hash(id, raw)), 0), {rows_sum} "
            "FROM read_parquet(?, hive_partitioning = false) AS t",
            [[str(p) for p in paths]],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), None if row[2] is None else int(row[2])


def same_rows(before: tuple[int, int, int | None], after: tuple[int, int, int | None]) -> bool:
    """Whether two digests are of the same rows: the same (id, raw) multiset, and the same whole rows unless the
    columns were upgraded."""
    return before[:2] == after[:2] and (before[2] is None or before[2] == after[2])


def _rewrite_and_verify(sources: list[Path], out: Path, work: Path) -> tuple[Layout, int, bool]:
    """In the worker process: the rewrite, and whether it holds exactly the sources' rows."""
    rows_per_group = row_group_rows(sources)
    after = rewrite_sorted(sources, out, work / "windows", rows_per_group)
    before = digest(sources, work / "spill")
    # An upgrade's whole rows differ by design: the new file's sum would be computed for nothing.
    same = same_rows(before, digest([out], work / "spill", whole=before[2] is not None))
    shutil.rmtree(work, ignore_errors=True)
    return after, rows_per_group, same


def _in_worker(sources: list[Path], out: Path, work: Path) -> tuple[Layout, int, bool]:
    """`_rewrite_and_verify` in a fresh interpreter (`python -m activity_pipeline.storage.compaction`) that imports
    only what it needs: a multiprocessing worker would import the caller's main module first (Dagster, in a run)."""
    request = json.dumps({"sources": [str(p) for p in sources], "out": str(out), "work": str(work)})
    proc = subprocess.run(
        [sys.executable, "-m", "activity_pipeline.storage.compaction", request], capture_output=True, text=True
    )
    if proc.returncode:
        code = proc.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"failed (exit {code})"
        if code in (-9, 137):
            how += " (SIGKILL: often the kernel's out-of-memory killer; see `dmesg`)"
        told = " ".join(proc.stderr.strip().split())[-1500:]
        raise CompactionError(
            f"the compaction's worker {how}{': ' + told if told else ''}. Nothing was swapped in: the day is unchanged "
            "and still reads as before. Compact it again (make compact DAY=... TENANT=..., or the compaction sensor "
            "asks again at its next tick)."
        )
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    return Layout(**answer["after"]), answer["rows_per_group"], answer["same"]


def _worker_main(request: str) -> None:
    asked = json.loads(request)
    after, rows_per_group, same = _rewrite_and_verify([Path(p) for p in asked["sources"]], Path(asked["out"]),
                                                      Path(asked["work"]))  # fmt: skip
    print(json.dumps({"after": dataclasses.asdict(after), "rows_per_group": rows_per_group, "same": same}))


def compact_day(store: TenantStore, day: dt.date, *, run_id: str | None = None, logger: Any = None) -> Compacted:
    """Rewrite the stored `day` of `store` as one sorted file of large row groups, verified, and make it the day.

    Raises NotStoredError when the day is not stored, DayLockedError when a run holds the day, CompactionError
    when the rewrite does not match (the day is then unchanged).
    """
    started = time.monotonic()
    with store.writer(day, run_id=run_id, prefix=COMPACTED_PREFIX) as writer:
        previous = store.manifest(day)
        if previous is None:
            raise NotStoredError(f"{store.tenant} {day} is not stored: there is nothing to compact")
        sources = writer.source_files(previous)
        before = layout(sources)
        out = writer.stage / compacted_name(writer.run_id)
        after, rows_per_group, same = _in_worker(sources, out, writer.stage / "work")
        if not same or after.rows != before.rows:
            raise CompactionError(
                f"{store.tenant} {day}: the rewritten file does not hold exactly the day's {before.rows:,} rows "
                f"(it holds {after.rows:,}, or other rows); the day was left as it was"
            )
        if logger is not None:
            logger.info(
                f"{store.tenant} {day}: {before.rows:,} rows rewritten and verified: {before.files} files and "
                f"{before.row_groups} row groups became 1 file of {after.row_groups} row groups "
                f"(up to {rows_per_group:,} rows each), {before.bytes:,} bytes became {after.bytes:,}"
            )
        record = Compaction(
            run_id=writer.run_id,
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            seconds=round(time.monotonic() - started, 1),
            files_before=before.files,
            row_groups_before=before.row_groups,
            bytes_before=before.bytes,
            files=[],  # the writer names the files as the backend stores them
            row_groups=after.row_groups,
            bytes=after.bytes,
        )
        manifest = writer.commit_rearranged(previous, [out], record)
    return Compacted(day, before, after, round(time.monotonic() - started, 1), manifest)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
