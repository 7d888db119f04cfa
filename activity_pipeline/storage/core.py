"""The storage interface: a dataset of tenants' stored days, and what the rest of the code may ask of it.

Two backends implement it, and nothing outside `storage/` knows which one it has:
- `storage.local`: Parquet folders under `ACTIVITY_DATA_DIR` (Hive layout), a day replaced by one rename swap;
- `storage.lake`: a Delta table on object storage (`ACTIVITY_DATA_URL`), a day replaced by one commit.

`storage.dataset.open_dataset` chooses between them, once, from the configuration.

    dataset = open_dataset(Path("data"), data_url=None)
    store = dataset.tenant("contoso")
    with store.writer(day) as writer:         # a new version of the day, swapped in whole by commit()
        writer.write(slice_start_ms, table)
        manifest = writer.commit(watermark_ms=...)
    store.manifest(day).rows, store.days(), store.facts(day).duplicate_ids
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from activity_pipeline.storage.facts import DayFacts
from activity_pipeline.storage.integrity import Verification
from activity_pipeline.storage.manifest import Compaction, Manifest


class Finding(msgspec.Struct, kw_only=True):
    """The count check's last word on a day, kept beside the dataset for the `partition_health` view.

    Its JSON (one small object per day, replaced whole) is what the view reads: keep the field names.
    """

    day: dt.date
    source_total: int
    rows_checked: int
    checked_at: str
    passed: bool
    watermark_ms: int | None = None
    # At the source but created after the watermark and not stored yet: late arrivals, not a gap.
    pending: int = 0
    # The API filters the day was collected under, as one line of JSON ("": none, every activity).
    filters: str = ""

    @classmethod
    def of(cls, day: dt.date, *, at: dt.datetime, **fields: Any) -> Finding:
        return cls(day=day, checked_at=at.astimezone(dt.UTC).isoformat(timespec="seconds"), **fields)


_FINDING = msgspec.json.Decoder(Finding)


class DeletedDay(msgspec.Struct, kw_only=True):
    """The audit record of a day deleted on purpose (the tenant's `keep_days`), kept where the day's findings are,
    for the `deleted_days` view. Its JSON is what the view reads: keep the field names."""

    tenant: str
    day: dt.date
    rows: int
    files: int
    bytes: int
    deleted_at: str
    reason: str
    run_id: str
    # The version that was deleted (its manifest's run).
    version: str


_DELETED = msgspec.json.Decoder(DeletedDay)


def decode_deleted(data: bytes | str) -> DeletedDay | None:
    try:
        return _DELETED.decode(data)
    except msgspec.DecodeError:
        return None


def encode_finding(finding: Finding) -> bytes:
    return msgspec.json.encode(finding)


def decode_finding(data: bytes | str) -> Finding | None:
    """A finding from its JSON; None when it is not one (a torn or foreign file is no finding)."""
    try:
        return _FINDING.decode(data)
    except msgspec.DecodeError:
        return None


class DayWriter(abc.ABC):
    """A new version of one day: pages go in, `commit` makes them the day in one step, or nothing changes.

    A context manager: the day's lock is taken on entry (a second writer of the day gets DayLockedError) and
    everything uncommitted is removed on exit.
    """

    day: dt.date
    run_id: str
    # New files are named `{prefix}-HHMMSSmmm...parquet`; a top-up names its own beside the carried files.
    prefix: str
    rows: int
    quarantined: int

    @property
    @abc.abstractmethod
    def target(self) -> Path | str:
        """Where the day is (a folder, or a URL), for messages and metadata."""

    @abc.abstractmethod
    def __enter__(self) -> DayWriter: ...

    @abc.abstractmethod
    def __exit__(self, *exc: object) -> None: ...

    @abc.abstractmethod
    def write(self, slice_start_ms: int, table: pa.Table) -> None:
        """Append a page to its slice's file; pages of one slice arrive in time order."""

    @abc.abstractmethod
    def close_slice(self, slice_start_ms: int) -> None:
        """Finish a slice's file once its last page is written."""

    @abc.abstractmethod
    def quarantine(self, raws: Sequence[bytes]) -> None:
        """Keep records that cannot be stored as rows, exactly as received."""

    @abc.abstractmethod
    def carry_over(self, manifest: Manifest) -> None:
        """Start from the stored version `manifest` describes (a top-up): its rows stay, what is written adds."""

    @abc.abstractmethod
    def commit(self, **figures: Any) -> Manifest:
        """Finish the files and make them the day, with a manifest of the writer's own fields (rows, files, ...)
        and `figures` (any other `Manifest` field). Returns the manifest."""

    @abc.abstractmethod
    def source_files(self, manifest: Manifest) -> list[Path]:
        """Local copies of the files of the version `manifest` describes (hard links on disk, downloads from
        object storage), in the staging folder: what a compaction reads."""

    @abc.abstractmethod
    def commit_rearranged(self, previous: Manifest, files: Sequence[Path], compaction: Compaction) -> Manifest:
        """Make the staged `files` (the same rows as the version `previous`, rearranged) the day, in one step that
        says so: the rename swap on disk; on object storage a Delta commit of `dataChange: false` actions.
        Returns the new manifest: `previous` with the new files and `compaction` appended."""

    @abc.abstractmethod
    def keep_aside(self) -> Path | str:
        """Close the files and keep them, uncommitted, for a person to look at; the stored day is untouched."""


class TenantStore(abc.ABC):
    """One tenant's stored days."""

    tenant: str
    # Local work in progress and day locks, on either backend.
    staging: Path

    @abc.abstractmethod
    def writer(self, day: dt.date, *, run_id: str | None = None, prefix: str = "part") -> DayWriter:
        """The writer of a new version of `day`."""

    @abc.abstractmethod
    def day_location(self, day: dt.date) -> Path | str:
        """Where the day is: its folder, or its partition's URL."""

    @abc.abstractmethod
    def manifest(self, day: dt.date) -> Manifest | None:
        """The manifest of the day's current version; None when the day is not stored."""

    @abc.abstractmethod
    def day_rows(self) -> dict[dt.date, int]:
        """Every stored day and its rows, without reading the days (an index, or the table's log)."""

    @abc.abstractmethod
    def files_by_day(self) -> dict[dt.date, list[str]]:
        """Every stored day's Parquet file names, without reading them (a listing, or the table's log)."""

    @abc.abstractmethod
    def facts(self, day: dt.date) -> DayFacts:
        """What the checks need from the day's files (absent day: `exists` is False)."""

    @abc.abstractmethod
    def ids_since(self, day: dt.date, created_from_ms: int) -> list[str]:
        """Ids of the stored day's rows created at or after `created_from_ms` (a top-up may meet them again).
        Raises DamagedDayError when a file cannot be read."""

    @abc.abstractmethod
    def record_finding(self, finding: Finding) -> Path | str:
        """Keep the count check's finding on a day (replacing the last); returns where it went."""

    @abc.abstractmethod
    def findings(self) -> list[Finding]:
        """The last finding of every checked day."""

    @abc.abstractmethod
    def finding(self, day: dt.date) -> Finding | None:
        """The last finding on `day`, or None."""

    @abc.abstractmethod
    def delete_day(self, day: dt.date, *, reason: str, run_id: str) -> DeletedDay | None:
        """Delete the stored `day` on purpose, in one step (under the day's lock, so never beside a run of it), with
        its finding, and keep an audit record of it (written first). None when the day is not stored."""

    @abc.abstractmethod
    def deleted_days(self) -> list[DeletedDay]:
        """The audit records of the tenant's deleted days."""

    @abc.abstractmethod
    def _verify_version(self, day: dt.date, manifest: Manifest) -> Verification:
        """Read every file of the version `manifest` describes again, whole (`storage.integrity.verify_files`)."""

    @abc.abstractmethod
    def record_verification(self, verification: Verification) -> None:
        """Keep what a verification found on a day (replacing the last)."""

    @abc.abstractmethod
    def verifications(self) -> dict[dt.date, Verification]:
        """The last verification of every verified day."""

    @abc.abstractmethod
    def verification(self, day: dt.date) -> Verification | None:
        """The last verification of `day` (one read), or None."""

    def verify_day(self, day: dt.date) -> Verification | None:
        """Verify the stored `day`'s current version and keep what was found; None when the day is not stored.

        Without the day's lock (runs of the day go on meanwhile): a version replaced while it was read is read
        again, as the new version, so a swap is never taken for damage.
        """
        manifest = self.manifest(day)
        for _ in range(3):
            if manifest is None:
                return None
            verification = self._verify_version(day, manifest)
            # Read once more (a listing on object storage): the day may have been replaced, or deleted, meanwhile.
            now = self.manifest(day)
            if now is None:
                return None
            if verification.intact or now.run_id == manifest.run_id:
                break
            manifest = now
        self.record_verification(verification)
        return verification

    def days(self) -> list[dt.date]:
        """The stored days, oldest first."""
        return sorted(self.day_rows())

    def row_total(self) -> int:
        """Rows stored across all the tenant's days, whatever the days kept, without reading them."""
        return sum(self.day_rows().values())

    def failed_days(self) -> set[dt.date]:
        """Days whose last count check found the stored day short of (or beyond) the source."""
        return {f.day for f in self.findings() if not f.passed}

    def trailing_manifests(self, day: dt.date, days: int) -> dict[dt.date, Manifest]:
        """Manifests of the `days` days before `day` that are stored."""
        found = {}
        for k in range(1, days + 1):
            earlier = day - dt.timedelta(days=k)
            manifest = self.manifest(earlier)
            if manifest is not None:
                found[earlier] = manifest
        return found


@dataclasses.dataclass
class ViewSources:
    """What the DuckDB file's views read, as SQL (`storage.duckdb_views`)."""

    # Run first in every session over the dataset (extensions, a secret); empty on local disk.
    setup: list[str]
    # The same for the DuckDB CLI's `-init` script, reading secrets from the environment when it starts;
    # None: no script is needed.
    script: list[str] | None
    # Every stored file, with `tenant` and `date` columns; None: no day is stored.
    activities: str | None
    # The glob of the count checks' findings; None: none yet.
    findings: str | None
    # The stored (tenant, date) pairs.
    stored: str
    # Rows per (tenant, day), from indexes or the table's log.
    rows: Mapping[tuple[str, dt.date], int]
    # The glob of the deleted days' audit records; None: none yet.
    deleted: str | None = None
    # Each stored day's watermark (every record created by then is stored) and when its version was written:
    # (tenant, date, watermark TIMESTAMPTZ, collected_at TIMESTAMPTZ) for at least each tenant's two newest days.
    progress: str = (
        "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date, NULL::TIMESTAMPTZ AS watermark, "
        "NULL::TIMESTAMPTZ AS collected_at WHERE false"
    )


class Dataset(abc.ABC):
    """Every tenant's stored days, and the local folder (`root`) that holds work in progress and the DuckDB
    file on either backend."""

    root: Path
    # Whether the DuckDB file's views find what is stored when they are queried (a folder's glob); False: they
    # name the files stored when the file was built (a Delta table's), and a new version needs a new file.
    views_follow_writes: bool = True

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the days are, for messages: the folder or the URL."""

    @abc.abstractmethod
    def tenant(self, name: str) -> TenantStore: ...

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageLocationError when the days cannot go where they are configured to: a folder that is a
        file, a bucket that does not exist, credentials refused. Other failures (an outage) pass through."""

    @abc.abstractmethod
    def view_sources(self) -> ViewSources:
        """The views' sources over the days stored now."""

    def adopt_legacy_days(self, tenant: str) -> list[dt.date]:
        """Move days stored before tenants existed under `tenant`; returns them. Only local folders had any."""
        return []

    @abc.abstractmethod
    def oldest_days(self) -> dict[str, dt.date]:
        """Each tenant's oldest stored day, from one listing (one read of the table's log on object storage):
        what every tenant's first partition is computed from when the definitions load."""

    def vacuum(self, horizon_hours: int, *, enforce_horizon: bool = True) -> int | None:
        """Remove the files that no version of the last `horizon_hours` needs; how many were removed, or None
        when the backend has nothing to vacuum (a local folder removes a replaced day's files when it is
        replaced)."""
        return None
