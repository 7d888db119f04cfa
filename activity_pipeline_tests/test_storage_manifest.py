"""The typed manifest: every manifest an earlier version of the pipeline wrote still loads, and a manifest reads
back as it was written."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from activity_pipeline.storage.local import LocalStore
from activity_pipeline.storage.manifest import MANIFEST, MANIFEST_VERSION, Manifest, TopUp, Window, dumps, loads

DAY = dt.date(2026, 11, 24)

# As the first writer wrote it (before tenants, watermarks and top-ups).
FIRST = {"day": "2026-11-24", "rows": 3, "quarantined": 0, "files": ["part-000000000.parquet"], "bytes": 912,
         "schema_version": 1, "run_id": "3f9c0a1b2c4d", "source_total_at_scan": 3}  # fmt: skip
# As the writer before this struct wrote it, with a top-up, on object storage, and a key nobody reads any more.
PREVIOUS = {
    "tenant": "contoso", "day": "2026-11-24", "rows": 5, "quarantined": 1,
    "files": ["late-1764000000000-000000000-b.parquet", "part-000000000-a.parquet"], "bytes": 2048,
    "schema_version": 1, "run_id": "b", "quarantine_files": ["_quarantine/tenant=contoso/date=2026-11-24/a.jsonl"],
    "window": {"start_ms": 1763942400000, "end_ms": 1764028800000}, "source_total_at_scan": 5,
    "scan_started_ms": 1764100000000, "watermark_ms": 1764099700000,
    "scan": {"pages": 1, "slices": 1, "duplicates_dropped": 0, "requests": 2, "retries": 0},
    "top_ups": [{"run_id": "b", "from_ms": 1764000000000, "scan_started_ms": 1764100000000, "added": 2,
                 "requests": 2, "at": "2026-11-25T00:00:00+00:00"}],
    "hourly": [0] * 23 + [5], "apps": {"11161": 5}, "written_at": "2026-11-25T00:00:00+00:00", "marker": "old",
}  # fmt: skip


@pytest.mark.parametrize("written", [FIRST, PREVIOUS], ids=["first", "previous"])
def test_manifests_written_by_earlier_versions_still_load(tmp_path, written):
    folder = LocalStore(tmp_path, "contoso").day_location(DAY)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps(written, indent=2))
    manifest = LocalStore(tmp_path, "contoso").manifest(DAY)
    assert (manifest.day, manifest.rows, manifest.files) == (DAY, written["rows"], written["files"])
    assert manifest.manifest_version == 1, "no version field: version 1"
    if written is PREVIOUS:
        assert manifest.window == Window(1763942400000, 1764028800000) and manifest.watermark_ms == 1764099700000
        assert manifest.top_ups == [TopUp("b", 1764000000000, 1764100000000, 2, 2, "2026-11-25T00:00:00+00:00")]
        assert manifest.apps == {"11161": 5} and manifest.quarantine_files[0].endswith("a.jsonl")
    else:
        assert (manifest.tenant, manifest.watermark_ms, manifest.top_ups, manifest.hourly) == (None, None, [], [])
    assert manifest.filters == {}, "collected before filters existed: unfiltered"


def test_a_manifest_reads_back_as_written_with_the_current_version():
    manifest = Manifest(day=DAY, rows=2, files=["a.parquet"], watermark_ms=7, manifest_version=MANIFEST_VERSION,
                        filters={"service": {"neq": [20893]}, "activity.type": {"eq": True}})  # fmt: skip
    again = loads(dumps(manifest))
    assert again == manifest and json.loads(dumps(manifest))["day"] == "2026-11-24"


def test_a_manifest_of_the_wrong_shape_names_the_field():
    with pytest.raises(msgspec.ValidationError, match=r"\$.rows"):
        loads(b'{"day": "2026-11-24", "rows": "many"}')


def test_a_large_days_facts_come_from_a_process_of_their_own_and_are_the_same(tmp_path, monkeypatch):
    import pyarrow as pa

    from activity_pipeline.storage import facts as facts_module
    from activity_pipeline.storage.schema import SCHEMA

    ms = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [
        {"id": f"id-{k % 90}", "timestamp": ms + k, "created": ms + k, "is_admin": False, "raw": "{}"}
        for k in range(100)
    ]
    rows.append({"id": "late", "timestamp": ms + 86_400_000, "created": ms, "is_admin": False, "raw": "{}"})
    store = LocalStore(tmp_path, "contoso")
    # A day as a writer before the commit's guard could leave it: duplicates and a row outside it.
    monkeypatch.setattr("activity_pipeline.storage.staging.unsafe", lambda facts, rows: [])
    with store.writer(DAY) as writer:
        writer.write(0, pa.Table.from_pylist(rows, schema=SCHEMA))
        writer.commit(watermark_ms=ms + 50)
    here = store.facts(DAY)
    monkeypatch.setattr(facts_module, "ISOLATE_ROWS", 0)  # as a day of millions is
    # Not here: in the child, which imports the module afresh.
    monkeypatch.setattr(facts_module, "_query_rows", lambda *a, **k: pytest.fail("queried in the run's process"))
    isolated = store.facts(DAY)
    assert (here.rows, here.duplicate_ids, here.outside, here.rows_at_watermark) == (101, 10, 1, 52)
    assert isolated == here
