"""Whether a stored day is still what was written: each file's digest taken at write time, and read again later.

Every writer of a day (a scan, a top-up, a compaction) records in the day's manifest each file's rows, bytes and
SHA-256 (`Manifest.digests`). `verify_files` reads every file of a day again, whole: its bytes against the
digest, and every column of every row group decoded (by DuckDB, in a session capped at 64 MB). Files written
since manifest version 4 also carry Parquet's page checksums, for other readers: the digest covers every byte
here. A file without a recorded digest (written before) is decoded and each `raw` parsed as JSON whose
`_id` is the row's `id`: what can still be proved without one.

No Dagster here; `storage.core.TenantStore.verify_day` feeds it the day's files on either backend, and
`activity_pipeline.verify` (`make verify`) and the weekly verification job report what it finds.

>>> digests = file_digests([Path("part-000000000.parquet")])          # doctest: +SKIP
>>> verify_files(manifest, {"part-000000000.parquet": path}).problems  # doctest: +SKIP
[]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import msgspec
import pyarrow.parquet as pq

from activity_pipeline.storage.manifest import FileDigest, Manifest

# Read this much at a time, to hash and to download: a few of these are all a verification holds of a file.
CHUNK = 4 << 20


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """The SHA-256 (hex) and length of what `stream` holds, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_digests(paths: Sequence[Path]) -> dict[str, FileDigest]:
    """Each file's rows (from its footer), bytes and SHA-256, by name: what its manifest records."""
    found = {}
    for path in paths:
        sha, size = _sha256_of(path)
        found[path.name] = FileDigest(rows=pq.read_metadata(path).num_rows, bytes=size, sha256=sha)
    return found


class Verification(msgspec.Struct, kw_only=True):
    """What a verification found on one version of a day, kept beside the dataset (one small JSON per day,
    replaced whole): the `intact` check and the weekly job read it back. Keep the field names."""

    tenant: str
    day: dt.date
    # The version verified (its manifest's run), and when.
    version: str
    verified_at: str
    intact: bool
    files: int
    rows: int
    bytes: int
    seconds: float
    # One line per damaged or unexpected file, naming it; empty when intact.
    problems: list[str] = msgspec.field(default_factory=list)
    # Files that had no digest to compare with (written before digests existed): decoded and JSON-checked only.
    undigested: int = 0


_VERIFICATION = msgspec.json.Decoder(Verification)


def encode_verification(v: Verification) -> bytes:
    return msgspec.json.encode(v)


def decode_verification(data: bytes | str) -> Verification | None:
    try:
        return _VERIFICATION.decode(data)
    except msgspec.DecodeError:
        return None


@dataclasses.dataclass
class FileCheck:
    name: str
    rows: int = 0
    bytes: int = 0
    problem: str | None = None


def check_file(name: str, path: Path, expected: FileDigest | None) -> FileCheck:
    """Read one stored file again: its bytes against `expected` (when there is one), then every column decoded,
    and without a digest, every `raw` parsed as JSON whose `_id` is the row's `id`. The hashing (which lets go of
    the GIL) runs beside the decoding."""
    from concurrent.futures import ThreadPoolExecutor

    result = FileCheck(name)
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
        hashing = pool.submit(_sha256_of, path)
        try:
            result.rows, bad_raw = _decode(path, json_check=expected is None)
            undecodable = None
        except Exception as exc:  # duckdb.Error, and what a damaged file makes of it
            if type(exc).__name__ == "OutOfMemoryException":
                raise
            undecodable, bad_raw = " ".join(str(exc).split())[:300], 0
        try:
            sha, result.bytes = hashing.result()
        except OSError as exc:
            result.problem = f"{name}: cannot be read ({exc.strerror or exc})"
            return result
    if expected is not None and (sha, result.bytes) != (expected.sha256, expected.bytes):
        size = ""
        if result.bytes != expected.bytes:
            size = f", {result.bytes:,} bytes where {expected.bytes:,} were written"
        result.problem = f"{name}: its bytes changed since it was written (SHA-256 differs{size})"
    elif undecodable is not None:
        result.problem = f"{name}: does not decode ({undecodable})"
    elif bad_raw:
        result.problem = f"{name}: {bad_raw:,} rows whose raw is not the JSON it was (not JSON, or another _id)"
    elif expected is not None and result.rows != expected.rows:
        result.problem = f"{name}: {result.rows:,} rows where {expected.rows:,} were written"
    return result


def _sha256_of(path: Path) -> tuple[str, int]:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def _decode(path: Path, *, json_check: bool) -> tuple[int, int]:
    """Every column of the file decoded by DuckDB (an aggregate over each, so that every page is read), in a
    session capped at 64 MB; (rows, rows whose raw is not a JSON object naming the row's id, when `json_check`)."""
    import duckdb

    from activity_pipeline.storage.schema import SCHEMA

    every = ", ".join(f"max({c})" for c in SCHEMA.names if c not in ("raw", "id")) + ", max(strlen(raw)), max(id)"
    settings = {"memory_limit": "64MB", "threads": 2, "preserve_insertion_order": False}
    with duckdb.connect(config=settings) as con:
        row = con.execute(f"SELECT count(*), {every} FROM read_parquet(?)", [str(path)]).fetchone()
    assert row is not None
    return int(row[0]), _bad_raw(path) if json_check else 0


class _Keys(msgspec.Struct, gc=False):
    id: str | None = msgspec.field(default=None, name="_id")


_keys = msgspec.json.Decoder(_Keys).decode
# Rows parsed at a time: bounds the memory of the JSON check (raw is ~3.5 KB a row).
BATCH_ROWS = 8_192


def _bad_raw(path: Path) -> int:
    """Rows whose `raw` is not a JSON object whose `_id` is the row's `id`."""
    bad = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=["id", "raw"]):
        for rid, raw in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            try:
                bad += _keys(raw).id != rid
            except (msgspec.DecodeError, msgspec.ValidationError):
                bad += 1
    return bad


def verify_files(
    tenant: str, manifest: Manifest, files: Mapping[str, Path], *, present: Sequence[str] | None = None
) -> Verification:
    """Verify the version `manifest` describes from local copies of its files (`files`: name -> path, each named
    by the manifest). `present`: every Parquet file the day's location holds now, when the backend can list them
    (a file there that the manifest does not name is read by the views, so it is a problem too)."""
    started = time.monotonic()
    problems: list[str] = []
    rows = size = undigested = 0
    for name in sorted(manifest.files):
        path = files.get(name)
        if path is None:
            problems.append(f"{name}: missing (the manifest lists it)")
            continue
        expected = manifest.digests.get(name)
        undigested += expected is None
        checked = check_file(name, path, expected)
        rows, size = rows + checked.rows, size + checked.bytes
        if checked.problem:
            problems.append(checked.problem)
    for name in sorted(set(present or ()) - set(manifest.files)):
        problems.append(f"{name}: a file the manifest does not list (the views read it)")
    if not problems and rows != manifest.rows:
        problems.append(f"the files hold {rows:,} rows where the manifest says {manifest.rows:,}")
    return Verification(
        tenant=tenant,
        day=manifest.day,
        version=manifest.run_id,
        verified_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        intact=not problems,
        files=len(manifest.files),
        rows=rows,
        bytes=size,
        seconds=round(time.monotonic() - started, 2),
        problems=problems,
        undigested=undigested,
    )
