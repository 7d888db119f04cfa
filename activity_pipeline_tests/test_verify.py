"""Every stored day can prove it is intact: each file's digest is recorded when it is written, and `make verify`
(and the weekly activities_verification job) read every file again, find one flipped byte in any column on every
backend, name the day, the file and the repair, and fail."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from activity_pipeline.components.alerting import run_failure_alert
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.ingest import ingest_day
from activity_pipeline.run_summary import check_evaluations
from activity_pipeline.storage.compaction import compact_day
from activity_pipeline_testing import helpers
from activity_pipeline_testing.helpers import RECENT, REPO, cli_env, client_for, serve, tenant_data

DAYS = RECENT


def _tenant() -> DemoTenant:
    tenant = DemoTenant(TenantSpec(days=DAYS, activities_per_day=3_000))
    tenant.set_now(helpers.later(10))
    return tenant


def _flip(store, day: dt.date, column: str) -> str:
    """Flip one byte in the middle of `column`'s first compressed chunk of the day's first file; its name."""
    name = sorted(store.manifest(day).files)[0]
    if hasattr(store, "lake"):  # object storage: the object downloaded, changed and put back under its key
        import obstore

        from activity_pipeline.storage.delta import TABLE, partition

        key = f"{TABLE}/{partition(store.tenant, day)}/{name}"
        data = bytearray(bytes(obstore.get(store.lake.store, key).bytes()))
    else:
        path = store.day_location(day) / name
        data = bytearray(path.read_bytes())
    group = pq.ParquetFile(pa_buffer(data)).metadata.row_group(0)
    leaves = [group.column(i).path_in_schema for i in range(group.num_columns)]  # nested columns have several
    meta = group.column(leaves.index(column))
    start = meta.dictionary_page_offset or meta.data_page_offset
    data[start + meta.total_compressed_size // 2] ^= 0x5A
    if hasattr(store, "lake"):
        obstore.put(store.lake.store, key, bytes(data))
    else:
        path.write_bytes(bytes(data))
    return name


def pa_buffer(data: bytearray):
    import pyarrow as pa

    return pa.BufferReader(bytes(data))


def test_a_flipped_byte_in_raw_or_another_column_is_found_on_every_backend(backend):
    with serve(_tenant()) as server:
        for day in DAYS:
            ingest_day(client_for(server.url), backend.store(), day)
    store = backend.store()
    for day in DAYS:
        manifest = store.manifest(day)
        assert set(manifest.digests) == set(manifest.files), "every file's digest is recorded as it is written"
        verified = store.verify_day(day)
        assert verified.intact and verified.rows == manifest.rows and not verified.undigested, verified.problems
    raw_file = _flip(store, DAYS[0], "raw")
    city_file = _flip(store, DAYS[1], "city")
    first, second = store.verify_day(DAYS[0]), store.verify_day(DAYS[1])
    assert not first.intact and raw_file in first.problems[0] and "SHA-256" in first.problems[0]
    assert not second.intact and city_file in second.problems[0]
    kept = store.verifications()
    assert not kept[DAYS[0]].intact and not kept[DAYS[1]].intact, "what was found is kept for the check"
    assert store.verification(DAYS[0]) == kept[DAYS[0]] and store.verification(DAYS[0] - dt.timedelta(days=9)) is None


def test_a_compacted_day_records_its_new_files_digests_and_verifies(tmp_path):
    store = tenant_data(tmp_path)
    with serve(_tenant()) as server:
        ingest_day(client_for(server.url), store, DAYS[0], slices=3)
    compact_day(store, DAYS[0])
    manifest = store.manifest(DAYS[0])
    assert manifest.compacted and set(manifest.digests) == set(manifest.files)
    assert store.verify_day(DAYS[0]).intact


def _verify(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "activity_pipeline.verify", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_make_verify_passes_a_healthy_dataset_and_fails_naming_the_damaged_day_and_its_repair(tmp_path):
    with serve(_tenant()) as server:
        for day in DAYS:
            ingest_day(client_for(server.url), tenant_data(tmp_path / "data"), day)
        env = cli_env(server.url, tmp_path / "data", tmp_path / "home")
    healthy = _verify(env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"default {DAYS[0]}: intact" in healthy.stdout and "every one intact" in healthy.stdout
    name = _flip(tenant_data(tmp_path / "data"), DAYS[1], "raw")
    damaged = _verify(env)
    assert damaged.returncode == 1
    assert f"default {DAYS[1]}: DAMAGED" in damaged.stdout and name in damaged.stdout
    assert f"make run DAY={DAYS[1]} TENANT=default FULL_RESCAN=1" in damaged.stdout, "the repair, as a command"
    assert f"default {DAYS[0]}: intact" in damaged.stdout
    one = _verify(env, "--day", DAYS[0].isoformat())
    assert one.returncode == 0 and DAYS[1].isoformat() not in one.stdout
    bad = _verify(env, "--day", "2026-12-3")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_the_weekly_job_fails_on_a_damaged_day_shows_it_as_the_days_check_and_alerts(tmp_path):
    data = tmp_path / "data"
    with serve(_tenant()) as server:
        for day in DAYS:
            ingest_day(client_for(server.url), tenant_data(data), day)
        defs = helpers.project_defs(helpers.tenant_resource(server.url), data)
        instance = dg.DagsterInstance.ephemeral()
        job = defs.resolve_job_def("activities_verification")
        assert job.execute_in_process(instance=instance).success
        _flip(tenant_data(data), DAYS[0], "raw")
        # Read within the last four weeks, the days are not due: every_day reads them all (as the UI's launchpad can).
        every = {"ops": {"verify_stored_days": {"config": {"every_day": True}}}}
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=every)
    assert not result.success
    failure = result.failure_data_for_node("verify_stored_days").user_failure_data.description
    assert f"default {DAYS[0]}" in failure and "Repair:" in failure
    (evaluation,) = [e for e in check_evaluations(instance, result.run_id) if e.partition == helpers.partition(DAYS[0])]
    assert evaluation.check_name == "stored_files_intact" and not evaluation.passed
    (record,) = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    context = dg.build_run_status_sensor_context(
        sensor_name="activity_alerts_failed_runs", dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance, dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()  # fmt: skip
    alert = run_failure_alert(context)
    assert alert is not None and "stored_files_intact" in alert.what and DAYS[0].isoformat() in alert.details
    assert "copied_to" in alert.runbook


def test_the_weekly_job_reads_only_days_not_read_lately(tmp_path):
    data = tmp_path / "data"
    with serve(_tenant()) as server:
        for day in DAYS:
            ingest_day(client_for(server.url), tenant_data(data), day)
        defs = helpers.project_defs(helpers.tenant_resource(server.url), data)
    job = defs.resolve_job_def("activities_verification")
    with dg.DagsterInstance.ephemeral() as instance:
        first = check_evaluations(instance, job.execute_in_process(instance=instance).run_id)
        again = check_evaluations(instance, job.execute_in_process(instance=instance).run_id)
    assert len(first) == len(DAYS) and not again
    assert {Path(p).name for p in (data / "_verified" / "tenant=default").iterdir()} == {f"{d}.json" for d in DAYS}


def test_a_day_written_before_digests_is_decoded_and_its_raw_json_checked(tmp_path):
    store = tenant_data(tmp_path)
    with serve(_tenant()) as server:
        ingest_day(client_for(server.url), store, DAYS[0])
    path = store.day_location(DAYS[0]) / "_manifest.json"
    old = json.loads(path.read_text())
    old.pop("digests")
    old["manifest_version"] = 3
    path.write_text(json.dumps(old))
    verified = store.verify_day(DAYS[0])
    assert verified.intact and verified.undigested == len(old["files"])
    _flip(store, DAYS[0], "raw")
    damaged = store.verify_day(DAYS[0])
    assert not damaged.intact and damaged.undigested and "part-" in damaged.problems[0]
