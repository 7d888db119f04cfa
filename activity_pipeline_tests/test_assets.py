"""The `activities` asset: each day lands exactly once as Parquet, atomically, with its figures."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from activity_pipeline import config
from activity_pipeline.components.resources import (
    DEMO_WARNING,
    MDCA,
    DemoTenantResource,
    MdcaResource,
    resources_for,
)
from activity_pipeline.days import day_window
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.storage.schema import SCHEMA
from activity_pipeline.storage.staging import QUARANTINE
from activity_pipeline_testing.helpers import (
    NODE,
    RECENT,
    TENANT,
    TODAY,
    TOKEN,
    Untidy,
    broken,
    cli_env,
    launch,
    materialize,
    serve,
    tenant_data,
    tenant_resource,
)


def run_logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def stored(data_dir: Path, day: dt.date) -> Any:
    return pq.read_table(tenant_data(data_dir).paths.day_dir(day))


def test_parquet_holds_exactly_the_days_ids_and_the_records_as_served(tmp_path, recent, recent_server):
    day = RECENT[0]
    result = materialize(day, tmp_path, tenant_resource(recent_server.url, slices=3))
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
    for f in tenant_data(tmp_path).paths.day_dir(day).glob("*.parquet"):
        ts = pq.read_table(f, columns=["timestamp"]).column(0).cast("int64").to_pylist()
        assert ts == sorted(ts)


def test_materialization_metadata_has_counts_uri_schema_and_scan_figures(tmp_path, recent, recent_server):
    day = RECENT[1]
    result = materialize(day, tmp_path, tenant_resource(recent_server.url))
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    n = recent.truth_count(day)
    assert meta["dagster/partition_row_count"].value == n
    assert meta["tenant_row_count"].value == n
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
    assert materialize(day, tmp_path, tenant_resource(recent_server.url)).success
    first = stored(tmp_path, day).sort_by("id")
    first_run = tenant_data(tmp_path).manifest(day).run_id
    assert materialize(day, tmp_path, tenant_resource(recent_server.url, slices=4)).success
    second = stored(tmp_path, day).sort_by("id")
    assert second.equals(first)
    assert tenant_data(tmp_path).manifest(day).run_id != first_run
    # One version of the day, and nothing left behind in staging.
    assert len(list(tenant_data(tmp_path).paths.days.iterdir())) == 1
    assert not [p for p in tenant_data(tmp_path).staging.iterdir() if p.is_dir()]


def test_without_a_configured_tenant_the_demo_tenant_is_read_and_said_so(tmp_path):
    day = dt.date(2026, 11, 1)
    instance = dg.DagsterInstance.ephemeral()
    resource = DemoTenantResource(requests_per_minute=0, activities_per_day=5_000)
    result = materialize(day, tmp_path, resource, instance=instance)
    assert result.success
    truth = DemoTenant(TenantSpec(days=(day,), activities_per_day=5_000)).truth_ids(day)
    assert set(stored(tmp_path, day).column("id").to_pylist()) == truth
    assert len([m for m in run_logs(result, instance) if DEMO_WARNING in m]) == 1


def test_malformed_records_are_quarantined_and_missing_fields_become_null(tmp_path, recent):
    day = RECENT[0]
    with broken(Untidy, recent) as server:
        result = materialize(day, tmp_path, tenant_resource(server.url))
    assert result.success
    table = stored(tmp_path, day)
    quarantine = (tenant_data(tmp_path).paths.day_dir(day) / QUARANTINE).read_text().splitlines()
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    assert meta["quarantined"].value == len(quarantine) > 0
    assert table.num_rows + len(quarantine) == recent.truth_count(day)
    for line in quarantine:
        record = json.loads(line)
        assert "_id" not in record or not isinstance(record.get("timestamp"), int)
    rows = table.select(["country_code", "ip_address", "app_id", "raw"]).to_pylist()
    assert any(r["country_code"] is None and r["ip_address"] is None for r in rows)
    # A number sent as a string of digits is read as the number, as times are.
    assert any(r["app_id"] is not None and f'"appId":"{r["app_id"]}"' in r["raw"] for r in rows)


def test_configuration_errors_fail_without_retries_and_say_what_to_fix(tmp_path):
    result = materialize(
        RECENT[0], tmp_path, MdcaResource(api_url="http://mdca.example.com", api_token="x"), raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node(NODE)
    assert "plain http:// to mdca.example.com" in failure.user_failure_data.description
    assert not (tmp_path / "activities").exists()


def test_a_day_beyond_the_services_retention_fails_fast_with_the_reason(tmp_path, recent_server):
    day = TODAY - dt.timedelta(days=200)
    result = materialize(day, tmp_path, tenant_resource(recent_server.url), raise_on_error=False)
    assert not result.success
    description = result.failure_data_for_node(NODE).user_failure_data.description
    assert "keeps activities for 180 days" in description and str(day) in description
    assert not (tmp_path / "activities").exists(), "no empty day was written"


def test_headless_materialize_from_the_cli(tmp_path, recent, recent_server):
    day = RECENT[1]
    env = cli_env(recent_server.url, tmp_path / "data", tmp_path / "home")
    proc = subprocess.run(launch(day), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(stored(tmp_path / "data", day).column("id").to_pylist()) == recent.truth_ids(day)
    assert TOKEN not in proc.stdout + proc.stderr
    assert "superseded" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", ["full-scan", "top-up"])
def test_killing_a_run_mid_scan_leaves_the_previous_day_intact(tmp_path, recent, recent_server, kind):
    day = RECENT[0]
    data = tmp_path / "data"
    assert materialize(day, data, tenant_resource(recent_server.url)).success
    if kind == "full-scan":
        # A day stored before top-ups existed has no watermark: the next run scans it in full.
        path = tenant_data(data).paths.day_dir(day) / "_manifest.json"
        manifest = json.loads(path.read_text())
        del manifest["watermark_ms"]
        path.write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in tenant_data(data).paths.day_dir(day).iterdir()}
    slow = serve(recent, latency_ms=800)
    try:
        proc = subprocess.Popen(
            launch(day),
            env=cli_env(slow.url, data, tmp_path / "home"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        staged: list[Path] = []
        while time.monotonic() < deadline and not staged:
            staged = [p for p in tenant_data(data).staging.glob("date=*/*.parquet") if p.stat().st_size > 0]
            time.sleep(0.05)
        assert staged, "the run never reached the scan"
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its step worker, mid-scan
        proc.wait(timeout=30)
    finally:
        slow.stop()
    after = {p.name: p.read_bytes() for p in tenant_data(data).paths.day_dir(day).iterdir()}
    assert after == before, "the earlier version of the day is untouched"
    assert sorted(p.name for p in tenant_data(data).paths.days.glob("date=*/*.parquet")) == sorted(
        n for n in before if n.endswith(".parquet")
    ), "nothing half-written is matched by the dataset's glob"
    assert [p for p in tenant_data(data).staging.iterdir() if p.is_dir()], "the killed run's work is left in staging"
    # The next run cleans up after the killed one and lands the day.
    assert materialize(day, data, tenant_resource(recent_server.url)).success
    assert not [p for p in tenant_data(data).staging.iterdir() if p.is_dir()]
    assert set(stored(data, day).column("id").to_pylist()) == recent.truth_ids(day)


def test_dataset_reads_as_one_table_across_days(tmp_path, recent, recent_server):
    for day in RECENT:
        assert materialize(day, tmp_path, tenant_resource(recent_server.url)).success
    dataset = ds.dataset(tmp_path / "activities", format="parquet", partitioning="hive")
    assert dataset.count_rows() == sum(recent.truth_count(d) for d in RECENT)


def test_the_token_never_reaches_dagster_logs_metadata_or_files(tmp_path, recent):
    secret = "tok-" + "7c1e9f0a3b5d"  # a distinct value, so that a hit can only be a leak
    server = serve(recent, tokens=(secret,), requests_per_minute=4, window_seconds=1.0, fault_rate=0.2,
                   retry_after=False)  # fmt: skip
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
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    assert meta["retries"].value > 0, "the run went through retries, whose logs are searched too"
    texts = [repr(entry) for run in (result, bad) for entry in instance.all_logs(run.run_id)]
    texts += [repr(meta)]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*.parquet")]
    assert texts and not [t for t in texts if secret in t]


def test_configured_from_the_environment_the_resource_holds_the_variables_name_not_the_token(monkeypatch):
    secret = "tok-" + "0d9b4e2a6c81"
    env = {"MDCA_API_TOKEN": secret, "MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com"}
    clients = resources_for(config.load(env))[MDCA].resource_fn(None)
    configured = clients[TENANT]
    assert isinstance(configured, MdcaResource) and configured.api_token is None
    assert configured.variables == {"api_token": "MDCA_API_TOKEN"}
    assert secret not in repr(configured) and secret not in repr(configured.model_dump())
    # The token is read from its variable when a client opens, and only then.
    monkeypatch.setenv("MDCA_API_TOKEN", secret)
    assert configured.settings().api_token is not None


def test_a_mistyped_host_fails_the_run_in_seconds_without_a_dagster_retry(tmp_path):
    t0 = time.monotonic()
    typo = MdcaResource(api_url="https://tenant-typo.invalid", api_token="t")
    result = materialize(RECENT[0], tmp_path, typo, raise_on_error=False)
    assert time.monotonic() - t0 < 30
    assert not result.success
    description = result.failure_data_for_node(NODE).user_failure_data.description
    assert "tenant-typo.invalid" in description and "does not resolve" in description
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
