"""The dataset in local folders (`ACTIVITY_DATA_DIR`): one self-contained Parquet folder per day, replaced
whole or not at all. See `storage.layout` for where everything is.

A day's folder (`activities/tenant=<name>/date=YYYY-MM-DD/`):

    part-HHMMSSmmm.parquet   one file per scan slice, named by its start time (`late-...` for a top-up's)
    _manifest.json           row count, scan figures, schema version (`storage.manifest`)
    _quarantine.jsonl        records without `_id` or `timestamp`, if any

A run writes a complete new folder under the tenant's staging folder (`storage.staging`), syncs it, and swaps it
for the day's folder in one step (renameat2 RENAME_EXCHANGE on Linux), so a reader sees the old day or the new
day, never a mix, and a run that dies leaves the old day untouched.

>>> store = LocalStore(Path("/srv/mdca"), "contoso")
>>> store.day_location(dt.date(2026, 11, 24))
PosixPath('/srv/mdca/activities/tenant=contoso/date=2026-11-24')
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from activity_pipeline.storage import index
from activity_pipeline.storage.core import (
    Dataset,
    DeletedDay,
    Finding,
    TenantStore,
    ViewSources,
    decode_deleted,
    decode_finding,
    encode_finding,
)
from activity_pipeline.storage.errors import DamagedDayError
from activity_pipeline.storage.facts import DayFacts, query_rows, why
from activity_pipeline.storage.integrity import (
    Verification,
    decode_verification,
    encode_verification,
    verify_files,
)
from activity_pipeline.storage.layout import DATASET, DELETED, HEALTH, TenantPaths, adopt_legacy_days, check_root
from activity_pipeline.storage.manifest import MANIFEST, Compaction, Manifest, dumps, loads
from activity_pipeline.storage.schema import TIMESTAMP, version_of
from activity_pipeline.storage.staging import QUARANTINE, StagedDay

HIVE = "hive_partitioning = true, hive_types = {'tenant': VARCHAR, 'date': DATE}"


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


def _write_atomically(target: Path, data: bytes) -> None:
    """One small file, replaced whole, so that a reader never sees half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


class LocalDayWriter(StagedDay):
    """Stage a day's files, then swap the staged folder for the day's folder in one step."""

    def __init__(self, store: LocalStore, day: dt.date, *, run_id: str | None, prefix: str) -> None:
        super().__init__(store.tenant, store.staging, day, run_id=run_id, prefix=prefix)
        self.store = store
        self._target = store.day_location(day)

    @property
    def target(self) -> Path:
        return self._target

    def carry_over(self, manifest: Manifest) -> None:
        """Start from the stored version of the day: its files (hard links where the filesystem allows, so no
        bytes are copied) and its quarantine. The new version is then that plus what is written after."""
        if self._writers or self._closed or self.rows:
            raise RuntimeError("carry_over must come before any write")
        for name in manifest.files:
            try:
                os.link(self.target / name, self.stage / name)
            except OSError:
                shutil.copy2(self.target / name, self.stage / name)
        quarantine = self.target / QUARANTINE
        if quarantine.exists():
            shutil.copy2(quarantine, self.stage / QUARANTINE)  # copied: this version may append to it
        self.rows, self.quarantined = manifest.rows, manifest.quarantined
        self._carried = manifest

    def commit(self, **figures: Any) -> Manifest:
        """Finish the files, write the manifest, and swap the staged day into place."""
        staged = self._close_stage()
        self._guard([str(p) for p in staged])
        figures = {"digests": self._digests(staged, self._carried), **figures}
        manifest = self._manifest([p.name for p in staged], sum(p.stat().st_size for p in staged), figures)
        return self._swap_in(manifest)

    def source_files(self, manifest: Manifest) -> list[Path]:
        folder = self.stage / "source"
        folder.mkdir()
        for name in manifest.files:
            try:
                os.link(self.target / name, folder / name)
            except OSError:
                shutil.copy2(self.target / name, folder / name)
        return [folder / name for name in sorted(manifest.files)]

    def commit_rearranged(self, previous: Manifest, files: Sequence[Path], compaction: Compaction) -> Manifest:
        """The staged `files` (and the day's quarantine, as it is) swapped in for the day, as a full scan's are."""
        shutil.rmtree(self.stage / "source", ignore_errors=True)
        if (self.target / QUARANTINE).exists():
            shutil.copy2(self.target / QUARANTINE, self.stage / QUARANTINE)
        files = list(files)
        manifest = self._rearranged(previous, files, compaction)
        return self._swap_in(manifest)

    def _swap_in(self, manifest: Manifest) -> Manifest:
        """Write the manifest into the staged folder and swap the folder in for the day's."""
        (self.stage / MANIFEST).write_bytes(dumps(manifest))
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
        index.record_day(self.store.paths, self.day, self.rows, self.store.manifest_rows)
        # self.stage now holds the previous version, if there was one.
        shutil.rmtree(self.stage, ignore_errors=True)
        return manifest


class LocalStore(TenantStore):
    """One tenant's days in local folders under `root`."""

    def __init__(self, root: Path, tenant: str) -> None:
        self.paths = TenantPaths(root, tenant)
        self.tenant = tenant
        self.staging = self.paths.staging

    def __repr__(self) -> str:
        return f"LocalStore({str(self.paths.root)!r}, {self.tenant!r})"

    def writer(self, day: dt.date, *, run_id: str | None = None, prefix: str = "part") -> LocalDayWriter:
        return LocalDayWriter(self, day, run_id=run_id, prefix=prefix)

    def day_location(self, day: dt.date) -> Path:
        return self.paths.day_dir(day)

    def manifest(self, day: dt.date) -> Manifest | None:
        try:
            return loads((self.paths.day_dir(day) / MANIFEST).read_bytes())
        except FileNotFoundError:
            return None

    def manifest_rows(self) -> dict[dt.date, int]:
        """Every stored day's rows, from its manifest: what the index is built from."""
        found = {}
        for path in self.paths.days.glob(f"date=*/{MANIFEST}"):
            day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
            found[day] = loads(path.read_bytes()).rows
        return found

    def day_rows(self) -> dict[dt.date, int]:
        return index.day_rows(self.paths, self.manifest_rows)

    def days(self) -> list[dt.date]:
        # From the folders, not the index: a day committed is a folder with a manifest.
        found = self.paths.days.glob(f"date=*/{MANIFEST}")
        return sorted(dt.date.fromisoformat(p.parent.name.removeprefix("date=")) for p in found)

    def files_by_day(self) -> dict[dt.date, list[str]]:
        found: dict[dt.date, list[str]] = {}
        for path in self.paths.days.glob(f"date=*/{MANIFEST}"):
            day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
            found[day] = sorted(p.name for p in path.parent.glob("*.parquet"))
        return found

    def facts(self, day: dt.date) -> DayFacts:
        folder = self.paths.day_dir(day)
        files = sorted(folder.glob("*.parquet"))
        if not files:
            return DayFacts(day, exists=False)
        facts = DayFacts(day, exists=True, manifest=self.manifest(day))
        readable = []
        for f in files:
            try:
                meta = pq.ParquetFile(f)
            except (pa.ArrowException, ValueError, OSError) as exc:
                facts.unreadable[f.name] = why(exc)
                continue
            readable.append(str(f))
            facts.rows += meta.metadata.num_rows
            if version_of(meta.schema_arrow) is None:
                facts.schema_mismatches.append(f.name)
        quarantine = folder / QUARANTINE
        if quarantine.exists():
            with quarantine.open("rb") as fh:
                facts.quarantined = sum(1 for _ in fh)
        query_rows(facts, readable, [], self.staging / "duckdb-spill")
        return facts

    def ids_since(self, day: dt.date, created_from_ms: int) -> list[str]:
        """Reads the `id` and `created` columns only, and of those only row groups whose statistics reach far
        enough."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        files = sorted(self.paths.day_dir(day).glob("*.parquet"))
        if not files:
            return []
        try:
            dataset = ds.dataset([str(f) for f in files], format="parquet")
            since = pa.scalar(created_from_ms, type=pa.int64()).cast(TIMESTAMP)
            table = dataset.to_table(columns=["id"], filter=pc.field("created") >= since)
        except (pa.ArrowException, ValueError) as exc:  # ArrowInvalid is a ValueError; damaged footers raise it
            raise DamagedDayError(f"a stored file of {day} cannot be read ({str(exc)[:300]})") from None
        return table.column("id").to_pylist()

    def delete_day(self, day: dt.date, *, reason: str, run_id: str) -> DeletedDay | None:
        with self.writer(day, run_id=run_id, prefix="delete") as writer:
            manifest = self.manifest(day)
            if manifest is None:
                return None
            folder = self.paths.day_dir(day)
            record = DeletedDay(
                tenant=self.tenant, day=day, rows=manifest.rows, files=len(manifest.files), bytes=manifest.bytes,
                deleted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason=reason, run_id=run_id,
                version=manifest.run_id,
            )  # fmt: skip
            _write_atomically(self.paths.deleted / f"{day.isoformat()}.json", msgspec.json.encode(record))
            gone = writer.stage.with_name(writer.stage.name + ".deleted")
            os.rename(folder, gone)  # one step: the day is there whole, or not at all
            _fsync(folder.parent)
            (self.paths.health / f"{day.isoformat()}.json").unlink(missing_ok=True)
            shutil.rmtree(gone, ignore_errors=True)
            return record

    def deleted_days(self) -> list[DeletedDay]:
        found = (decode_deleted(p.read_bytes()) for p in self.paths.deleted.glob("*.json"))
        return sorted((d for d in found if d is not None), key=lambda d: d.day)

    def _verify_version(self, day: dt.date, manifest: Manifest) -> Verification:
        folder = self.paths.day_dir(day)
        files = {name: folder / name for name in manifest.files if (folder / name).is_file()}
        present = [p.name for p in folder.glob("*.parquet")]
        return verify_files(self.tenant, manifest, files, present=present)

    def record_verification(self, verification: Verification) -> None:
        target = self.paths.verified / f"{verification.day.isoformat()}.json"
        _write_atomically(target, encode_verification(verification))

    def verification(self, day: dt.date) -> Verification | None:
        try:
            return decode_verification((self.paths.verified / f"{day.isoformat()}.json").read_bytes())
        except FileNotFoundError:
            return None

    def verifications(self) -> dict[dt.date, Verification]:
        found = (decode_verification(p.read_bytes()) for p in self.paths.verified.glob("*.json"))
        return {v.day: v for v in found if v is not None}

    def record_finding(self, finding: Finding) -> Path:
        """One small file per day, replaced atomically, so that a reader never sees half of one."""
        target = self.paths.health / f"{finding.day.isoformat()}.json"
        _write_atomically(target, encode_finding(finding))
        return target

    def findings(self) -> list[Finding]:
        found = (decode_finding(p.read_bytes()) for p in self.paths.health.glob("*.json"))
        return [f for f in found if f is not None]

    def finding(self, day: dt.date) -> Finding | None:
        try:
            return decode_finding((self.paths.health / f"{day.isoformat()}.json").read_bytes())
        except FileNotFoundError:
            return None


class LocalDataset(Dataset):
    """Every tenant's days under `root` (`ACTIVITY_DATA_DIR`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def location(self) -> str:
        return str(self.root)

    def tenant(self, name: str) -> LocalStore:
        return LocalStore(self.root, name)

    def check(self) -> None:
        check_root(self.root)

    def adopt_legacy_days(self, tenant: str) -> list[dt.date]:
        return adopt_legacy_days(self.tenant(tenant).paths).days

    def oldest_days(self) -> dict[str, dt.date]:
        oldest: dict[str, dt.date] = {}
        for path in (self.root / DATASET).glob(f"tenant=*/date=*/{MANIFEST}"):
            tenant = path.parent.parent.name.removeprefix("tenant=")
            day = dt.date.fromisoformat(path.parent.name.removeprefix("date="))
            oldest[tenant] = min(day, oldest.get(tenant, day))
        return oldest

    def view_sources(self) -> ViewSources:
        days = self.root / DATASET
        glob = days / "tenant=*" / "date=*" / "*.parquet"
        activities = None
        if any(days.glob("tenant=*/date=*/*.parquet")):
            # union_by_name: days not yet upgraded lack the newer columns, which then read as NULL.
            activities = (
                f"SELECT tenant, * EXCLUDE (tenant) FROM read_parquet({_sql(str(glob))}, {HIVE}, union_by_name = true)"
            )
        health = self.root / HEALTH
        findings = str(health / "tenant=*" / "*.json") if any(health.glob("tenant=*/*.json")) else None
        # Read when queried, from the manifests: current between rebuilds of the DuckDB file.
        progress = {}
        if any(days.glob(f"tenant=*/date=*/{MANIFEST}")):
            manifests = days / "tenant=*" / "date=*" / MANIFEST
            stored = (
                f"SELECT tenant, day AS date FROM read_json({_sql(str(manifests))}, hive_partitioning = true, "
                "hive_types = {'tenant': VARCHAR}, columns = {day: 'DATE'})"
            )
            progress = {
                "progress": "SELECT tenant, day AS date, make_timestamptz(watermark_ms * 1000) AS watermark, "
                "TRY_CAST(written_at AS TIMESTAMPTZ) AS collected_at "
                f"FROM read_json({_sql(str(manifests))}, hive_partitioning = true, hive_types = {{'tenant': VARCHAR}}, "
                "columns = {day: 'DATE', watermark_ms: 'BIGINT', written_at: 'VARCHAR'})"
            }
        else:
            stored = "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date WHERE false"
        rows = {
            (folder.name.removeprefix("tenant="), day): n
            for folder in sorted(days.glob("tenant=*"))
            for day, n in self.tenant(folder.name.removeprefix("tenant=")).day_rows().items()
        }
        deleted_dir = self.root / DELETED
        deleted = str(deleted_dir / "tenant=*" / "*.json") if any(deleted_dir.glob("tenant=*/*.json")) else None
        return ViewSources(
            setup=[],
            script=None,
            activities=activities,
            findings=findings,
            stored=stored,
            rows=rows,
            deleted=deleted,
            **progress,
        )


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
