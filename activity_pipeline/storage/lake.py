"""The dataset on object storage (`ACTIVITY_DATA_URL`): one Delta Lake table, written with delta-rs.

Object storage has no rename, and the local layout's atomic day swap rests on one. A Delta table replaces it
with a commit log: a day's new files are uploaded under names no other version uses, and become the day
only when one commit (a conditional write of the log's next entry) removes the old files and adds the new.
So a reader that goes through the log (DuckDB, Spark, Trino, Fabric, Databricks, polars, delta-rs) sees the
old day or the new one, whole; a run killed before its commit leaves files no version names (vacuum removes
them); two runs of different days or tenants commit side by side (the log's conflict check lets writes to
different partitions through).

    <url>/activities/                        the Delta table, partitioned by tenant and date
        _delta_log/                          its commits
        tenant=<name>/date=YYYY-MM-DD/*.parquet
    <url>/_manifests/tenant=<name>/date=YYYY-MM-DD/<run>.json   each version's manifest (see below)
    <url>/_quarantine/tenant=<name>/date=YYYY-MM-DD/<run>.jsonl records that could not be rows
    <url>/_health/tenant=<name>/YYYY-MM-DD.json                  the count check's last word on the day

A manifest is written before its version's commit and lists the version's files; the day's manifest is
the newest one whose files are exactly the files the table's current version holds for the day. A run
killed between the two leaves a manifest that matches nothing.

The Parquet files are written locally first, by the same writer and settings as the local layout (under
`ACTIVITY_DATA_DIR/.staging`), then uploaded. Credentials come from each cloud's standard chain, read by
delta-rs and obstore (the `AWS_*`, `AZURE_*` and `GOOGLE_*` variables, an instance role, a managed
identity); never from this project's settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from activity_pipeline.storage.layout import StorageLocationError, TenantData
from activity_pipeline.storage.schema import SCHEMA
from activity_pipeline.storage.writer import QUARANTINE, DayWriter

TABLE = "activities"
MANIFESTS = "_manifests"
QUARANTINES = "_quarantine"
HEALTH = "_health"
PARTITION_BY = ["tenant", "date"]
# The table's schema: the Parquet columns, then the partition columns (kept in the paths, not the files).
TABLE_SCHEMA = pa.schema([*SCHEMA, pa.field("tenant", pa.string(), nullable=False), pa.field("date", pa.date32())])

# Commit failures that say only that the table's metadata or protocol moved on: the commit is rebuilt on the
# new version. (Commits of other days delta-rs reconciles itself; a conflict on the day itself fails the run.)
RETRYABLE_COMMIT_FAILURES = ("Metadata changed since last commit", "Protocol changed since last commit")
COMMIT_ATTEMPTS = 5

SCHEMES = {
    "s3": "Amazon S3 (s3://bucket/prefix)",
    "az": "Azure Blob Storage (az://container/prefix)",
    "abfs": "Azure Data Lake Storage (abfs://container@account.dfs.core.windows.net/prefix)",
    "abfss": "Azure Data Lake Storage (abfss://container@account.dfs.core.windows.net/prefix)",
    "gs": "Google Cloud Storage (gs://bucket/prefix)",
}


class DayChangedError(RuntimeError):
    """Another run replaced a day while a top-up of it ran."""


class DataUrlError(ValueError):
    """ACTIVITY_DATA_URL is not a URL this project can write to."""


def parse_data_url(url: str) -> str:
    """The URL, checked and without a trailing slash; DataUrlError names what is wrong (never a password or
    query string the URL may carry)."""
    parsed = urllib.parse.urlsplit(url.strip())
    host = parsed.hostname or ""
    if parsed.username and parsed.scheme in ("abfs", "abfss"):
        host = f"{parsed.username}@{host}"
    shown = f"{parsed.scheme}://{host}{parsed.path}" if parsed.scheme else parsed.path
    if parsed.password is not None or parsed.query:
        raise DataUrlError(
            f"ACTIVITY_DATA_URL ({shown}) carries credentials or parameters. Credentials come from the cloud's "
            "own variables (AWS_*, AZURE_*, GOOGLE_*) or the machine's identity; remove them from the URL."
        )
    known = "; ".join(SCHEMES.values())
    if parsed.scheme not in SCHEMES:
        raise DataUrlError(
            f"ACTIVITY_DATA_URL={shown!r}: the scheme {parsed.scheme + '://' if parsed.scheme else '(none)'} is not "
            f"one of object storage's. Use {known}; or unset it to keep the dataset under ACTIVITY_DATA_DIR."
        )
    if not host:
        raise DataUrlError(f"ACTIVITY_DATA_URL={shown!r} names no bucket or container. Use {SCHEMES[parsed.scheme]}.")
    if parsed.scheme in ("abfs", "abfss") and "@" not in host:
        raise DataUrlError(f"ACTIVITY_DATA_URL={shown!r} names no storage account. Use {SCHEMES[parsed.scheme]}.")
    return url.strip().rstrip("/")


@dataclasses.dataclass(frozen=True)
class Lake:
    """The dataset at `url`."""

    url: str

    @property
    def table_url(self) -> str:
        return f"{self.url}/{TABLE}"

    @functools.cached_property
    def store(self) -> Any:
        from obstore.store import from_url

        return from_url(self.url)

    def check(self) -> None:
        """One listing of the table's log, so that a bucket that does not exist or credentials the service refuses
        stop a run at once, with a message that names them, instead of surfacing from deep inside a write.
        Raises StorageLocationError; other failures (an outage) pass through, for the run's retries."""
        import obstore

        try:
            next(iter(obstore.list(self.store, f"{TABLE}/_delta_log/", chunk_size=1)), None)
        except Exception as exc:  # obstore's errors share no base with Python's but its own BaseError
            problem = _storage_problem(str(exc))
            if problem is None:
                raise
            raise StorageLocationError(f"ACTIVITY_DATA_URL ({self.url}): {problem}") from None

    def table(self) -> Any:
        """The table's current version; it is created (empty) the first time."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(self.table_url)
        except TableNotFoundError:
            pass
        # A run that creates it at the same moment as another loses the conditional write of version 0: fine.
        with contextlib.suppress(DeltaError):
            DeltaTable.create(self.table_url, schema=TABLE_SCHEMA, partition_by=PARTITION_BY, mode="ignore")
        return DeltaTable(self.table_url)

    def files(self) -> dict[tuple[str, dt.date], list[dict[str, Any]]]:
        """Every file of the table's current version, per (tenant, day): name, bytes, rows. One read of the log."""
        return _files_of(self.table())

    def put_json(self, key: str, value: Any) -> None:
        import obstore

        obstore.put(self.store, key, json.dumps(value, indent=2, default=str).encode())

    def get_json(self, key: str) -> Any:
        import obstore

        try:
            return json.loads(bytes(obstore.get(self.store, key).bytes()))
        except FileNotFoundError:
            return None

    def keys(self, prefix: str) -> list[str]:
        import obstore

        return [item["path"] for batch in obstore.list(self.store, prefix + "/") for item in batch]


# What a storage service says when the place or the credentials are wrong, and what to tell the user.
_STORAGE_PROBLEMS = (
    (("NoSuchBucket", "ContainerNotFound", "bucket does not exist", "container does not exist"),
     "the bucket or container does not exist. Create it, or fix the name in ACTIVITY_DATA_URL."),
    (("InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthenticationFailed", "AuthorizationFailure",
      "AuthorizationPermissionMismatch", "AccessDenied", "InvalidAuthenticationInfo", "403 Forbidden",
      "401 Unauthorized", "ExpiredToken", "InvalidToken"),
     "the storage service refused the credentials. Check the cloud's own variables (AWS_ACCESS_KEY_ID and "
     "AWS_SECRET_ACCESS_KEY or the instance role; AZURE_STORAGE_ACCOUNT_KEY, AZURE_CLIENT_* or the managed "
     "identity; GOOGLE_APPLICATION_CREDENTIALS) and that they may read and write that bucket."),
    (("dns error", "Connection refused", "failed to lookup address", "error trying to connect"),
     "the storage service cannot be reached (DNS, refused connection). Check the URL's bucket and account, "
     "AWS_ENDPOINT_URL or AZURE_* endpoint settings, and this machine's network."),
)  # fmt: skip


def _storage_problem(text: str) -> str | None:
    for markers, problem in _STORAGE_PROBLEMS:
        if any(m.lower() in text.lower() for m in markers):
            return problem
    return None


def _files_of(table: Any) -> dict[tuple[str, dt.date], list[dict[str, Any]]]:
    """The files of a version of the table (a `DeltaTable`), per (tenant, day): name, bytes, rows."""
    found: dict[tuple[str, dt.date], list[dict[str, Any]]] = {}
    for a in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        day = a["partition.date"]
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        found.setdefault((a["partition.tenant"], day), []).append(
            {"name": a["path"].rsplit("/", 1)[-1], "bytes": a["size_bytes"], "rows": a.get("num_records")}
        )
    return found


def _partition(tenant: str, day: dt.date) -> str:
    return f"tenant={tenant}/date={day.isoformat()}"


@dataclasses.dataclass(frozen=True)
class LakeTenantData(TenantData):
    """One tenant's part of a dataset on object storage. Work in progress and locks stay on local disk under
    `root` (`ACTIVITY_DATA_DIR`), as in the local layout; days, manifests and findings go to `lake`."""

    lake: Lake = dataclasses.field(default=None)  # type: ignore[assignment]

    def day_url(self, day: dt.date) -> str:
        """The day's folder, as DuckDB reads it (`duckdb_url`)."""
        return duckdb_url(f"{self.lake.table_url}/{_partition(self.tenant, day)}")

    def day_dir(self, day: dt.date) -> Path:
        # Where the local writer stages the day's files; the day itself is `day_url`.
        return self.staging / f"date={day.isoformat()}.upload"

    def writer(self, day: dt.date, **kwargs: Any) -> LakeDayWriter:
        return LakeDayWriter(self, day, **kwargs)

    # -- reading -------------------------------------------------------------------------------------------

    def current_files(self) -> dict[dt.date, list[dict[str, Any]]]:
        """The tenant's files in the table's current version, per day: name, bytes, rows."""
        return {day: files for (tenant, day), files in self.lake.files().items() if tenant == self.tenant}

    def day_files(self, day: dt.date) -> list[str]:
        """The URLs of the day's files in the current version (empty: the day is not stored)."""
        return [f"{self.day_url(day)}/{f['name']}" for f in sorted(self.current_files().get(day, []), key=_name)]

    def manifest(self, day: dt.date, files: list[str] | None = None) -> dict[str, Any] | None:
        """The manifest of the day's current version, or None when the day is not stored."""
        names = sorted(f["name"] for f in self.current_files().get(day, [])) if files is None else sorted(files)
        if not names:
            return None
        found = []
        for key in self.lake.keys(f"{MANIFESTS}/{_partition(self.tenant, day)}"):
            candidate = self.lake.get_json(key)
            if candidate is not None and sorted(candidate.get("files", [])) == names:
                found.append(candidate)
        # A top-up that found nothing new describes the same files with a later watermark: the newest wins.
        return max(found, key=lambda m: (len(m.get("top_ups", [])), m.get("written_at", "")), default=None)

    def stored_days(self) -> list[dt.date]:
        return sorted(self.current_files())

    def row_total(self) -> int:
        return sum(int(f["rows"] or 0) for files in self.current_files().values() for f in files)

    def record_health(self, day: dt.date, record: dict[str, Any]) -> None:
        self.lake.put_json(f"{HEALTH}/tenant={self.tenant}/{day.isoformat()}.json", record)

    def health_records(self) -> list[dict[str, Any]]:
        keys = self.lake.keys(f"{HEALTH}/tenant={self.tenant}")
        return [r for r in (self.lake.get_json(k) for k in keys) if r is not None]


def _name(file: dict[str, Any]) -> str:
    return file["name"]


def _stats(path: Path) -> str:
    """The add action's statistics (rows; min, max and nulls of the two time columns), from the footer."""
    meta = pq.ParquetFile(path).metadata
    stats: dict[str, Any] = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for name in ("timestamp", "created"):
        col = SCHEMA.get_field_index(name)
        lows, highs, nulls = [], [], 0
        for g in range(meta.num_row_groups):
            s = meta.row_group(g).column(col).statistics
            if s is None or not s.has_min_max:
                continue
            lows.append(s.min)
            highs.append(s.max)
            nulls += s.null_count or 0
        if lows:
            stats["minValues"][name] = _delta_time(min(lows))
            stats["maxValues"][name] = _delta_time(max(highs))
            stats["nullCount"][name] = nulls
    return json.dumps(stats)


def _delta_time(value: Any) -> str:
    if isinstance(value, int):
        value = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class LakeDayWriter(DayWriter):
    """`DayWriter` whose commit uploads the staged files and commits them to the Delta table as the day.

    A full scan's version replaces the day's files (overwrite of the day's partition); a top-up's adds its
    file to them (append), the files it carried over staying as they are.
    """

    data: LakeTenantData

    def __init__(self, data: LakeTenantData, day: dt.date, **kwargs: Any) -> None:
        super().__init__(data, day, **kwargs)
        self.target = data.day_url(day)  # type: ignore[assignment]
        self._carried: dict[str, Any] | None = None

    def carry_over(self, manifest: dict[str, Any]) -> None:
        if self._writers or self._closed or self.rows:
            raise RuntimeError("carry_over must come before any write")
        self._carried = manifest
        self.rows, self.quarantined = int(manifest["rows"]), int(manifest.get("quarantined", 0))

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        import obstore
        from deltalake.transaction import AddAction

        carried = self._carried
        if carried is None:
            local = self._close_stage()
        else:  # a top-up: the carried files stay; only what it found is new
            self._close_files()
            local = sorted(self.stage.glob("*.parquet"))
        # Names no other version uses: the run's id in each.
        uploads = {f"{p.stem}-{self.run_id}.parquet": p for p in local}
        partition = _partition(self.data.tenant, self.day)
        quarantines = list((carried or {}).get("quarantine_files", []))
        if (self.stage / QUARANTINE).exists():
            quarantines.append(f"{QUARANTINES}/{partition}/{self.run_id}.jsonl")
        manifest = self._manifest(
            sorted([*(carried or {}).get("files", []), *uploads]),
            int((carried or {}).get("bytes", 0)) + sum(p.stat().st_size for p in local),
            {"quarantine_files": quarantines, **manifest},
        )
        store = self.data.lake.store
        for name, path in uploads.items():
            obstore.put(store, f"{TABLE}/{partition}/{name}", path)
        if (self.stage / QUARANTINE).exists():
            obstore.put(store, quarantines[-1], self.stage / QUARANTINE)
        self.data.lake.put_json(f"{MANIFESTS}/{partition}/{self.run_id}.json", manifest)
        if uploads:
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            actions = [
                AddAction(
                    path=f"{partition}/{name}",
                    size=path.stat().st_size,
                    partition_values={"tenant": self.data.tenant, "date": self.day.isoformat()},
                    modification_time=now,
                    data_change=True,
                    stats=_stats(path),
                )
                for name, path in uploads.items()
            ]
            self._commit_actions(actions, carried)
        self.committed = True
        shutil.rmtree(self.stage, ignore_errors=True)
        return manifest

    def _commit_actions(self, actions: list[Any], carried: dict[str, Any] | None) -> None:
        """One Delta commit: the day's partition replaced by `actions` (a full scan) or `actions` added to it
        (a top-up of the `carried` version).

        delta-rs resolves commits racing on other days itself. What it cannot resolve is a commit that
        changed the table's metadata or protocol, and two runs creating the table at once make one (delta-rs
        commits the loser's create as version 1); so on those the commit is rebuilt on the new version, up to
        COMMIT_ATTEMPTS times. A top-up commits only on the version it carried: if another run changed the day
        meanwhile, adding to it could store a record twice, so it stops and says so.
        """
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties

        partition = [("tenant", "=", self.data.tenant), ("date", "=", self.day.isoformat())]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = self.data.lake.table()
            if carried is not None:
                current = sorted(f["name"] for f in _files_of(table).get((self.data.tenant, self.day), []))
                if current != sorted(carried.get("files", [])):
                    raise DayChangedError(
                        f"{self.data.tenant} {self.day}: another run replaced the day while this top-up ran; "
                        "nothing was committed. Run the top-up again (it builds on the new version)."
                    )
            try:
                table.create_write_transaction(
                    actions,
                    mode="append" if carried is not None else "overwrite",
                    schema=TABLE_SCHEMA,
                    partition_by=PARTITION_BY,
                    partition_filters=partition,
                    commit_properties=CommitProperties(
                        custom_metadata={"activity_pipeline.run_id": self.run_id, "activity_pipeline.rows": self.rows}
                    ),
                )
                return
            except CommitFailedError as exc:
                if attempt == COMMIT_ATTEMPTS or not any(m in str(exc) for m in RETRYABLE_COMMIT_FAILURES):
                    raise


def duckdb_url(url: str) -> str:
    """The URL DuckDB reads: Data Lake URLs (abfs[s]://container@account.dfs.core.windows.net/path) as their
    Blob twins (az://container/path, the account in the session's secret). Every Data Lake Storage account
    answers the Blob API over the same data, and so does Azurite, which has no Data Lake endpoint."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("abfs", "abfss") and parts.username:
        return f"az://{parts.username}{parts.path}"
    return url
