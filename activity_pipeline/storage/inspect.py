"""Facts about stored days, for the completeness checks and metadata: rows, duplicate ids, time range,
schema, quarantine, and the total across days.

No Dagster here. Row counts come from Parquet footers and manifests; duplicate ids from DuckDB over the
day's files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from activity_pipeline.days import day_window
from activity_pipeline.storage.layout import TenantData
from activity_pipeline.storage.schema import SCHEMA, TIMESTAMP
from activity_pipeline.storage.writer import MANIFEST, QUARANTINE, read_manifest

# What mends a day whose files are damaged: a new version from the source, not built on the stored files.
FULL_RESCAN_HINT = "run the day again with the tag activity_pipeline/full_rescan=true, which scans it anew"


class DamagedDayError(RuntimeError):
    """A stored day's file cannot be read (a damaged footer, a page that does not decompress)."""


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
    manifest: dict[str, Any] | None = None
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


def day_facts(data: TenantData, day: dt.date) -> DayFacts:
    """Read what the checks need from the day's folder (absent day: `exists` is False)."""
    if hasattr(data, "lake"):
        return _lake_day_facts(data, day)
    folder = data.day_dir(day)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return DayFacts(day, exists=False)
    facts = DayFacts(day, exists=True, manifest=read_manifest(data, day))
    readable = []
    for f in files:
        try:
            meta = pq.ParquetFile(f)
        except (pa.ArrowException, ValueError, OSError) as exc:
            facts.unreadable[f.name] = _why(exc)
            continue
        readable.append(str(f))
        facts.rows += meta.metadata.num_rows
        if not meta.schema_arrow.remove_metadata().equals(SCHEMA):
            facts.schema_mismatches.append(f.name)
    quarantine = folder / QUARANTINE
    if quarantine.exists():
        with quarantine.open("rb") as fh:
            facts.quarantined = sum(1 for _ in fh)
    _query_rows(facts, data, readable, [])
    return facts


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
            facts.unreadable[path.rsplit("/", 1)[-1]] = _why(exc)
    paths = [p for p in paths if p.rsplit("/", 1)[-1] not in facts.unreadable]
    return paths, con.execute(query, [*params, paths]).fetchone() if paths else None


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _lake_day_facts(data: Any, day: dt.date) -> DayFacts:
    """`day_facts` of a day on object storage: the files of the table's current version, read in place."""
    from activity_pipeline.storage.lake_sql import duckdb_setup

    names = sorted(f["name"] for f in data.current_files().get(day, []))
    if not names:
        return DayFacts(day, exists=False)
    facts = DayFacts(day, exists=True, manifest=data.manifest(day, names))
    facts.quarantined = int((facts.manifest or {}).get("quarantined", 0))
    urls = [f"{data.day_url(day)}/{n}" for n in names]
    facts.rows = _query_rows(facts, data, urls, duckdb_setup(data.lake.url), schema_check=True)
    return facts


def _query_rows(
    facts: DayFacts, data: TenantData, paths: list[str], setup: list[str], *, schema_check: bool = False
) -> int:
    """Fill in duplicates, time range, rows outside the day and rows at the watermark; returns the rows."""
    start_ms, end_ms = day_window(facts.day)
    facts.watermark_ms = (facts.manifest or {}).get("watermark_ms")
    # No watermark: compare every row (the count as of "now" then includes what arrived since).
    watermark = facts.watermark_ms if facts.watermark_ms is not None else 2**62
    if not facts.rows and not schema_check:
        if facts.watermark_ms is not None:
            facts.rows_at_watermark = 0
        return 0
    import duckdb  # here, not at the top: see storage/duckdb_views.py

    # Capped, spilling to disk past the cap: the checks run in the process that scanned the day, whose peak
    # the scan set; counting a 10,000,000-id day's distinct ids must not raise it.
    spill = data.staging / "duckdb-spill"
    with duckdb.connect(config={"memory_limit": "64MB", "threads": 2, "temp_directory": str(spill)}) as con:
        for sql in setup:
            con.execute(sql)
        if schema_check:
            # Each file's columns as DuckDB reads them, against those of an empty file of the schema.
            describe = "SELECT column_name, column_type FROM (DESCRIBE FROM read_parquet(?, hive_partitioning = false))"
            with tempfile.TemporaryDirectory() as folder:
                reference = Path(folder) / "schema.parquet"
                pq.write_table(SCHEMA.empty_table(), reference)
                expected = con.execute(describe, [str(reference)]).fetchall()
            for path in paths:
                try:
                    if con.execute(describe, [path]).fetchall() != expected:
                        facts.schema_mismatches.append(path.rsplit("/", 1)[-1])
                except duckdb.Error as exc:
                    facts.unreadable[path.rsplit("/", 1)[-1]] = _why(exc)
            paths = [p for p in paths if p.rsplit("/", 1)[-1] not in facts.unreadable]
        query = """SELECT count(*), count(*) - count(DISTINCT id), epoch_ms(min(timestamp)), epoch_ms(max(timestamp)),
                          count(*) FILTER (WHERE epoch_ms(timestamp) < ? OR epoch_ms(timestamp) >= ?),
                          count(*) FILTER (WHERE epoch_ms(created) <= ?)
                   FROM read_parquet(?)"""
        # `raw` too is decoded, every page of it (its length needs its bytes): statistics alone would pass a file
        # whose pages no longer decompress. A query of its own: beside the distinct ids' hash table, a 1,000,000-
        # record day's raw pages did not fit the cap (alone: 0.9 s for its 3.4 GB of JSON, within the cap).
        paths, _ = _readable(con, "SELECT sum(strlen(raw)) FROM read_parquet(?)", [], paths, facts)
        _, found = _readable(con, query, [start_ms, end_ms, watermark], paths, facts)
        rows, dups, lo, hi, outside, at_watermark = found or (0, 0, None, None, 0, 0)
    facts.duplicate_ids, facts.min_ms, facts.max_ms, facts.outside = int(dups), lo, hi, int(outside)
    facts.rows_at_watermark = int(at_watermark) if facts.watermark_ms is not None else None
    return int(rows)


def trailing_manifests(data: TenantData, day: dt.date, days: int) -> dict[dt.date, dict[str, Any]]:
    """Manifests of the `days` days before `day` that are stored."""
    found = {}
    for k in range(1, days + 1):
        d = day - dt.timedelta(days=k)
        manifest = read_manifest(data, d)
        if manifest is not None:
            found[d] = manifest
    return found


def stored_row_total(data: TenantData) -> int:
    """Rows stored across all the tenant's days, from the tenant's index (`storage.index`) or, on object
    storage, the table's log: no manifest or Parquet is read, whatever the days kept."""
    if hasattr(data, "lake"):
        return data.row_total()
    from activity_pipeline.storage.index import day_rows

    return sum(day_rows(data).values())


def stored_days(data: TenantData) -> list[dt.date]:
    """The days that have a committed version (a manifest), oldest first."""
    if hasattr(data, "lake"):
        return data.stored_days()
    found = data.days.glob(f"date=*/{MANIFEST}")
    return sorted(dt.date.fromisoformat(p.parent.name.removeprefix("date=")) for p in found)


def stored_ids(data: TenantData, day: dt.date, *, created_from_ms: int) -> list[str]:
    """Ids of the stored day's rows created at or after `created_from_ms` (a top-up may meet them again).

    Reads the `id` and `created` columns only, and of those only row groups whose statistics reach that far.
    """
    if hasattr(data, "lake"):
        import duckdb

        from activity_pipeline.storage.lake_sql import duckdb_setup

        with duckdb.connect() as con:
            for sql in duckdb_setup(data.lake.url):
                con.execute(sql)
            urls = data.day_files(day)
            if not urls:
                return []
            since_ms = "make_timestamptz(? * 1000)"
            try:
                rows = con.execute(
                    f"SELECT id FROM read_parquet(?) WHERE created >= {since_ms}", [urls, created_from_ms]
                )
                return [r[0] for r in rows.fetchall()]
            except duckdb.InvalidInputException as exc:
                raise DamagedDayError(f"a stored file of {day} cannot be read ({str(exc)[:300]})") from None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    files = sorted(data.day_dir(day).glob("*.parquet"))
    if not files:
        return []
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet")
        since = pa.scalar(created_from_ms, type=pa.int64()).cast(TIMESTAMP)
        table = dataset.to_table(columns=["id"], filter=pc.field("created") >= since)
    except (pa.ArrowException, ValueError) as exc:  # ArrowInvalid is a ValueError; damaged footers raise it
        raise DamagedDayError(f"a stored file of {day} cannot be read ({str(exc)[:300]})") from None
    return table.column("id").to_pylist()
