"""A stored day's manifest: what one version of a day holds and how it was collected. Written and read here only.

A manifest is JSON, one per version of a day (`_manifest.json` in a local day's folder; one object per version
beside the Delta table). Every manifest ever written still loads: fields added since the first ones have
defaults, and fields this code does not know are ignored.

    version 1   (no `manifest_version` field) every manifest written before this module
    version 2   the same fields, with `manifest_version`
    version 3   `filters` and `compactions`
    version 4   `digests`: each file's rows, bytes and SHA-256 as written (`storage.integrity`), and
                `received_bytes`: the exact bytes of records that were not valid UTF-8

>>> m = Manifest(day=dt.date(2026, 11, 24), rows=3, files=["part-000000000.parquet"])
>>> loads(dumps(m)).rows, loads(b'{"day": "2026-11-24", "rows": 5}').manifest_version
(3, 1)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

# 3: `filters`, the API filters the day was collected under (2 and earlier were collected unfiltered), and
# `compactions`. 4: `digests`, each file's size, rows and SHA-256, for `make verify`.
MANIFEST_VERSION = 4
# The name of a local day's manifest file.
MANIFEST = "_manifest.json"


class Window(msgspec.Struct, frozen=True):
    """The day's window, epoch ms, end exclusive."""

    start_ms: int
    end_ms: int


class Compaction(msgspec.Struct, frozen=True):
    """One compaction: the day's rows rewritten, verified, into `files` (see `storage.compaction`)."""

    run_id: str
    at: str
    seconds: float
    files_before: int
    row_groups_before: int
    bytes_before: int
    files: list[str]
    row_groups: int
    bytes: int


class FileDigest(msgspec.Struct, frozen=True):
    """What one stored file was when it was written: `make verify` reads it again and compares."""

    rows: int
    bytes: int
    sha256: str


class TopUp(msgspec.Struct, frozen=True):
    """One top-up: the records created since `from_ms` that a run added to the day."""

    run_id: str
    from_ms: int
    scan_started_ms: int
    added: int
    requests: int
    at: str


class Manifest(msgspec.Struct, kw_only=True):
    """One version of a stored day."""

    day: dt.date
    rows: int
    quarantined: int = 0
    # The day's Parquet files (names within the day's folder or partition).
    files: list[str] = msgspec.field(default_factory=list)
    bytes: int = 0
    schema_version: int = 1
    run_id: str = ""
    # Absent in manifests written before tenants existed.
    tenant: str | None = None
    window: Window | None = None
    source_total_at_scan: int | None = None
    # The service's clock when the scan began, and the watermark: every record created at or before it is
    # stored. None for days stored before top-ups existed (those are scanned in full).
    scan_started_ms: int | None = None
    watermark_ms: int | None = None
    # The scan's figures: pages, slices, duplicates_dropped, ids_held_peak, requests, retries, ...
    scan: dict[str, int] = msgspec.field(default_factory=dict)
    top_ups: list[TopUp] = msgspec.field(default_factory=list)
    # Rows per UTC hour (24), and per app_id ("None" for records without one).
    hourly: list[int] = msgspec.field(default_factory=list)
    apps: dict[str, int] = msgspec.field(default_factory=dict)
    written_at: str = ""
    # On object storage: the version's quarantine objects (keys beside the table).
    quarantine_files: list[str] = msgspec.field(default_factory=list)
    # The Activities API filters the day was collected under (`mdca.filters`, normalized); empty: every activity.
    # Days stored before filters existed have none, and were collected unfiltered.
    filters: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    # Each compaction of the day; the day is compacted while its files are the last one's.
    compactions: list[Compaction] = msgspec.field(default_factory=list)
    # Each file's digest (by name), taken as it was written; empty in manifests before version 4.
    digests: dict[str, FileDigest] = msgspec.field(default_factory=dict)
    # Records whose bytes were not valid UTF-8, by id: their bytes exactly as received, base64 (their `raw` holds
    # them with each invalid byte as U+FFFD, which a string column must). Empty for nearly every day.
    received_bytes: dict[str, str] = msgspec.field(default_factory=dict)
    manifest_version: int = 1

    @property
    def compacted(self) -> bool:
        """Whether the version is a compaction's output (a top-up since adds a file: it is not)."""
        return bool(self.compactions) and sorted(self.compactions[-1].files) == sorted(self.files)


_DECODER = msgspec.json.Decoder(Manifest)


def dumps(manifest: Manifest) -> bytes:
    """The manifest as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2)


def loads(data: bytes | str) -> Manifest:
    """A manifest from its JSON; raises msgspec.ValidationError naming the field that is wrong."""
    return _DECODER.decode(data)
