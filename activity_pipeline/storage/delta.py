"""The Delta table on object storage (`ACTIVITY_DATA_URL`), as delta-rs and obstore reach it: the URL checked,
the table opened (created the first time), its files read from the log, small JSON objects beside it, and
the storage service's refusals turned into messages that say what to fix. `storage.lake` builds on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pyarrow as pa

from activity_pipeline.storage.errors import StorageLocationError
from activity_pipeline.storage.schema import SCHEMA

TABLE = "activities"
MANIFESTS = "_manifests"
QUARANTINES = "_quarantine"
HEALTH = "_health"
DELETED = "_deleted"
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

    def evolved(self, table: Any) -> Any:
        """`table`, with the columns of TABLE_SCHEMA it lacks added first (one metadata commit): a table created by
        an older version of the columns. Old files read those columns as null, as the Delta protocol says. Called
        by writers only: readers never write to the table."""
        from deltalake.exceptions import DeltaError
        from deltalake.schema import Schema

        have = {f.name for f in table.schema().fields}
        missing = [f for f in TABLE_SCHEMA if f.name not in have]
        if not missing:
            return table
        # Two writers evolving at once: one commit wins, the other finds the columns there.
        with contextlib.suppress(DeltaError):
            table.alter.add_columns(list(Schema.from_arrow(pa.schema(missing)).fields))
        return self.table()

    def files(self) -> dict[tuple[str, dt.date], list[dict[str, Any]]]:
        """Every file of the table's current version, per (tenant, day): name, bytes, rows. One read of the log."""
        return files_of(self.table())

    def put(self, key: str, value: bytes) -> None:
        import obstore

        obstore.put(self.store, key, value)

    def get(self, key: str) -> bytes | None:
        """The object's bytes; None when there is none."""
        import obstore

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except FileNotFoundError:
            return None

    def download(self, key: str, path: Path) -> None:
        """The object's bytes into the file `path`, streamed (a day's file is hundreds of MB). Raises
        FileNotFoundError when there is no such object, leaving no file."""
        import obstore

        try:
            with open(path, "wb") as out:
                for chunk in obstore.get(self.store, key).stream(4 << 20):
                    out.write(chunk)
        except FileNotFoundError:
            path.unlink(missing_ok=True)
            raise

    def get_json(self, key: str) -> Any:
        data = self.get(key)
        return None if data is None else json.loads(data)

    def delete(self, keys: list[str]) -> None:
        import obstore

        if keys:
            obstore.delete(self.store, keys)

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
    """What is wrong, in words a person can act on, when `text` (a storage error) says the bucket or the credentials
    are; None for any other error."""
    for markers, problem in _STORAGE_PROBLEMS:
        if any(m.lower() in text.lower() for m in markers):
            return problem
    return None


storage_problem = _storage_problem


def files_of(table: Any) -> dict[tuple[str, dt.date], list[dict[str, Any]]]:
    """The files of a version of the table (a `DeltaTable`), per (tenant, day): name, bytes, rows."""
    found: dict[tuple[str, dt.date], list[dict[str, Any]]] = {}
    for a in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        day = a["partition.date"]
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))
        found.setdefault((a["partition.tenant"], day), []).append(
            {"name": a["path"].rsplit("/", 1)[-1], "bytes": a["size_bytes"], "rows": a.get("num_records")}
        )
    return found


def partition(tenant: str, day: dt.date) -> str:
    return f"tenant={tenant}/date={day.isoformat()}"
