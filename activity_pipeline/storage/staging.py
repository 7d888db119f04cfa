"""A day's new files, staged on local disk under the day's lock: the part of writing a day both backends share.

    .staging/tenant=<name>/date=YYYY-MM-DD.lock          the day's lock (flock): one writer of a day at a time
    .staging/tenant=<name>/date=YYYY-MM-DD.<run>/        the new version's files while they are written
        part-HHMMSSmmm.parquet                           one file per scan slice, named by its start time
        _quarantine.jsonl                                records without `_id` or `timestamp`, if any

Once the files are closed (committed or aborted), a late `write` or `quarantine` fails instead of touching
them. A run killed mid-write leaves its folder; the next writer of the day removes it (it holds the lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from activity_pipeline.storage.core import DayWriter
from activity_pipeline.storage.errors import DayLockedError, UnsafeVersionError
from activity_pipeline.storage.facts import unsafe, version_problems
from activity_pipeline.storage.integrity import file_digests
from activity_pipeline.storage.layout import KEPT_ASIDE
from activity_pipeline.storage.manifest import MANIFEST_VERSION, Compaction, FileDigest, Manifest
from activity_pipeline.storage.schema import DICTIONARY_COLUMNS, SCHEMA, SCHEMA_VERSION

QUARANTINE = "_quarantine.jsonl"


# A slice's file holds at most this many pages (row groups): a writer keeps each row group's metadata in memory
# until its file is closed, ~15 KB a row group with schema version 2's 37 column chunks. A 10,000,000-activity
# day's slices held 2,000 of them at the end of its scan; 50 a file bounds them at 50 per open file.
FILE_ROW_GROUPS = 50


class StagedDay(DayWriter):
    """A day's new files, written under the tenant's local staging folder while the day's lock is held. Each
    backend's writer adds how they become the day (`commit`) and how a top-up starts (`carry_over`)."""

    def __init__(self, tenant: str, staging: Path, day: dt.date, *, run_id: str | None, prefix: str) -> None:
        self.tenant = tenant
        self.prefix = prefix
        self.day = day
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.staging_root = staging
        self.stage = self.staging_root / f"date={day.isoformat()}.{self.run_id}"
        self._lock_file: Any = None
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._closed: set[int] = set()
        self._quarantine: Any = None
        self._files_closed = False
        self.rows = 0
        self.quarantined = 0
        self.committed = False
        # Row groups (pages) written per slice, for FILE_ROW_GROUPS.
        self._groups: dict[int, int] = {}
        # The version a top-up builds on (set by the backend's `carry`); None for a full scan.
        self._carried: Manifest | None = None

    def __enter__(self) -> StagedDay:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        lock_path = self.staging_root / f"date={self.day.isoformat()}.lock"
        self._lock_file = open(lock_path, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DayLockedError(
                f"Another run is writing {self.day} right now (lock {lock_path}); this run leaves the day to it. "
                "Re-run once that run has finished."
            ) from None
        # Work a killed run left behind for this day: nobody else holds the lock, so it is safe to remove.
        for stale in self.staging_root.glob(f"date={self.day.isoformat()}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        self.stage.mkdir(parents=True)
        return self

    def write(self, slice_start_ms: int, table: pa.Table) -> None:
        """Append a page to its slice's file; pages of one slice arrive in time order."""
        if self._files_closed:
            raise RuntimeError(f"the files of {self.day} are already closed; this page came too late")
        writer = self._writers.get(slice_start_ms)
        if writer is not None and self._groups[slice_start_ms] % FILE_ROW_GROUPS == 0:
            writer.close()  # a file's footer is held in memory until it closes: the slice goes on in a new file
            writer = None
        if writer is None:
            if slice_start_ms in self._closed:
                raise RuntimeError(f"slice starting at {slice_start_ms} was already closed")
            when = dt.datetime.fromtimestamp(slice_start_ms / 1000, dt.UTC)
            part = self._groups.get(slice_start_ms, 0) // FILE_ROW_GROUPS
            suffix = f"-{part}" if part else ""
            name = f"{self.prefix}-{when:%H%M%S}{when.microsecond // 1000:03d}{suffix}.parquet"
            writer = pq.ParquetWriter(
                self.stage / name,
                SCHEMA,
                compression="zstd",
                compression_level=3,
                use_dictionary=DICTIONARY_COLUMNS,
                # Min/max of `raw` would copy two whole records per row group into the footer, to no use.
                write_statistics=[c for c in SCHEMA.names if c != "raw"],
                # A CRC per page, for readers that check them: a flipped byte is found, not decoded into garbage.
                write_page_checksum=True,
            )
            self._writers[slice_start_ms] = writer
        if table.num_rows:
            writer.write_table(table)
            self.rows += table.num_rows
            self._groups[slice_start_ms] = self._groups.get(slice_start_ms, 0) + 1

    def close_slice(self, slice_start_ms: int) -> None:
        """Finish a slice's file once its last page is written: an open writer holds its encoders' buffers."""
        writer = self._writers.pop(slice_start_ms, None)
        if writer is not None:
            writer.close()
            self._closed.add(slice_start_ms)

    def quarantine(self, raws: Sequence[bytes | msgspec.Raw]) -> None:
        """Keep records that cannot be stored as rows, one JSON text per line, exactly as received."""
        if not raws:
            return
        if self._files_closed:
            raise RuntimeError(f"the files of {self.day} are already closed; these records came too late")
        if self._quarantine is None:
            self._quarantine = open(self.stage / QUARANTINE, "ab")  # noqa: SIM115 - closed in commit/abort
        for raw in raws:
            self._quarantine.write(bytes(raw).replace(b"\n", b" ") + b"\n")
        self.quarantined += len(raws)

    def _close_files(self) -> None:
        self._files_closed = True
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._quarantine is not None:
            self._quarantine.close()
            self._quarantine = None

    def _close_stage(self) -> list[Path]:
        """Close every file; the staged Parquet files. An empty day is still a day: one empty file carries
        the schema."""
        if not self._writers and not self._closed and not any(self.stage.glob("*.parquet")):
            pq.write_table(SCHEMA.empty_table(), self.stage / "part-000000000.parquet", compression="zstd")
        self._close_files()
        return sorted(self.stage.glob("*.parquet"))

    def _guard(self, paths: Sequence[str], setup: Sequence[str] = ()) -> None:
        """Refuse the new version unless every id in it is once, every row inside the day and every file reads
        back with the rows written: checked on the version's own files (`paths`, readable by DuckDB after the
        `setup` SQL), after they are closed and before anything is swapped in. A refused version is kept aside
        and UnsafeVersionError raised; the stored day stays as it was."""
        facts = version_problems(self.day, list(paths), list(setup), self.staging_root / "duckdb-spill", self.rows)
        problems = unsafe(facts, self.rows)
        if not problems:
            return
        aside = self.keep_aside()
        raise UnsafeVersionError(
            f"The new version of {self.day} was refused before it was swapped in: {'; '.join(problems)}. The stored "
            f"day is unchanged; the refused files are kept aside in {aside}. The server repeated records or answered "
            "outside the day that was asked for: run the day again later, and if it happens again, keep the kept-"
            "aside files and the run's log for whoever runs the service (or the proxy in front of it).",
            aside,
        )

    @staticmethod
    def _digests(staged: Sequence[Path], carried: Manifest | None = None) -> dict[str, FileDigest]:
        """The digests of the version's files: the carried ones' from the version they come from, the rest taken
        now from the staged files (closed, so as they will be stored)."""
        known = dict(carried.digests) if carried is not None else {}
        return {**known, **file_digests([p for p in staged if p.name not in known])}

    def _manifest(self, files: list[str], size: int, figures: dict[str, Any]) -> Manifest:
        """The version's manifest: what the writer knows, then the caller's figures."""
        return Manifest(
            tenant=self.tenant,
            day=self.day,
            rows=self.rows,
            quarantined=self.quarantined,
            files=files,
            bytes=size,
            # A top-up adds files of today's columns to files it carries: the day is as old as its oldest file.
            schema_version=min(SCHEMA_VERSION, self._carried.schema_version if self._carried else SCHEMA_VERSION),
            run_id=self.run_id,
            manifest_version=MANIFEST_VERSION,
            **figures,
        )

    def _rearranged(self, previous: Manifest, files: Sequence[Path], compaction: Compaction) -> Manifest:
        """The manifest of a rearranged version: `previous`, with its files now `files`."""
        self._files_closed = True
        self.rows, self.quarantined = previous.rows, previous.quarantined
        names = [p.name for p in files]
        size = sum(p.stat().st_size for p in files)
        return msgspec.structs.replace(
            previous,
            files=sorted(names),
            digests=file_digests(list(files)),
            bytes=size,
            run_id=self.run_id,
            written_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            compactions=[*previous.compactions, msgspec.structs.replace(compaction, files=sorted(names))],
            # A rearrangement writes today's columns, derived again from `raw` where the files were older.
            schema_version=SCHEMA_VERSION,
            manifest_version=MANIFEST_VERSION,
        )

    def keep_aside(self) -> Path:
        """Close the staged files and move them, uncommitted, to `<staging>/kept-aside/` for a person to look at;
        the stored day is untouched. Returns where they went."""
        self._close_files()
        aside = self.staging_root / KEPT_ASIDE / self.stage.name
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.stage, aside)
        self.stage = aside
        self.committed = True  # nothing to clean up: the files are meant to stay
        return aside

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._close_files()
        if not self.committed:
            shutil.rmtree(self.stage, ignore_errors=True)
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
