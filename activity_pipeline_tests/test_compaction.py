"""Compaction on every backend: exact (every id and raw record the same), sorted, fewer row groups, atomic under
kill -9, a rearrangement on object storage, and a compacted day can be topped up and compacted again."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from activity_pipeline.ingest import ingest_day, top_up_day
from activity_pipeline.storage.compaction import NotStoredError, compact_day, digest
from activity_pipeline.storage.errors import DayLockedError
from activity_pipeline_testing.backends import Backend, early_tenant
from activity_pipeline_testing.helpers import DAYS, REPO, STRESS_DAY, client_for, serve, stored


def _files(backend: Backend, day: dt.date) -> list[str]:
    store = backend.store()
    if backend.url is None:
        return [str(p) for p in sorted(store.day_location(day).glob("*.parquet"))]
    return store.day_files(day)


def _layout(backend: Backend, day: dt.date) -> list[tuple[str, int]]:
    """(file, row groups) of the day's current files, read from their footers on either backend."""
    with duckdb.connect() as con:
        for sql in backend.dataset.view_sources().setup:
            con.execute(sql)
        return [
            (url.rsplit("/", 1)[-1], con.execute(
                "SELECT count(DISTINCT row_group_id) FROM parquet_metadata(?)", [url]).fetchone()[0])
            for url in _files(backend, day)
        ]  # fmt: skip


def _bloom_filtered(backend: Backend, day: dt.date) -> set[str]:
    """The columns that have a Bloom filter in every row group of the day's files."""
    with duckdb.connect() as con:
        for sql in backend.dataset.view_sources().setup:
            con.execute(sql)
        rows = con.execute(
            "SELECT path_in_schema FROM parquet_metadata(?) GROUP BY 1 "
            "HAVING bool_and(bloom_filter_offset IS NOT NULL)",
            [_files(backend, day)],
        ).fetchall()
    return {r[0] for r in rows}


def _timestamps_in_file_order(backend: Backend, day: dt.date) -> list[int]:
    with duckdb.connect() as con:
        for sql in backend.dataset.view_sources().setup:
            con.execute(sql)
        con.execute("SET preserve_insertion_order = true; SET threads = 1")
        query = "SELECT epoch_ms(timestamp) FROM read_parquet(?, hive_partitioning = false)"
        return [t for (t,) in con.execute(query, [_files(backend, day)]).fetchall()]


def test_compaction_is_exact_sorted_and_leaves_one_file_of_fewer_row_groups(backend, stress):
    day, store = STRESS_DAY, backend.store()  # 12,000 activities, 6,000 of them sharing one timestamp
    with serve(stress) as server:
        ingest_day(client_for(server.url), store, day, slices=3)
    before = sorted(stored(backend.dataset, "contoso", day))
    files_before = store.manifest(day).files
    result = compact_day(store, day)
    after = sorted(stored(backend.dataset, "contoso", day))
    assert after == before and len(after) == len({i for i, _ in after}) == stress.truth_count(day)
    layout = _layout(backend, day)
    assert [name for name, _ in layout] == store.manifest(day).files and len(layout) == 1
    assert layout[0][1] == result.after.row_groups < result.before.row_groups
    assert (result.before.files, result.after.files) == (len(files_before), 1)
    timestamps = _timestamps_in_file_order(backend, day)
    assert timestamps == sorted(timestamps), "ordered by timestamp"
    assert _bloom_filtered(backend, day) == {"user_name", "ip_address"}, "every row group, those two columns"
    manifest = store.manifest(day)
    assert manifest.compacted and manifest.rows == len(after)
    record = manifest.compactions[-1]
    assert (record.files_before, record.row_groups_before, record.row_groups) == (
        len(files_before), result.before.row_groups, result.after.row_groups
    )  # fmt: skip
    facts = store.facts(day)
    assert (facts.rows, facts.duplicate_ids, facts.outside, facts.schema_mismatches) == (len(after), 0, 0, [])
    if backend.url is not None:
        from deltalake import DeltaTable

        last = DeltaTable(f"{backend.url}/activities").history(1)[0]
        assert last["operation"] == "OPTIMIZE", last
        assert _last_commit_data_change(backend) == {False}, "a rearrangement: no action says the data changed"


def _last_commit_data_change(backend: Backend) -> set[bool]:
    import obstore
    from obstore.store import from_url

    store = from_url(backend.url)
    logs = sorted(m["path"] for page in obstore.list(store, "activities/_delta_log/") for m in page
                  if m["path"].endswith(".json"))  # fmt: skip
    entry = bytes(obstore.get(store, logs[-1]).bytes()).decode()
    actions = [json.loads(line) for line in entry.splitlines() if line.strip()]
    return {a[k]["dataChange"] for a in actions for k in ("add", "remove") if k in a}


_KILLED_COMPACTION = """
import sys, datetime as dt
from activity_pipeline.storage.compaction import compact_day
from activity_pipeline.storage.dataset import open_dataset
if __name__ == "__main__":
    compact_day(open_dataset(sys.argv[1], sys.argv[2] or None).tenant("contoso"), dt.date.fromisoformat(sys.argv[3]))
"""


def test_kill_9_mid_compaction_leaves_the_day_whole_and_the_next_one_finishes(backend, stress, tmp_path):
    day, store = STRESS_DAY, backend.store()
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, day)
    before = sorted(stored(backend.dataset, "contoso", day))
    script = tmp_path / "compact.py"
    script.write_text(_KILLED_COMPACTION)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(backend.root), backend.url or "", day.isoformat()],
        cwd=REPO, env={**os.environ, **backend.env, "PYTHONPATH": str(REPO)}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(store.staging.glob("date=*/work")):
        time.sleep(0.02)  # the rewrite has begun: its worker writes under work/
    assert proc.poll() is None, "the compaction was still running"
    os.killpg(proc.pid, signal.SIGKILL)  # it and its worker
    proc.wait(timeout=30)
    assert store.manifest(day).run_id == first.manifest.run_id and not store.manifest(day).compacted
    assert sorted(stored(backend.dataset, "contoso", day)) == before
    again = compact_day(store, day)  # cleans the killed one's work, and finishes
    assert again.manifest.compacted and sorted(stored(backend.dataset, "contoso", day)) == before
    assert not [p for p in store.staging.glob("date=*") if p.is_dir()], "nothing left in staging"


def test_a_compaction_that_dies_before_its_commit_changes_nothing(backend, stress, monkeypatch):
    day, store = DAYS[0], backend.store()
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, day)
    before = sorted(stored(backend.dataset, "contoso", day))

    def die(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the commit")

    if backend.url is None:
        from activity_pipeline.storage import local

        monkeypatch.setattr(local, "_exchange", die)
    else:
        from activity_pipeline.storage.lake_writer import LakeDayWriter

        monkeypatch.setattr(LakeDayWriter, "_commit_rearrangement", die)
    with pytest.raises(RuntimeError, match="killed before the commit"):
        compact_day(store, day)
    assert store.manifest(day).run_id == first.manifest.run_id
    assert sorted(stored(backend.dataset, "contoso", day)) == before


def test_a_compacted_day_is_topped_up_and_compacted_again(backend):
    day, tenant, store = STRESS_DAY, early_tenant(8_000), backend.store()
    with serve(tenant) as server:
        ingest_day(client_for(server.url), store, day)
        compact_day(store, day)
        tenant.advance(dt.timedelta(days=3))
        topped = top_up_day(client_for(server.url), store, day)
    assert topped.added > 0 and not store.manifest(day).compacted, "the late file makes it a day to compact again"
    found = [i for i, _ in stored(backend.dataset, "contoso", day)]
    assert len(found) == len(set(found)) and set(found) == tenant.truth_ids(day)
    second = compact_day(store, day)
    assert second.before.files == 2 and second.after.files == 1 and store.manifest(day).compacted
    assert [len(store.manifest(day).compactions), len(store.manifest(day).top_ups)] == [2, 1]
    assert sorted(i for i, _ in stored(backend.dataset, "contoso", day)) == sorted(tenant.truth_ids(day))


def test_a_run_and_a_compaction_of_a_day_never_interleave(backend, stress):
    day, store = DAYS[0], backend.store()
    with serve(stress) as server:
        ingest_day(client_for(server.url), store, day)
    with store.writer(day, run_id="a-run"), pytest.raises(DayLockedError):
        compact_day(store, day)
    with pytest.raises(NotStoredError, match="nothing to compact"):
        compact_day(store, DAYS[1])


def test_the_digest_tells_a_changed_record_or_a_missing_row(tmp_path):
    import pyarrow as pa

    from activity_pipeline.storage.schema import SCHEMA

    rows = [{"id": f"a{k}", "timestamp": 1_764_000_000_000 + k, "is_admin": False, "raw": f'{{"_id": "a{k}"}}'}
            for k in range(5)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    paths = {}
    for name, t in {
        "same": table,
        "reordered": table.take([4, 3, 2, 1, 0]),
        "changed": table.set_column(SCHEMA.get_field_index("raw"), "raw",
                                    pa.array([r["raw"] for r in rows[:4]] + ['{"_id": "a4", "x": 1}'])),
        "missing": table.slice(0, 4),
    }.items():  # fmt: skip
        paths[name] = tmp_path / f"{name}.parquet"
        pq.write_table(t, paths[name])
    spill = tmp_path / "spill"
    same = digest([paths["same"]], spill)
    assert digest([paths["reordered"]], spill) == same
    assert digest([paths["changed"]], spill) != same and digest([paths["missing"]], spill) != same
    assert digest([Path(paths["missing"]), paths["same"]], spill)[0] == 9


def test_a_killed_worker_says_the_day_is_unchanged_and_to_compact_again(tmp_path, stress):
    import threading

    from activity_pipeline.storage.compaction import CompactionError
    from activity_pipeline_testing.helpers import tenant_data

    day, store = STRESS_DAY, tenant_data(tmp_path)
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, day)
    caught: list[BaseException] = []

    def compact() -> None:
        try:
            compact_day(store, day)
        except CompactionError as exc:
            caught.append(exc)

    thread = threading.Thread(target=compact)
    thread.start()
    deadline = time.monotonic() + 120
    worker: list[str] = []
    while time.monotonic() < deadline and not worker and thread.is_alive():
        found = subprocess.run(["pgrep", "-f", "-P", str(os.getpid()), "activity_pipeline.storage.compaction"],
                               capture_output=True, text=True).stdout.split()  # fmt: skip
        worker = found if list(store.staging.glob("date=*/work")) else []
        time.sleep(0.02)
    assert worker, "the worker was running"
    os.kill(int(worker[0]), signal.SIGKILL)
    thread.join(timeout=60)
    (error,) = caught
    text = str(error)
    assert "killed by signal 9" in text and "the day is unchanged" in text and "make compact" in text
    assert store.manifest(day).run_id == first.manifest.run_id and not store.manifest(day).compacted
