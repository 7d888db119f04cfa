"""Write one UTC day of activities as a self-contained Parquet folder, replaced whole or not at all.

Layout of a day's folder (`TenantData.day_dir`: `activities/tenant=<name>/date=YYYY-MM-DD/`):

    part-HHMMSSmmm.parquet   one file per scan slice, named by its start time
    _manifest.json           row count, scan figures, schema version
    _quarantine.jsonl        records without `_id` or `timestamp`, if any

A run writes a complete new folder under the tenant's staging folder, syncs it, and swaps it for the day's folder in one
step (renameat2 RENAME_EXCHANGE on Linux), so a reader sees the old day or the new day, never a mix, and
a run that dies leaves the old day untouched. A lock per day makes a second writer of the same day refuse.

Once the files are closed (committed or aborted), a late `write` or `quarantine` fails instead of touching them.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from activity_pipeline.storage.layout import TenantData
from activity_pipeline.storage.schema import DICTIONARY_COLUMNS, SCHEMA, SCHEMA_VERSION

MANIFEST = "_manifest.json"
QUARANTINE = "_quarantine.jsonl"
# Under a tenant's staging folder: scans that were not swapped in (see `DayWriter.keep_aside`).
KEPT_ASIDE = "kept-aside"


class DayLockedError(RuntimeError):
    """Another process is writing the same day."""


def read_manifest(data: TenantData, day: dt.date) -> dict[str, Any] | None:
    """The manifest of the day's current version; None when the day is not stored."""
    if hasattr(data, "lake"):  # storage.lake.LakeTenantData: the day's version is in the table's log
        return data.manifest(day)
    path = data.day_dir(day) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when the platform or filesystem can't."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, f"could not swap {a} and {b}: {os.strerror(err)}")


class DayWriter:
    """Stage a day's files, then replace the day in one step.

    >>> with DayWriter(TenantData(Path("data"), "contoso"), dt.date(2026, 11, 24)) as w:      # doctest: +SKIP
    ...     w.write(slice_start_ms, table)
    ...     w.commit({"rows": table.num_rows})
    """

    def __init__(self, data: TenantData, day: dt.date, *, run_id: str | None = None, prefix: str = "part") -> None:
        self.data = data
        # New files are named `{prefix}-HHMMSSmmm.parquet`; a top-up uses its own prefix beside the carried files.
        self.prefix = prefix
        self.day = day
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.target = data.day_dir(day)
        self.staging_root = data.staging
        self.stage = self.staging_root / f"date={day.isoformat()}.{self.run_id}"
        self._lock_file: Any = None
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._closed: set[int] = set()
        self._quarantine: Any = None
        self._files_closed = False
        self.rows = 0
        self.quarantined = 0
        self.committed = False

    def __enter__(self) -> DayWriter:
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
        if writer is None:
            if slice_start_ms in self._closed:
                raise RuntimeError(f"slice starting at {slice_start_ms} was already closed")
            when = dt.datetime.fromtimestamp(slice_start_ms / 1000, dt.UTC)
            name = f"{self.prefix}-{when:%H%M%S}{when.microsecond // 1000:03d}.parquet"
            writer = pq.ParquetWriter(
                self.stage / name,
                SCHEMA,
                compression="zstd",
                compression_level=3,
                use_dictionary=DICTIONARY_COLUMNS,
                # Min/max of `raw` would copy two whole records per row group into the footer, to no use.
                write_statistics=[c for c in SCHEMA.names if c != "raw"],
            )
            self._writers[slice_start_ms] = writer
        if table.num_rows:
            writer.write_table(table)
            self.rows += table.num_rows

    def carry_over(self, manifest: dict[str, Any]) -> None:
        """Start from the stored version of the day: its files (hard links where the filesystem allows, so no
        bytes are copied) and its quarantine. The new version is then that plus what is written after."""
        if self._writers or self._closed or self.rows:
            raise RuntimeError("carry_over must come before any write")
        for name in manifest["files"]:
            try:
                os.link(self.target / name, self.stage / name)
            except OSError:
                shutil.copy2(self.target / name, self.stage / name)
        quarantine = self.target / QUARANTINE
        if quarantine.exists():
            shutil.copy2(quarantine, self.stage / QUARANTINE)  # copied: this version may append to it
        self.rows, self.quarantined = int(manifest["rows"]), int(manifest.get("quarantined", 0))

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

    def _manifest(self, files: list[str], size: int, extra: dict[str, Any]) -> dict[str, Any]:
        """The version's manifest: what the writer knows, then the caller's figures."""
        return {
            "tenant": self.data.tenant,
            "day": self.day.isoformat(),
            "rows": self.rows,
            "quarantined": self.quarantined,
            "files": files,
            "bytes": size,
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            **extra,
        }

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Finish the files, write the manifest, and swap the staged day into place."""
        staged = self._close_stage()
        manifest = self._manifest([p.name for p in staged], sum(p.stat().st_size for p in staged), manifest)
        (self.stage / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        for path in self.stage.iterdir():
            _fsync(path)
        _fsync(self.stage)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if self.target.exists():
            if not _exchange(self.stage, self.target):
                # No atomic exchange here: move the old day aside, then the new one in.
                aside = self.staging_root / f"date={self.day.isoformat()}.{self.run_id}.old"
                os.rename(self.target, aside)
                os.rename(self.stage, self.target)
                self.stage = aside
        else:
            os.rename(self.stage, self.target)
        _fsync(self.target.parent)
        self.committed = True
        from activity_pipeline.storage.index import record_day

        record_day(self.data, self.day, self.rows)
        # self.stage now holds the previous version, if there was one.
        shutil.rmtree(self.stage, ignore_errors=True)
        return manifest

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
