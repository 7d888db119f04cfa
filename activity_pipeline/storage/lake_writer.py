"""How a day's staged files become the day on object storage: uploaded under names no other version uses, then
one Delta commit that replaces the day's partition (a full scan) or adds to it (a top-up). See `storage.lake`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from activity_pipeline.storage.delta import (
    COMMIT_ATTEMPTS,
    MANIFESTS,
    PARTITION_BY,
    QUARANTINES,
    RETRYABLE_COMMIT_FAILURES,
    TABLE,
    TABLE_SCHEMA,
    Lake,
    files_of,
    partition,
)  # fmt: skip
from activity_pipeline.storage.errors import DayChangedError
from activity_pipeline.storage.integrity import file_digests
from activity_pipeline.storage.lake_sql import duckdb_setup
from activity_pipeline.storage.manifest import Compaction, Manifest, dumps
from activity_pipeline.storage.staging import QUARANTINE, StagedDay


def _stats(path: Path) -> str:
    """The add action's statistics (rows; min, max and nulls of the two time columns), from the footer."""
    meta = pq.ParquetFile(path).metadata
    stats: dict[str, Any] = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    leaves = [meta.schema.column(i).path for i in range(meta.num_columns)]
    for name in ("timestamp", "created"):
        col = leaves.index(name)
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


class LakeDayWriter(StagedDay):
    """`DayWriter` whose commit uploads the staged files and commits them to the Delta table as the day.

    A full scan's version replaces the day's files (overwrite of the day's partition); a top-up's adds its
    file to them (append), the files it carried over staying as they are.
    """

    def __init__(
        self, lake: Lake, tenant: str, staging: Path, day: dt.date, *, url: str, run_id: str | None, prefix: str
    ) -> None:
        super().__init__(tenant, staging, day, run_id=run_id, prefix=prefix)
        self.lake = lake
        self._target = url

    @property
    def target(self) -> str:
        return self._target

    def carry_over(self, manifest: Manifest) -> None:
        if self._writers or self._closed or self.rows:
            raise RuntimeError("carry_over must come before any write")
        self._carried = manifest
        self.rows, self.quarantined = manifest.rows, manifest.quarantined

    def commit(self, **figures: Any) -> Manifest:
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
        where = partition(self.tenant, self.day)
        if local:
            carried_urls = [f"{self.target}/{name}" for name in (carried.files if carried is not None else [])]
            self._guard([*carried_urls, *(str(p) for p in local)], duckdb_setup(self.lake.url))
        taken = file_digests(local)
        digests = {name: taken[path.name] for name, path in uploads.items()}
        quarantines = list(carried.quarantine_files if carried is not None else [])
        if (self.stage / QUARANTINE).exists():
            quarantines.append(f"{QUARANTINES}/{where}/{self.run_id}.jsonl")
        manifest = self._manifest(
            sorted([*(carried.files if carried is not None else []), *uploads]),
            (carried.bytes if carried is not None else 0) + sum(p.stat().st_size for p in local),
            {
                "quarantine_files": quarantines,
                "digests": {**(carried.digests if carried is not None else {}), **digests},
                **figures,
            },
        )
        store = self.lake.store
        for name, path in uploads.items():
            obstore.put(store, f"{TABLE}/{where}/{name}", path)
        if (self.stage / QUARANTINE).exists():
            obstore.put(store, quarantines[-1], self.stage / QUARANTINE)
        obstore.put(store, f"{MANIFESTS}/{where}/{self.run_id}.json", dumps(manifest))
        if uploads:
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            actions = [
                AddAction(
                    path=f"{where}/{name}",
                    size=path.stat().st_size,
                    partition_values={"tenant": self.tenant, "date": self.day.isoformat()},
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

    def source_files(self, manifest: Manifest) -> list[Path]:
        """The version's files, downloaded into the staging folder."""
        folder = self.stage / "source"
        folder.mkdir()
        where = partition(self.tenant, self.day)
        for name in manifest.files:
            self.lake.download(f"{TABLE}/{where}/{name}", folder / name)
        return [folder / name for name in sorted(manifest.files)]

    def commit_rearranged(self, previous: Manifest, files: Sequence[Path], compaction: Compaction) -> Manifest:
        """Upload `files`, then one commit that removes the version's files and adds them, every action with
        `dataChange: false` and the operation OPTIMIZE: readers that follow changes (streaming) skip it."""
        import obstore

        files = list(files)
        manifest = self._rearranged(previous, files, compaction)
        where = partition(self.tenant, self.day)
        for path in files:
            obstore.put(self.lake.store, f"{TABLE}/{where}/{path.name}", path)
        obstore.put(self.lake.store, f"{MANIFESTS}/{where}/{self.run_id}.json", dumps(manifest))
        self._commit_rearrangement(previous.files, files)
        self.committed = True
        shutil.rmtree(self.stage, ignore_errors=True)
        return manifest

    def _commit_rearrangement(self, removed: list[str], added: list[Path]) -> None:
        """The log's next entry, written by a conditional PUT (as delta-rs writes its own): a commit that lost the
        race is built again on the new version, as long as the day still holds exactly `removed`."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        where = partition(self.tenant, self.day)
        values = {"tenant": self.tenant, "date": self.day.isoformat()}
        for _ in range(COMMIT_ATTEMPTS):
            table = self.lake.evolved(self.lake.table())
            current = {f["name"]: f for f in files_of(table).get((self.tenant, self.day), [])}
            if sorted(current) != sorted(removed):
                raise DayChangedError(
                    f"{self.tenant} {self.day}: another run changed the day while it was compacted; nothing was "
                    "committed. Compact it again (it reads the new version)."
                )
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            actions: list[dict[str, Any]] = [
                {"commitInfo": {"timestamp": now, "operation": "OPTIMIZE", "clientVersion": "activity_pipeline",
                                "operationParameters": {"predicate": json.dumps([f"tenant = '{self.tenant}'",
                                                                                 f"date = '{self.day}'"])},
                                "activity_pipeline.run_id": self.run_id, "isBlindAppend": False}},
                *({"remove": {"path": f"{where}/{name}", "deletionTimestamp": now, "dataChange": False,
                              "extendedFileMetadata": True, "partitionValues": values, "size": current[name]["bytes"]}}
                  for name in sorted(removed)),
                *({"add": {"path": f"{where}/{p.name}", "partitionValues": values, "size": p.stat().st_size,
                           "modificationTime": now, "dataChange": False, "stats": _stats(p)}} for p in added),
            ]  # fmt: skip
            entry = "\n".join(json.dumps(a, separators=(",", ":")) for a in actions).encode() + b"\n"
            try:
                obstore.put(
                    self.lake.store, f"{TABLE}/_delta_log/{table.version() + 1:020d}.json", entry, mode="create"
                )
                return
            except (AlreadyExistsError, PreconditionError):
                continue  # another commit took that version: build on the new one
        raise DayChangedError(f"{self.tenant} {self.day}: the table kept changing; the compaction was not committed")

    def _commit_actions(self, actions: list[Any], carried: Manifest | None) -> None:
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

        filters = [("tenant", "=", self.tenant), ("date", "=", self.day.isoformat())]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = self.lake.evolved(self.lake.table())
            if carried is not None:
                current = sorted(f["name"] for f in files_of(table).get((self.tenant, self.day), []))
                if current != sorted(carried.files):
                    raise DayChangedError(
                        f"{self.tenant} {self.day}: another run replaced the day while this top-up ran; "
                        "nothing was committed. Run the top-up again (it builds on the new version)."
                    )
            try:
                table.create_write_transaction(
                    actions,
                    mode="append" if carried is not None else "overwrite",
                    schema=TABLE_SCHEMA,
                    partition_by=PARTITION_BY,
                    partition_filters=filters,
                    commit_properties=CommitProperties(
                        custom_metadata={"activity_pipeline.run_id": self.run_id, "activity_pipeline.rows": self.rows}
                    ),
                )
                return
            except CommitFailedError as exc:
                if attempt == COMMIT_ATTEMPTS or not any(m in str(exc) for m in RETRYABLE_COMMIT_FAILURES):
                    raise
