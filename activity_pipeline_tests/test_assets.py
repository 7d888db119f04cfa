"""The `activities` asset: each day lands exactly once as Parquet, atomically, with its figures."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from activity_pipeline.days import day_window
from activity_pipeline.defs.assets import activities
from activity_pipeline.defs.resources import ActivityStorage, MdcaResource
from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, ServerSettings, TenantSpec
from activity_pipeline.demo_tenant.tenant import Page as ServerPage
from activity_pipeline.mdca.scan import _decode_page
from activity_pipeline.source import DEMO_WARNING
from activity_pipeline.storage.schema import SCHEMA, _raw_array, decode_activity
from activity_pipeline.storage.writer import QUARANTINE, DayWriter, read_manifest
from activity_pipeline_tests.conftest import TOKEN

REPO = Path(__file__).resolve().parents[1]
# Recent days, so that the 180-day retention guard (which applies to configured tenants) lets them through.
TODAY = dt.datetime.now(dt.UTC).date()
RECENT = (TODAY - dt.timedelta(days=3), TODAY - dt.timedelta(days=2))


@pytest.fixture(scope="module")
def recent() -> DemoTenant:
    t = DemoTenant(TenantSpec(days=RECENT, activities_per_day=12_000))
    t.set_now(dt.datetime.combine(TODAY + dt.timedelta(days=10), dt.time(), dt.UTC))
    return t


@pytest.fixture(scope="module")
def recent_server(recent):
    server = DemoTenantServer(recent, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)).start()
    yield server
    server.stop()


def mdca(url: str, **kw: Any) -> MdcaResource:
    kw.setdefault("requests_per_minute", 0)
    return MdcaResource(api_url=url, api_token=TOKEN, retry_max_attempts=4, retry_max_seconds=20, **kw)


def materialize(day: dt.date, data_dir: Path, resource: MdcaResource, **kw: Any) -> dg.ExecuteInProcessResult:
    kw.setdefault("instance", dg.DagsterInstance.ephemeral())
    return dg.materialize(
        [activities],
        partition_key=day.isoformat(),
        resources={"mdca": resource, "storage": ActivityStorage(data_dir=str(data_dir))},
        **kw,
    )


def run_logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def stored(data_dir: Path, day: dt.date) -> Any:
    return pq.read_table(data_dir / "activities" / f"date={day}")


def test_parquet_holds_exactly_the_days_ids_and_the_records_as_served(tmp_path, recent, recent_server):
    day = RECENT[0]
    result = materialize(day, tmp_path, mdca(recent_server.url, slices=3))
    assert result.success
    table = stored(tmp_path, day)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(ids) == recent.truth_ids(day)
    assert table.schema.remove_metadata() == SCHEMA
    for row_id, raw in zip(ids, table.column("raw").to_pylist(), strict=True):
        served = recent.record(row_id)
        assert raw == served, "raw is the record byte for byte as the API sent it"
    assert json.loads(raw) == json.loads(served)
    start, end = day_window(day)
    stamps = table.column("timestamp").cast("int64").to_pylist()
    assert min(stamps) >= start and max(stamps) < end
    # Each file is sorted by timestamp, so row-group statistics prune.
    for f in (tmp_path / "activities" / f"date={day}").glob("*.parquet"):
        ts = pq.read_table(f, columns=["timestamp"]).column(0).cast("int64").to_pylist()
        assert ts == sorted(ts)


def test_materialization_metadata_has_counts_uri_schema_and_scan_figures(tmp_path, recent, recent_server):
    day = RECENT[1]
    result = materialize(day, tmp_path, mdca(recent_server.url))
    meta = result.asset_materializations_for_node("activities")[0].metadata
    n = recent.truth_count(day)
    assert meta["dagster/partition_row_count"].value == n
    assert meta["dagster/row_count"].value == n
    assert meta["dagster/uri"].value.startswith("file://") and meta["dagster/uri"].value.endswith(f"date={day}")
    names = [c.name for c in meta["dagster/column_schema"].schema.columns]
    assert names[:2] == ["id", "timestamp"] and names[-1] == "raw"
    assert meta["source_total_at_scan"].value == n
    assert meta["requests"].value >= 4 and meta["pages"].value >= 3
    for key in (
        "retries",
        "throttle_wait_seconds",
        "duplicates_dropped",
        "out_of_window_dropped",
        "seconds",
        "records_per_second",
        "bytes_written",
        "quarantined",
    ):
        assert key in meta, key
    hourly = meta["hourly"].value.records
    assert len(hourly) == 24 and sum(r.data["activities"] for r in hourly) == n


def test_a_rerun_replaces_the_day_and_is_idempotent(tmp_path, recent, recent_server):
    day = RECENT[0]
    assert materialize(day, tmp_path, mdca(recent_server.url)).success
    first = stored(tmp_path, day).sort_by("id")
    first_run = read_manifest(tmp_path, day)["run_id"]
    assert materialize(day, tmp_path, mdca(recent_server.url, slices=4)).success
    second = stored(tmp_path, day).sort_by("id")
    assert second.equals(first)
    assert read_manifest(tmp_path, day)["run_id"] != first_run
    # One version of the day, and nothing left behind in staging.
    assert len(list((tmp_path / "activities").iterdir())) == 1
    assert not [p for p in (tmp_path / ".staging").iterdir() if p.is_dir()]


def test_without_a_configured_tenant_the_demo_tenant_is_read_and_said_so(tmp_path):
    day = dt.date(2026, 11, 1)
    instance = dg.DagsterInstance.ephemeral()
    resource = MdcaResource(requests_per_minute=0, demo_activities_per_day=5_000)
    result = materialize(day, tmp_path, resource, instance=instance)
    assert result.success
    truth = DemoTenant(TenantSpec(days=(day,), activities_per_day=5_000)).truth_ids(day)
    assert set(stored(tmp_path, day).column("id").to_pylist()) == truth
    assert len([m for m in run_logs(result, instance) if DEMO_WARNING in m]) == 1


class _Untidy(DemoTenant):
    """Some records lack `_id` or `timestamp`, some lack optional fields, some carry odd types."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        records = []
        for k, text in enumerate(page.records):
            record = json.loads(text)
            if k % 500 == 7:
                del record["_id"]
            elif k % 500 == 9:
                record["timestamp"] = "yesterday"
            elif k % 50 == 3:
                del record["location"], record["device"]
            elif k % 70 == 5:
                record["appId"] = str(record["appId"])
            records.append(json.dumps(record, separators=(",", ":")))
        page.records = records
        return page


def test_malformed_records_are_quarantined_and_missing_fields_become_null(tmp_path, recent):
    day = RECENT[0]
    untidy = _Untidy(recent.spec)
    untidy.set_now(recent.now_ms())
    with DemoTenantServer(untidy, ServerSettings(tokens=(TOKEN,), requests_per_minute=0)) as server:
        result = materialize(day, tmp_path, mdca(server.url))
    assert result.success
    table = stored(tmp_path, day)
    quarantine = (tmp_path / "activities" / f"date={day}" / QUARANTINE).read_text().splitlines()
    meta = result.asset_materializations_for_node("activities")[0].metadata
    assert meta["quarantined"].value == len(quarantine) > 0
    assert table.num_rows + len(quarantine) == recent.truth_count(day)
    for line in quarantine:
        record = json.loads(line)
        assert "_id" not in record or not isinstance(record.get("timestamp"), int)
    rows = table.select(["country_code", "ip_address", "app_id", "raw"]).to_pylist()
    assert any(r["country_code"] is None and r["ip_address"] is None for r in rows)
    assert any(r["app_id"] is None and '"appId":"' in r["raw"] for r in rows)


def test_configuration_errors_fail_without_retries_and_say_what_to_fix(tmp_path):
    result = materialize(
        RECENT[0], tmp_path, MdcaResource(api_url="http://mdca.example.com", api_token="x"), raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("activities")
    assert "plain http:// to mdca.example.com" in failure.user_failure_data.description
    assert not (tmp_path / "activities").exists()


def test_a_day_beyond_the_services_retention_fails_fast_with_the_reason(tmp_path, recent_server):
    day = TODAY - dt.timedelta(days=200)
    result = materialize(day, tmp_path, mdca(recent_server.url), raise_on_error=False)
    assert not result.success
    description = result.failure_data_for_node("activities").user_failure_data.description
    assert "keeps activities for 180 days" in description and str(day) in description
    assert not (tmp_path / "activities").exists(), "no empty day was written"


def _cli_env(url: str, data_dir: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDCA_", "ACTIVITY_"))}
    home.mkdir(exist_ok=True)
    env.update(
        MDCA_API_URL=url,
        MDCA_API_TOKEN=TOKEN,
        MDCA_REQUESTS_PER_MINUTE="0",
        ACTIVITY_DATA_DIR=str(data_dir),
        ACTIVITY_START_DATE="2026-01-01",
        DAGSTER_HOME=str(home),
    )
    return env


def _cli(day: dt.date) -> list[str]:
    return [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
            "activity_pipeline.definitions", "--select", "activities", "--partition", day.isoformat()]  # fmt: skip


def test_headless_materialize_from_the_cli(tmp_path, recent, recent_server):
    day = RECENT[1]
    env = _cli_env(recent_server.url, tmp_path / "data", tmp_path / "home")
    proc = subprocess.run(_cli(day), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(stored(tmp_path / "data", day).column("id").to_pylist()) == recent.truth_ids(day)
    assert TOKEN not in proc.stdout + proc.stderr


def test_killing_a_run_mid_scan_leaves_the_previous_day_intact(tmp_path, recent, recent_server):
    day = RECENT[0]
    data = tmp_path / "data"
    assert materialize(day, data, mdca(recent_server.url)).success
    before = {p.name: p.read_bytes() for p in (data / "activities" / f"date={day}").iterdir()}
    slow = DemoTenantServer(recent, ServerSettings(tokens=(TOKEN,), requests_per_minute=0, latency_ms=800)).start()
    try:
        proc = subprocess.Popen(
            _cli(day),
            env=_cli_env(slow.url, data, tmp_path / "home"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        staged: list[Path] = []
        while time.monotonic() < deadline and not staged:
            staged = [p for p in (data / ".staging").glob("date=*/*.parquet") if p.stat().st_size > 0]
            time.sleep(0.05)
        assert staged, "the run never reached the scan"
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its step worker, mid-scan
        proc.wait(timeout=30)
    finally:
        slow.stop()
    after = {p.name: p.read_bytes() for p in (data / "activities" / f"date={day}").iterdir()}
    assert after == before, "the earlier version of the day is untouched"
    assert sorted(p.name for p in data.glob("activities/date=*/*.parquet")) == sorted(
        n for n in before if n.endswith(".parquet")
    ), "nothing half-written is matched by the dataset's glob"
    assert [p for p in (data / ".staging").iterdir() if p.is_dir()], "the killed run's work is left in staging"
    # The next run cleans up after the killed one and lands the day.
    assert materialize(day, data, mdca(recent_server.url)).success
    assert not [p for p in (data / ".staging").iterdir() if p.is_dir()]
    assert set(stored(data, day).column("id").to_pylist()) == recent.truth_ids(day)


def test_dataset_reads_as_one_table_across_days(tmp_path, recent, recent_server):
    for day in RECENT:
        assert materialize(day, tmp_path, mdca(recent_server.url)).success
    dataset = ds.dataset(tmp_path / "activities", format="parquet", partitioning="hive")
    assert dataset.count_rows() == sum(recent.truth_count(d) for d in RECENT)


def test_the_token_never_reaches_dagster_logs_metadata_or_files(tmp_path, recent, monkeypatch):
    secret = "tok-" + "7c1e9f0a3b5d"  # a distinct value, so that a hit can only be a leak
    server = DemoTenantServer(recent, ServerSettings(tokens=(secret,), requests_per_minute=4, window_seconds=1.0,
                                                     fault_rate=0.2, retry_after=False)).start()  # fmt: skip
    try:
        instance = dg.DagsterInstance.ephemeral()
        resource = MdcaResource(api_url=server.url, api_token=secret, requests_per_minute=0)
        result = materialize(RECENT[0], tmp_path, resource, instance=instance)
        assert result.success
        bad = materialize(RECENT[1], tmp_path, MdcaResource(api_url=server.url, api_token=secret + "x"),
                          instance=instance, raise_on_error=False)  # fmt: skip
        assert not bad.success
    finally:
        server.stop()
    meta = result.asset_materializations_for_node("activities")[0].metadata
    assert meta["retries"].value > 0, "the run went through retries, whose logs are searched too"
    texts = [repr(entry) for run in (result, bad) for entry in instance.all_logs(run.run_id)]
    texts += [repr(meta)]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*.parquet")]
    assert texts and not [t for t in texts if secret in t]
    # Configured from the environment, the resource holds the variable's name, never its value.
    monkeypatch.setenv("MDCA_API_TOKEN", secret)
    monkeypatch.setenv("MDCA_API_URL", server.url)
    from activity_pipeline.defs.resources import mdca_from_env

    configured = mdca_from_env()
    assert isinstance(configured.api_token, dg.EnvVar)
    assert secret not in repr(configured)


@pytest.mark.parametrize("buffer_kind", ["numpy", "bytearray"])
@pytest.mark.parametrize("separator", [b",", b", ", b",\n    "])
def test_the_raw_column_reuses_the_page_buffer_and_keeps_each_record_byte_for_byte(separator, buffer_kind):
    records = [
        b'{"_id":"a","timestamp":1,"note":"caf\xc3\xa9"}',
        b'{"_id":"b","timestamp":2}',
        b'{"_id": "c", "timestamp": 3, "ID": "differs only in case"}',
        b'{"_id":"d","timestamp":4,"nested":{"x":[1,2,{"y":null}]}}',
    ]
    text = b'{"hasNext":false, "data":[' + separator.join(records) + b'], "total":4}'
    # The client reads a page into a numpy byte array.
    body = bytearray(text) if buffer_kind == "bytearray" else np.frombuffer(text, np.uint8).copy()
    page, buffer = _decode_page(body)
    assert buffer is body
    # As after dropping a duplicate: the kept records are not contiguous in the buffer.
    kept = [page.data[0], page.data[2], page.data[3]]
    array = _raw_array(kept, body)
    assert array.to_pylist() == [r.decode() for r in (records[0], records[2], records[3])]
    # No second copy: the values live inside the page buffer.
    start = pa.py_buffer(body).address
    assert start <= array.buffers()[2].address < start + len(text)
    # Records that are not views into a writable page (a copy, bytes) are joined instead, just as exactly.
    assert _raw_array([msgspec.Raw(r) for r in records], text).to_pylist() == [r.decode() for r in records]


def test_decoded_records_are_not_tracked_by_the_garbage_collector():
    # Tracked, the million small objects of a day set off thousands of collections that hold the GIL.
    records = [
        b'{"_id":"a","timestamp":1,"device":{"clientIP":"10.0.0.1"},"location":{"city":"Oslo"},"user":{},'
        b'"userAgent":{"deviceType":"PC"},"mainInfo":{"type":"admin","activityResult":{"isSuccess":true}}}',
        b'{"_id":"b","timestamp":"2","appId":"not a number","mainInfo":{"activityResult":{"isSuccess":1}}}',
    ]
    for raw in records:
        row = decode_activity(raw)
        parts = [row, row.device, row.location, row.user, row.userAgent, row.mainInfo]
        parts.append(row.mainInfo.activityResult if row.mainInfo else None)
        assert [p for p in parts if p is not None and gc.is_tracked(p)] == []


def test_a_page_written_after_the_days_files_are_closed_fails_instead_of_writing(tmp_path):
    with DayWriter(tmp_path, dt.date(2026, 11, 24)) as writer:
        writer.commit({})
        with pytest.raises(RuntimeError, match="already closed"):
            writer.write(0, SCHEMA.empty_table())
        with pytest.raises(RuntimeError, match="already closed"):
            writer.quarantine([b'{"no_id": 1}'])
