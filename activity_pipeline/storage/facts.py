"""Facts about a stored day, for the completeness checks and metadata: rows, duplicate ids, time range,
schema, quarantine, unreadable files. Both backends fill a `DayFacts` with `query_rows` over the day's files
(`TenantStore.facts`).

No Dagster here. Row counts come from Parquet footers and manifests; duplicate ids from DuckDB over the
day's files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from activity_pipeline.days import day_window
from activity_pipeline.storage.errors import FULL_RESCAN_HINT
from activity_pipeline.storage.manifest import Manifest
from activity_pipeline.storage.schema import SCHEMAS


@dataclasses.dataclass
class DayFacts:
    day: dt.date
    exists: bool
    rows: int = 0
    duplicate_ids: int = 0
    min_ms: int | None = None
    max_ms: int | None = None
    outside: int = 0
    quarantined: int = 0
    schema_mismatches: list[str] = dataclasses.field(default_factory=list)
    manifest: Manifest | None = None
    # The manifest's watermark (epoch ms), and the rows created at or before it; None for days stored without.
    watermark_ms: int | None = None
    rows_at_watermark: int | None = None
    # Files that cannot be read whole (a damaged footer, a page that does not decompress): name -> why.
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)

    def damage(self) -> str | None:
        """What is damaged and how to mend it, for a check's description; None when every file reads."""
        if not self.unreadable:
            return None
        files = "; ".join(f"{name} ({why})" for name, why in sorted(self.unreadable.items()))
        return f"{len(self.unreadable)} stored file(s) of {self.day} cannot be read: {files}. {FULL_RESCAN_HINT}"


def _readable(
    con: Any, query: str, params: list[Any], paths: list[str], facts: DayFacts
) -> tuple[list[str], tuple[Any, ...] | None]:
    """The paths `query` (over `read_parquet(?)`, its last parameter) reads without an error, and its row over
    them; the others go to `facts.unreadable` with the reason. Running out of memory is no damage: it is raised."""
    import duckdb

    if not paths:
        return paths, None
    try:
        return paths, con.execute(query, [*params, paths]).fetchone()
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error:
        pass
    for path in paths:  # which files: each alone
        try:
            con.execute(query, [*params, [path]]).fetchall()
        except duckdb.OutOfMemoryException:
            raise
        except duckdb.Error as exc:
            facts.unreadable[path.rsplit("/", 1)[-1]] = why(exc)
    paths = [p for p in paths if p.rsplit("/", 1)[-1] not in facts.unreadable]
    return paths, con.execute(query, [*params, paths]).fetchone() if paths else None


def why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# Days of at least this many rows are queried in a process of their own (see `query_rows`).
ISOLATE_ROWS = 2_000_000


def query_rows(facts: DayFacts, paths: list[str], setup: list[str], spill: Path, *, schema_check: bool = False) -> int:
    """`_query_rows`, for a large day in a process of its own, which ends with it: DuckDB's module and its working
    memory never join the process that scanned the day. Measured on a 10,000,000-activity day run by `dg launch`:
    in the run process these queries took it from the scan's 405 MiB to 420 MiB; in their own, it stayed at 318.
    Below ISOLATE_ROWS they run here: at 1,000,000 rows the run process peaks at the scan's 356 MiB either way.
    Returns the rows; `facts` is filled in as `_query_rows` fills it."""
    if facts.rows < ISOLATE_ROWS:  # a process's start (about a second) costs more than a small day's queries
        return _query_rows(facts, paths, setup, spill, schema_check=schema_check)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        filled, rows, error = pool.submit(_isolated, facts, paths, setup, spill, schema_check).result()
    if error is not None:
        kind, message = error
        if kind == "OutOfMemoryException":  # never taken for damage: the run fails and says so
            raise MemoryError(f"the checks' DuckDB queries ran out of memory: {message}")
        raise RuntimeError(f"the checks' DuckDB queries failed ({kind}): {message}")
    for field in dataclasses.fields(DayFacts):
        setattr(facts, field.name, getattr(filled, field.name))
    return rows


def _isolated(
    facts: DayFacts, paths: list[str], setup: list[str], spill: Path, schema_check: bool
) -> tuple[DayFacts, int, tuple[str, str] | None]:
    """In the child: the facts and rows, or the error by name and message (DuckDB's errors do not pickle)."""
    try:
        rows = _query_rows(facts, paths, setup, spill, schema_check=schema_check)
    except Exception as exc:
        return facts, 0, (type(exc).__name__, str(exc))
    return facts, rows, None


def _query_rows(facts: DayFacts, paths: list[str], setup: list[str], spill: Path, *, schema_check: bool = False) -> int:
    """Fill in duplicates, time range, rows outside the day and rows at the watermark from the day's files at
    `paths` (local paths or URLs that the `setup` SQL lets DuckDB read); returns the rows. With `schema_check`,
    each file's columns are compared with each known version's too (local files have theirs read from the footer).
    DuckDB spills to `spill` past its memory cap."""
    start_ms, end_ms = day_window(facts.day)
    facts.watermark_ms = facts.manifest.watermark_ms if facts.manifest is not None else None
    # No watermark: compare every row (the count as of "now" then includes what arrived since).
    watermark = facts.watermark_ms if facts.watermark_ms is not None else 2**62
    if not facts.rows and not schema_check:
        if facts.watermark_ms is not None:
            facts.rows_at_watermark = 0
        return 0
    import duckdb  # here, not at the top: see storage/duckdb_views.py

    # Capped, spilling to disk past the cap: a 10,000,000-id day's checks fit in the same memory as a small one's.
    settings = {"memory_limit": "64MB", "threads": 2, "temp_directory": str(spill), "preserve_insertion_order": False}
    with duckdb.connect(config=settings) as con:
        for sql in setup:
            con.execute(sql)
        if schema_check:
            # Each file's columns as DuckDB reads them, against those of an empty file of the schema.
            describe = "SELECT column_name, column_type FROM (DESCRIBE FROM read_parquet(?, hive_partitioning = false))"
            expected = []
            with tempfile.TemporaryDirectory() as folder:
                for version, schema in SCHEMAS.items():  # a day not yet upgraded holds an older version's files
                    reference = Path(folder) / f"schema-{version}.parquet"
                    pq.write_table(schema.empty_table(), reference)
                    expected.append(con.execute(describe, [str(reference)]).fetchall())
            for path in paths:
                try:
                    if con.execute(describe, [path]).fetchall() not in expected:
                        facts.schema_mismatches.append(path.rsplit("/", 1)[-1])
                except duckdb.Error as exc:
                    facts.unreadable[path.rsplit("/", 1)[-1]] = why(exc)
            paths = [p for p in paths if p.rsplit("/", 1)[-1] not in facts.unreadable]
        query = """SELECT count(*), epoch_ms(min(timestamp)), epoch_ms(max(timestamp)),
                          count(*) FILTER (WHERE epoch_ms(timestamp) < ? OR epoch_ms(timestamp) >= ?),
                          count(*) FILTER (WHERE epoch_ms(created) <= ?)
                   FROM read_parquet(?)"""
        # Duplicates in two passes on one thread: the ids' 64-bit hashes that repeat (8 bytes a row to group, which
        # spills past the cap), then, of the rows with those hashes only, the ids that repeat, exactly. Measured on
        # 10,000,000 ids under the 64 MB: count(DISTINCT id) ran out of memory (its hash table does not spill), so
        # did a GROUP BY id on two threads; this took 1.8 s.
        duplicates = """WITH repeated AS (SELECT hash(id) AS h FROM read_parquet($1) GROUP BY h HAVING count(*) > 1)
                        SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM read_parquet($1)
                            WHERE hash(id) IN (SELECT h FROM repeated) GROUP BY id HAVING count(*) > 1)"""
        # `raw` too is decoded, every page of it (its length needs its bytes): statistics alone would pass a file
        # whose pages no longer decompress. A query of its own, as each of these is: each streams or spills alone
        # (a 1,000,000-record day's raw: 0.9 s for its 3.4 GB of JSON, within the cap).
        raw = "SELECT sum(strlen(raw)) FROM read_parquet(?)"
        try:
            paths, _ = _readable(con, raw, [], paths, facts)
        except duckdb.OutOfMemoryException:
            # Two threads' read-ahead of remote files (object storage) can pass the cap on a loaded machine: one
            # thread reads the same within it.
            con.execute("SET threads = 1")
            paths, _ = _readable(con, raw, [], paths, facts)
        con.execute("SET threads = 1")
        paths, counted = _readable(con, duplicates, [], paths, facts)
        con.execute("SET threads = 2")
        _, found = _readable(con, query, [start_ms, end_ms, watermark], paths, facts)
        rows, lo, hi, outside, at_watermark = found or (0, None, None, 0, 0)
        dups = counted[0] if counted else 0
    facts.duplicate_ids, facts.min_ms, facts.max_ms, facts.outside = int(dups), lo, hi, int(outside)
    facts.rows_at_watermark = int(at_watermark) if facts.watermark_ms is not None else None
    return int(rows)


def version_problems(day: dt.date, paths: list[str], setup: list[str], spill: Path, rows: int) -> DayFacts:
    """The facts of a new version of `day` (its files at `paths`, `rows` rows) before it is committed: the writer
    refuses it when `unsafe(facts)` says anything (`DayWriter.commit`)."""
    facts = DayFacts(day, exists=True, rows=rows)
    facts.rows = query_rows(facts, paths, setup, spill)
    return facts


def unsafe(facts: DayFacts, expected_rows: int) -> list[str]:
    """What makes a version unfit to be the day: ids twice, rows outside it, files that do not read, rows lost."""
    problems = []
    if facts.duplicate_ids:
        problems.append(f"{facts.duplicate_ids:,} rows repeat an id the version already holds")
    if facts.outside:
        problems.append(f"{facts.outside:,} rows have a timestamp outside {facts.day}")
    if facts.unreadable:
        problems.append(f"{len(facts.unreadable)} file(s) do not read back ({'; '.join(facts.unreadable.values())})")
    elif facts.rows != expected_rows:
        problems.append(f"its files hold {facts.rows:,} rows where {expected_rows:,} were written")
    return problems
