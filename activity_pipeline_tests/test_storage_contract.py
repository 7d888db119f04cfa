"""The storage contract, run against every backend: local folders, moto's S3 server, Azurite's Blob service and
its Data Lake URLs. Each test speaks to the dataset through the interface only (`storage.core`); what is
particular to one backend (the Delta log, a rename swap) is in `test_lake.py` and `test_storage_layout.py`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from activity_pipeline.ingest import ingest_day, top_up_day
from activity_pipeline.storage.core import Dataset, Finding
from activity_pipeline.storage.errors import DayLockedError
from activity_pipeline.storage.manifest import MANIFEST_VERSION
from activity_pipeline.storage.schema import SCHEMA
from activity_pipeline_testing.backends import Backend, early_tenant
from activity_pipeline_testing.helpers import DAYS, REPO, STRESS_DAY, client_for, later, serve, stored


def ids(dataset: Dataset, tenant: str, day: dt.date) -> list[str]:
    return [i for i, _ in stored(dataset, tenant, day)]


def test_a_day_lands_with_every_id_and_raw_record_exactly_once(backend, stress):
    store = backend.store()
    with serve(stress) as server:
        result = ingest_day(client_for(server.url), store, STRESS_DAY)
    rows = stored(backend.dataset, "contoso", STRESS_DAY)
    found = [i for i, _ in rows]
    assert len(found) == len(set(found)) == result.rows, "nothing doubled"
    assert set(found) == stress.truth_ids(STRESS_DAY), "nothing lost, nothing extra"
    for activity_id, raw in rows[:: max(1, len(rows) // 200)]:
        assert raw == stress.record(activity_id), "raw is the record exactly as received"
    facts = store.facts(STRESS_DAY)
    assert (facts.rows, facts.duplicate_ids, facts.outside, facts.schema_mismatches) == (len(found), 0, 0, [])
    assert facts.manifest is not None and facts.manifest.run_id == result.manifest.run_id
    assert store.days() == [STRESS_DAY] and store.row_total() == len(found)
    assert store.day_rows() == {STRESS_DAY: len(found)}
    assert not list(store.staging.rglob("date=*/*.parquet")), "nothing left in staging"


def test_a_rerun_replaces_the_day_whole(backend, stress):
    store = backend.store()
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, DAYS[0])
        second = ingest_day(client_for(server.url), store, DAYS[0])
    found = ids(backend.dataset, "contoso", DAYS[0])
    assert sorted(found) == sorted(stress.truth_ids(DAYS[0])), "the day once, not twice"
    assert store.manifest(DAYS[0]).run_id == second.manifest.run_id != first.manifest.run_id
    assert store.row_total() == len(found)


def test_two_days_and_two_tenants_land_at_once(backend, stress):
    jobs = [("contoso", DAYS[0]), ("contoso", DAYS[1]), ("fabrikam", DAYS[0])]
    errors: list[BaseException] = []
    with serve(stress) as server:

        def run(tenant: str, day: dt.date) -> None:
            try:
                ingest_day(client_for(server.url), backend.store(tenant), day)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    assert not errors, errors
    for tenant, day in jobs:
        assert sorted(ids(backend.dataset, tenant, day)) == sorted(stress.truth_ids(day)), f"{tenant} {day}"
    assert backend.store("fabrikam").days() == [DAYS[0]]


_KILLED_RUN = """
import sys, datetime as dt
from activity_pipeline.ingest import ingest_day
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline_testing.helpers import client_for
store = open_dataset(sys.argv[2], sys.argv[3] or None).tenant("contoso")
ingest_day(client_for(sys.argv[1]), store, dt.date.fromisoformat(sys.argv[4]))
"""


def test_kill_9_mid_scan_leaves_the_previous_version_whole(backend, stress):
    day = DAYS[1]
    store = backend.store()
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, day)
    with serve(stress, latency_ms=600) as slow:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN, slow.url, str(backend.root), backend.url or "", day.isoformat()],
            cwd=REPO, env={**os.environ, **backend.env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(p.stat().st_size for p in store.staging.rglob("*.parquet")):
            time.sleep(0.05)
        assert proc.poll() is None, "the run was still scanning"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert store.manifest(day).run_id == first.manifest.run_id, "the stored version is the first run's"
    assert sorted(ids(backend.dataset, "contoso", day)) == sorted(stress.truth_ids(day))
    with serve(stress) as server:
        again = ingest_day(client_for(server.url), store, day)  # the next run cleans up and lands the day
    assert sorted(ids(backend.dataset, "contoso", day)) == sorted(stress.truth_ids(day))
    assert store.manifest(day).run_id == again.manifest.run_id
    assert not [p for p in store.staging.glob("date=*") if p.is_dir()], "the killed run's work is cleaned up"


def _die_before_the_swap(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next commit die at its last step: files written (and uploaded), nothing swapped in."""

    def die(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed before the commit")

    if backend.url is None:
        from activity_pipeline.storage import local

        monkeypatch.setattr(local, "_exchange", die)  # the day is stored: its replacement is an exchange
    else:
        from deltalake import DeltaTable

        monkeypatch.setattr(DeltaTable, "create_write_transaction", die)


def test_a_run_that_dies_between_upload_and_commit_leaves_nothing_a_reader_sees(backend, stress, monkeypatch):
    store = backend.store()
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), store, DAYS[0])
        with monkeypatch.context() as m, pytest.raises(RuntimeError, match="killed before the commit"):
            _die_before_the_swap(backend, m)
            ingest_day(client_for(server.url), store, DAYS[0])
    assert store.manifest(DAYS[0]).run_id == first.manifest.run_id
    assert sorted(ids(backend.dataset, "contoso", DAYS[0])) == sorted(stress.truth_ids(DAYS[0]))
    assert store.day_rows() == {DAYS[0]: first.rows}


def test_a_top_up_adds_only_the_late_records(backend):
    day, tenant, store = STRESS_DAY, early_tenant(20_000), backend.store()
    with serve(tenant) as server:
        full = ingest_day(client_for(server.url), store, day)
        tenant.advance(dt.timedelta(days=3))
        result = top_up_day(client_for(server.url), store, day)
    late = tenant.truth_count(day) - full.rows
    assert late > 0 and result.added == late
    found = ids(backend.dataset, "contoso", day)
    assert len(found) == len(set(found)) and set(found) == tenant.truth_ids(day)
    manifest = store.manifest(day)
    assert set(full.manifest.files) < set(manifest.files), "the full scan's files stay; the late file is added"
    assert manifest.rows == len(found) and [t.added for t in manifest.top_ups] == [late]
    assert manifest.watermark_ms > full.manifest.watermark_ms


def test_a_top_up_is_refused_while_another_run_writes_the_day_and_lands_after(backend):
    day, tenant, store = STRESS_DAY, early_tenant(5_000), backend.store()
    with serve(tenant) as server:
        ingest_day(client_for(server.url), store, day)
        tenant.advance(dt.timedelta(days=3))
        with store.writer(day), pytest.raises(DayLockedError, match=f"Another run is writing {day}"):
            top_up_day(client_for(server.url), store, day)
        with store.writer(DAYS[0]) as other_day:  # other days are not held up
            other_day.write(0, SCHEMA.empty_table())
            other_day.commit()
        top_up_day(client_for(server.url), store, day)
    found = ids(backend.dataset, "contoso", day)
    assert len(found) == len(set(found)) and set(found) == tenant.truth_ids(day)
    assert store.days() == [DAYS[0], day]


def test_quarantine_manifest_and_findings_round_trip(backend):
    store = backend.store()
    day = DAYS[0]
    with store.writer(day, run_id="r1") as writer:
        writer.write(0, SCHEMA.empty_table())
        writer.quarantine([b'{"no": "id"}', b'{"timestamp": "soon"}'])
        written = writer.commit(watermark_ms=1234, source_total_at_scan=2, hourly=[0] * 24, apps={"11161": 0},
                                filters={"service": {"neq": [20893]}})  # fmt: skip
    manifest = store.manifest(day)
    assert manifest == written, "the manifest reads back as written"
    assert (manifest.day, manifest.tenant, manifest.rows, manifest.quarantined, manifest.run_id) == (
        day, "contoso", 0, 2, "r1"
    )  # fmt: skip
    assert manifest.watermark_ms == 1234 and manifest.manifest_version == MANIFEST_VERSION
    assert manifest.filters == {"service": {"neq": [20893]}}
    facts = store.facts(day)
    assert (facts.exists, facts.rows, facts.quarantined, facts.watermark_ms) == (True, 0, 2, 1234)
    assert store.manifest(DAYS[1]) is None and not store.facts(DAYS[1]).exists
    at = dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)
    store.record_finding(Finding.of(day, at=at, source_total=5, rows_checked=3, passed=False, watermark_ms=1234))
    store.record_finding(Finding.of(DAYS[1], at=at, source_total=0, rows_checked=0, passed=True))
    assert store.finding(day) == Finding(
        day=day, source_total=5, rows_checked=3, checked_at="2026-11-24T03:00:00+00:00", passed=False,
        watermark_ms=1234,
    )  # fmt: skip
    assert store.failed_days() == {day} and len(store.findings()) == 2
    assert backend.store("fabrikam").findings() == [], "findings are per tenant"
    sources = backend.dataset.view_sources()
    assert sources.findings is not None and sources.rows == {("contoso", day): 0}


def test_a_day_deleted_on_purpose_is_gone_whole_with_its_finding_and_leaves_an_audit_record(backend, stress):
    store = backend.store()
    with serve(stress) as server:
        for day in DAYS[:2]:
            ingest_day(client_for(server.url), store, day)
    store.record_finding(Finding.of(DAYS[0], at=later(1), source_total=1, rows_checked=1, passed=True))
    rows = store.day_rows()[DAYS[0]]
    with store.writer(DAYS[0], run_id="a-run"), pytest.raises(DayLockedError):
        store.delete_day(DAYS[0], reason="keep_days 30", run_id="r")  # never beside a run of the day
    record = store.delete_day(DAYS[0], reason="keep_days 30: older than 2026-11-22", run_id="r1")
    assert record is not None and (record.day, record.rows, record.run_id) == (DAYS[0], rows, "r1")
    assert store.days() == [DAYS[1]] and store.manifest(DAYS[0]) is None and store.finding(DAYS[0]) is None
    assert ids(backend.dataset, "contoso", DAYS[0]) == [] and ids(backend.dataset, "contoso", DAYS[1])
    assert [(d.day, d.rows, d.reason) for d in store.deleted_days()] == [(DAYS[0], rows, record.reason)]
    assert store.delete_day(DAYS[0], reason="again", run_id="r2") is None, "nothing stored: nothing to delete"
