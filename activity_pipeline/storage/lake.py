"""The dataset on object storage (`ACTIVITY_DATA_URL`): one Delta Lake table, written with delta-rs.

Object storage has no rename, and the local layout's atomic day swap rests on one. A Delta table replaces it
with a commit log: a day's new files are uploaded under names no other version uses, and become the day
only when one commit (a conditional write of the log's next entry) removes the old files and adds the new
(`storage.lake_writer`). So a reader that goes through the log (DuckDB, Spark, Trino, Fabric, Databricks,
polars, delta-rs) sees the old day or the new one, whole; a run killed before its commit leaves files no
version names (vacuum removes them); two runs of different days or tenants commit side by side (the log's
conflict check lets writes to different partitions through).

    <url>/activities/                        the Delta table, partitioned by tenant and date
        _delta_log/                          its commits
        tenant=<name>/date=YYYY-MM-DD/*.parquet
    <url>/_manifests/tenant=<name>/date=YYYY-MM-DD/<run>.json   each version's manifest (see below)
    <url>/_quarantine/tenant=<name>/date=YYYY-MM-DD/<run>.jsonl records that could not be rows
    <url>/_health/tenant=<name>/YYYY-MM-DD.json                  the count check's last word on the day

A manifest is written before its version's commit and lists the version's files; the day's manifest is
the newest one whose files are exactly the files the table's current version holds for the day. A run
killed between the two leaves a manifest that matches nothing.

The Parquet files are written locally first, by the same staging writer and settings as the local layout
(under `ACTIVITY_DATA_DIR/.staging`), then uploaded. Credentials come from each cloud's standard chain, read
by delta-rs and obstore (the `AWS_*`, `AZURE_*` and `GOOGLE_*` variables, an instance role, a managed
identity); never from this project's settings.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import msgspec

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
from activity_pipeline.storage.delta import (
    DELETED,
    HEALTH,
    MANIFESTS,
    PARTITION_BY,
    QUARANTINES,
    TABLE,
    TABLE_SCHEMA,
    Lake,
    partition,
)
from activity_pipeline.storage.errors import DamagedDayError
from activity_pipeline.storage.facts import DayFacts, query_rows
from activity_pipeline.storage.integrity import (
    Verification,
    decode_verification,
    encode_verification,
    verify_files,
)
from activity_pipeline.storage.lake_sql import duckdb_setup, duckdb_url
from activity_pipeline.storage.lake_writer import LakeDayWriter
from activity_pipeline.storage.layout import VERIFIED, TenantPaths, check_root
from activity_pipeline.storage.manifest import Manifest, loads

Files = dict[tuple[str, dt.date], list[dict[str, Any]]]


class LakeStore(TenantStore):
    """One tenant's days in the table. Work in progress and locks stay on local disk under `root`
    (`ACTIVITY_DATA_DIR`), as in the local layout; days, manifests and findings go to `lake`."""

    def __init__(self, lake: Lake, root: Path, tenant: str) -> None:
        self.lake = lake
        self.tenant = tenant
        self.staging = TenantPaths(root, tenant).staging

    def __repr__(self) -> str:
        return f"LakeStore({self.lake.url!r}, {self.tenant!r})"

    def writer(self, day: dt.date, *, run_id: str | None = None, prefix: str = "part") -> LakeDayWriter:
        return LakeDayWriter(
            self.lake, self.tenant, self.staging, day, url=self.day_location(day), run_id=run_id, prefix=prefix
        )

    def day_location(self, day: dt.date) -> str:
        """The day's folder, as DuckDB reads it (`duckdb_url`)."""
        return duckdb_url(f"{self.lake.table_url}/{partition(self.tenant, day)}")

    def current_files(self) -> dict[dt.date, list[dict[str, Any]]]:
        """The tenant's files in the table's current version, per day: name, bytes, rows."""
        return {day: files for (tenant, day), files in self.lake.files().items() if tenant == self.tenant}

    def files_by_day(self) -> dict[dt.date, list[str]]:
        return {day: sorted(f["name"] for f in files) for day, files in self.current_files().items()}

    def day_files(self, day: dt.date) -> list[str]:
        """The URLs of the day's files in the current version (empty: the day is not stored)."""
        names = sorted(f["name"] for f in self.current_files().get(day, []))
        return [f"{self.day_location(day)}/{name}" for name in names]

    def manifest(self, day: dt.date, files: list[str] | None = None) -> Manifest | None:
        """The manifest of the day's current version (whose files are `files`, when known), or None."""
        names = sorted(f["name"] for f in self.current_files().get(day, [])) if files is None else sorted(files)
        if not names:
            return None
        found = []
        for key in self.lake.keys(f"{MANIFESTS}/{partition(self.tenant, day)}"):
            data = self.lake.get(key)
            try:
                candidate = loads(data) if data is not None else None
            except msgspec.DecodeError:
                continue  # not a manifest (a torn upload): it describes no version
            if candidate is not None and sorted(candidate.files) == names:
                found.append(candidate)
        # A top-up that found nothing new describes the same files with a later watermark: the newest wins.
        return max(found, key=lambda m: (len(m.top_ups), m.written_at), default=None)

    def day_rows(self) -> dict[dt.date, int]:
        return {day: sum(int(f["rows"] or 0) for f in files) for day, files in self.current_files().items()}

    def facts(self, day: dt.date) -> DayFacts:
        """The files of the table's current version, read in place."""
        names = sorted(f["name"] for f in self.current_files().get(day, []))
        if not names:
            return DayFacts(day, exists=False)
        facts = DayFacts(day, exists=True, manifest=self.manifest(day, names))
        facts.quarantined = facts.manifest.quarantined if facts.manifest is not None else 0
        urls = [f"{self.day_location(day)}/{n}" for n in names]
        facts.rows = query_rows(
            facts, urls, duckdb_setup(self.lake.url), self.staging / "duckdb-spill", schema_check=True
        )
        return facts

    def ids_since(self, day: dt.date, created_from_ms: int) -> list[str]:
        import duckdb

        urls = self.day_files(day)
        if not urls:
            return []
        with duckdb.connect() as con:
            for sql in duckdb_setup(self.lake.url):
                con.execute(sql)
            try:
                rows = con.execute(
                    "SELECT id FROM read_parquet(?) WHERE created >= make_timestamptz(? * 1000)",
                    [urls, created_from_ms],
                )
                return [r[0] for r in rows.fetchall()]
            except duckdb.InvalidInputException as exc:
                raise DamagedDayError(f"a stored file of {day} cannot be read ({str(exc)[:300]})") from None

    def delete_day(self, day: dt.date, *, reason: str, run_id: str) -> DeletedDay | None:
        """One Delta commit removes the day's files (a real deletion: `dataChange: true`); vacuum removes the files
        themselves once no version within the table's retention needs them. The day's manifests, quarantine and
        finding go at once."""
        from deltalake.transaction import CommitProperties

        with self.writer(day, run_id=run_id, prefix="delete"):
            manifest = self.manifest(day)
            if manifest is None:
                return None
            record = DeletedDay(
                tenant=self.tenant, day=day, rows=manifest.rows, files=len(manifest.files), bytes=manifest.bytes,
                deleted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason=reason, run_id=run_id,
                version=manifest.run_id,
            )  # fmt: skip
            self.lake.put(f"{DELETED}/tenant={self.tenant}/{day.isoformat()}.json", msgspec.json.encode(record))
            self.lake.table().create_write_transaction(
                [],
                mode="overwrite",
                schema=TABLE_SCHEMA,
                partition_by=PARTITION_BY,
                partition_filters=[("tenant", "=", self.tenant), ("date", "=", day.isoformat())],
                commit_properties=CommitProperties(
                    custom_metadata={"activity_pipeline.run_id": run_id, "activity_pipeline.deleted": reason}
                ),
            )
            where = partition(self.tenant, day)
            self.lake.delete(
                [
                    *self.lake.keys(f"{MANIFESTS}/{where}"),
                    *self.lake.keys(f"{QUARANTINES}/{where}"),
                    self._finding_key(day),
                ]
            )
            return record

    def deleted_days(self) -> list[DeletedDay]:
        found = (self.lake.get(k) for k in self.lake.keys(f"{DELETED}/tenant={self.tenant}"))
        return sorted(
            (d for d in (decode_deleted(x) for x in found if x is not None) if d is not None), key=lambda d: d.day
        )

    def _verify_version(self, day: dt.date, manifest: Manifest) -> Verification:
        """Each file downloaded to the staging folder, verified, and removed, one at a time."""

        present = sorted(f["name"] for f in self.current_files().get(day, []))
        where = partition(self.tenant, day)
        self.staging.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.staging, prefix=f"verify-{day.isoformat()}.") as folder:
            files = {}
            for name in manifest.files:
                try:
                    self.lake.download(f"{TABLE}/{where}/{name}", Path(folder) / name)
                except FileNotFoundError:
                    continue
                files[name] = Path(folder) / name
            return verify_files(self.tenant, manifest, files, present=present)

    def record_verification(self, verification: Verification) -> None:
        self.lake.put(f"{VERIFIED}/tenant={self.tenant}/{verification.day.isoformat()}.json",
                      encode_verification(verification))  # fmt: skip

    def verification(self, day: dt.date) -> Verification | None:
        data = self.lake.get(f"{VERIFIED}/tenant={self.tenant}/{day.isoformat()}.json")
        return None if data is None else decode_verification(data)

    def verifications(self) -> dict[dt.date, Verification]:
        found = (self.lake.get(k) for k in self.lake.keys(f"{VERIFIED}/tenant={self.tenant}"))
        return {v.day: v for v in (decode_verification(d) for d in found if d is not None) if v is not None}

    def _finding_key(self, day: dt.date) -> str:
        # The same names as on local disk (storage.layout.HEALTH), beside the table.
        return f"{HEALTH}/tenant={self.tenant}/{day.isoformat()}.json"

    def record_finding(self, finding: Finding) -> str:
        """One object, written whole by one PUT."""
        key = self._finding_key(finding.day)
        self.lake.put(key, encode_finding(finding))
        return f"{self.lake.url}/{key}"

    def findings(self) -> list[Finding]:
        found = (self.lake.get(k) for k in self.lake.keys(f"{HEALTH}/tenant={self.tenant}"))
        return [f for f in (decode_finding(d) for d in found if d is not None) if f is not None]

    def finding(self, day: dt.date) -> Finding | None:
        data = self.lake.get(self._finding_key(day))
        return None if data is None else decode_finding(data)


class LakeDataset(Dataset):
    """Every tenant's days in the Delta table at `url`; `root` (`ACTIVITY_DATA_DIR`) keeps work in progress,
    locks and the DuckDB file."""

    views_follow_writes = False

    def __init__(self, root: Path, url: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.lake = Lake(url)

    @property
    def location(self) -> str:
        return self.lake.url

    def tenant(self, name: str) -> LakeStore:
        return LakeStore(self.lake, self.root, name)

    def check(self) -> None:
        check_root(self.root)
        self.lake.check()

    def oldest_days(self) -> dict[str, dt.date]:
        oldest: dict[str, dt.date] = {}
        for tenant, day in self.lake.files():
            oldest[tenant] = min(day, oldest.get(tenant, day))
        return oldest

    def vacuum(self, horizon_hours: int, *, enforce_horizon: bool = True) -> int:
        removed = self.lake.table().vacuum(
            retention_hours=horizon_hours, dry_run=False, enforce_retention_duration=enforce_horizon
        )
        return len(removed)

    def view_sources(self) -> ViewSources:
        """Over the table's current files, from one read of its log."""
        files = self.lake.files()
        uris = sorted(
            duckdb_url(f"{self.lake.table_url}/{partition(tenant, day)}/{f['name']}")
            for (tenant, day), day_files in files.items()
            for f in day_files
        )
        activities = None
        if uris:
            listed = ", ".join(_sql(u) for u in uris)
            activities = (
                f"SELECT tenant, * EXCLUDE (tenant) FROM read_parquet([{listed}], hive_partitioning = true, "
                "hive_types = {'tenant': VARCHAR, 'date': DATE}, union_by_name = true)"
            )
        findings = duckdb_url(f"{self.lake.url}/{HEALTH}/tenant=*/*.json") if self.lake.keys(HEALTH) else None
        deleted = duckdb_url(f"{self.lake.url}/{DELETED}/tenant=*/*.json") if self.lake.keys(DELETED) else None
        pairs = sorted(files)
        stored = (
            "SELECT * FROM (VALUES "
            + ", ".join(f"({_sql(t)}, DATE '{d.isoformat()}')" for t, d in pairs)
            + ") AS s(tenant, date)"
            if pairs
            else "SELECT NULL::VARCHAR AS tenant, NULL::DATE AS date WHERE false"
        )
        rows = {key: sum(int(f["rows"] or 0) for f in day_files) for key, day_files in files.items()}
        return ViewSources(
            progress=self._progress(files),
            setup=duckdb_setup(self.lake.url),
            script=duckdb_setup(self.lake.url, script=True),
            activities=activities,
            findings=findings,
            stored=stored,
            rows=rows,
            deleted=deleted,
        )

    def _progress(self, files: dict[tuple[str, dt.date], list[dict]]) -> str:
        """The two newest days of each tenant, as their manifests were when the file was built (on object storage
        the views name the files of that moment; a run that writes a version builds the file again)."""
        newest: dict[str, list[dt.date]] = {}
        for tenant, day in sorted(files):
            newest.setdefault(tenant, []).append(day)
        found = []
        for tenant, days in newest.items():
            store = self.tenant(tenant)
            for day in days[-2:]:
                manifest = store.manifest(day, [f["name"] for f in files[(tenant, day)]])
                if manifest is None or manifest.watermark_ms is None:
                    continue
                collected = f"TIMESTAMPTZ {_sql(manifest.written_at)}" if manifest.written_at else "NULL::TIMESTAMPTZ"
                watermark = f"make_timestamptz({int(manifest.watermark_ms)} * 1000)"
                found.append(f"({_sql(tenant)}, DATE '{day.isoformat()}', {watermark}, {collected})")
        if not found:
            return ViewSources.progress
        return f"SELECT * FROM (VALUES {', '.join(found)}) AS p(tenant, date, watermark, collected_at)"


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
