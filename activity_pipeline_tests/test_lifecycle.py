"""The lake's upkeep as Dagster runs it: the compaction sensor and job, the retention job (`keep_days`), the vacuum
on object storage; and that checks and views stay green afterwards."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from activity_pipeline import config
from activity_pipeline.components.lifecycle import COMPACTION_ATTEMPTS
from activity_pipeline.components.partitions import TenantDays
from activity_pipeline.components.resources import ActivityStorage, resources_for
from activity_pipeline.components.tenants import tenants_definitions
from activity_pipeline.ingest import ingest_day
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import build_database
from activity_pipeline_testing.helpers import (
    ASSET,
    DAYS,
    TENANT,
    check_only,
    client_for,
    partition,
    project_defs,
    run_day,
    stored,
    tenant_data,
    tenant_resource,
)


def _observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [
        e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]  # type: ignore[union-attr]


def _compaction_tick(defs: dg.Definitions, data_dir: Path, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """The run requests of one tick of the tenant's compaction sensor over the dataset in `data_dir`."""
    sensor = defs.resolve_sensor_def("compaction")
    resources = {"storage": ActivityStorage(data_dir=str(data_dir))}
    with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
        return list(sensor.evaluate_tick(context).run_requests or [])


def test_the_sensor_compacts_settled_days_once_and_checks_and_views_stay_green(tmp_path, server, tenant):
    for day in DAYS:
        assert run_day(day, tenant_resource(server.url), tmp_path).success
    defs = project_defs(tenant_resource(server.url), tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    requests = _compaction_tick(defs, tmp_path, instance)
    assert [r.partition_key for r in requests] == [partition(d) for d in DAYS], "settled, not compacted: all three"
    job = defs.resolve_job_def("compact_day")
    result = job.execute_in_process(partition_key=partition(DAYS[0]), tags=requests[0].tags, instance=instance)
    assert result.success
    (observation,) = _observations(result)
    assert observation.asset_key == ASSET and observation.partition == partition(DAYS[0])
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["compaction/files_after"] == 1 and meta["compaction/files_before"] >= 1
    assert meta["compaction/row_groups_after"] < meta["compaction/row_groups_before"]
    assert meta["compaction/rows"] == tenant.truth_count(DAYS[0])
    again = {r.partition_key for r in _compaction_tick(defs, tmp_path, instance)}
    assert again == {partition(DAYS[1]), partition(DAYS[2])}, "a compacted day is not asked for again"
    for name in ("count_matches_source", "ids_unique", "timestamps_in_partition", "schema_matches"):
        assert check_only(name, DAYS[0], tenant_resource(server.url), tmp_path).passed, name
    database = build_database(open_dataset(tmp_path))
    with duckdb.connect(str(database.path), read_only=True) as con:
        rows = con.execute("SELECT count(*), count(DISTINCT id) FROM activities WHERE date = ?", [DAYS[0]]).fetchone()
    assert rows == (tenant.truth_count(DAYS[0]),) * 2


def test_a_failed_compaction_is_asked_for_again_up_to_its_attempts(tmp_path, server):
    assert run_day(DAYS[0], tenant_resource(server.url), tmp_path).success
    defs = project_defs(tenant_resource(server.url), tmp_path)
    sensor = defs.resolve_sensor_def("compaction")
    job = defs.resolve_job_def("compact_day")
    storage = ActivityStorage(data_dir=str(tmp_path))
    keys = []
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(COMPACTION_ATTEMPTS):
            with dg.build_sensor_context(instance=instance, resources={"storage": storage}, definitions=defs) as c:
                (request,) = sensor.evaluate_tick(c).run_requests
            keys.append(request.run_key)
            # A run holds the day: the compaction fails, as it would beside a re-scan of the day.
            with storage.tenant(TENANT).writer(DAYS[0], run_id="a-run"):
                result = job.execute_in_process(partition_key=request.partition_key, tags=request.tags,
                                                instance=instance, raise_on_error=False)  # fmt: skip
            assert not result.success
        with dg.build_sensor_context(instance=instance, resources={"storage": storage}, definitions=defs) as c:
            given_up = sensor.evaluate_tick(c)
    assert len(set(keys)) == COMPACTION_ATTEMPTS, "each attempt after a failure has a run key of its own"
    assert not given_up.run_requests, f"not asked for after {COMPACTION_ATTEMPTS} failures"
    assert f"failed {COMPACTION_ATTEMPTS} times" in str(given_up.skip_message)
    assert storage.tenant(TENANT).manifest(DAYS[0]).compactions == [], "the day was left as it was"


def _tenants(tmp_path: Path, keep: str) -> config.PipelineConfig:
    path = tmp_path / "tenants.yaml"
    path.write_text(f"tenants:\n  - name: contoso\n    demo: true\n    keep_days: {keep}\n")
    return config.load({"ACTIVITY_TENANTS_FILE": str(path), "ACTIVITY_DATA_DIR": str(tmp_path / "data")})


TODAY = dt.datetime.now(dt.UTC).date()


def _defs(settings: config.PipelineConfig) -> dg.Definitions:
    return dg.Definitions.merge(tenants_definitions(settings, TODAY), dg.Definitions(resources=resources_for(settings)))


def _retention(settings: config.PipelineConfig) -> dg.ExecuteInProcessResult:
    """The retention job, run now (its cut-off is relative to the run's start)."""
    with dg.DagsterInstance.ephemeral() as instance:
        return _defs(settings).resolve_job_def("retention").execute_in_process(instance=instance, raise_on_error=False)


def test_the_retention_job_deletes_exactly_the_expired_days_and_keeps_a_record(tmp_path, server, tenant):
    data = tmp_path / "data"
    for day in DAYS:
        ingest_day(client_for(server.url), tenant_data(data, "contoso"), day)
    keep = (TODAY - DAYS[1]).days  # keeps DAYS[1] (today - keep_days) and DAYS[2]; DAYS[0] is one day too old
    settings = _tenants(tmp_path, str(keep))
    result = _retention(settings)
    assert result.success
    store = tenant_data(data, "contoso")
    assert store.days() == [DAYS[1], DAYS[2]], "exactly the expired day is gone"
    (record,) = store.deleted_days()
    assert (record.tenant, record.day, record.rows) == ("contoso", DAYS[0], tenant.truth_count(DAYS[0]))
    assert f"keep_days {keep}" in record.reason and record.deleted_at
    grid = TenantDays.of(settings.tenants, open_dataset(data), TODAY)
    assert grid.first["contoso"] == DAYS[1], "a deleted day is no partition: never missing"
    assert grid.partitions.days.get_first_partition_key() == DAYS[1].isoformat()
    database = build_database(open_dataset(data), start_dates={"contoso": DAYS[1]})
    with duckdb.connect(str(database.path), read_only=True) as con:
        assert con.execute("SELECT tenant, date, rows FROM deleted_days").fetchall() == [
            ("contoso", DAYS[0], record.rows)
        ]
        assert con.execute("SELECT count(*) FROM activities WHERE date = ?", [DAYS[0]]).fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM retention_risk").fetchone() == (0,)
    assert _retention(settings).success and len(store.deleted_days()) == 1, "nothing more to delete"


def test_a_day_not_yet_in_the_copy_is_kept_and_the_run_says_so(tmp_path, server):
    data, archive = tmp_path / "data", tmp_path / "archive"
    for day in DAYS[:2]:
        ingest_day(client_for(server.url), tenant_data(data, "contoso"), day)
    keep = (TODAY - DAYS[1]).days - 1  # both days are past it
    settings = _tenants(tmp_path, f"{{days: {keep}, copied_to: {archive}}}")
    result = _retention(settings)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "were kept, because keep_days.copied_to does not hold them whole" in str(failure.event_specific_data.error)
    assert tenant_data(data, "contoso").days() == list(DAYS[:2]), "nothing deleted that is not in the copy"
    shutil.copytree(data / "activities" / "tenant=contoso" / f"date={DAYS[0]}",
                    archive / "activities" / "tenant=contoso" / f"date={DAYS[0]}")  # fmt: skip
    assert not _retention(settings).success, "the day not copied still holds the run back"
    assert tenant_data(data, "contoso").days() == [DAYS[1]], "the copied day is deleted"


@pytest.mark.parametrize("keep", ["0", "-3", "forever", "{days: 30}", "{days: 30, copied_to: ''}", "{weeks: 4}"])
def test_keep_days_takes_a_number_of_days_or_days_and_a_copy(tmp_path, keep):
    from activity_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="keep_days"):
        _tenants(tmp_path, keep)


@pytest.mark.object_storage
def test_vacuum_keeps_what_a_reader_of_the_last_week_needs_and_refuses_a_short_retention(
    tmp_path, server, tenant, lake
):
    from deltalake import DeltaTable

    from activity_pipeline.components.lifecycle import build_vacuum
    from activity_pipeline.storage.compaction import compact_day

    url, _ = lake
    store = open_dataset(tmp_path, url).tenant("contoso")
    ingest_day(client_for(server.url), store, DAYS[0])
    before = DeltaTable(f"{url}/activities").version()
    compact_day(store, DAYS[0])
    job, _ = build_vacuum()
    defs = dg.Definitions(jobs=[job], resources={"storage": ActivityStorage(data_dir=str(tmp_path), data_url=url)})

    def vacuum(**op_config: object) -> dg.ExecuteInProcessResult:
        run_config = {"ops": {"vacuum_activities_table": {"config": op_config}}}
        return defs.resolve_job_def("activities_vacuum").execute_in_process(run_config=run_config, raise_on_error=False)

    assert vacuum().success
    old = DeltaTable(f"{url}/activities", version=before).to_pyarrow_table(columns=["id"])
    assert old.num_rows == tenant.truth_count(DAYS[0]), "a reader of the version before the compaction still reads it"
    refused = vacuum(horizon_hours=0)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "shorter than Delta's default of 168" in str(failure.event_specific_data.error)
    assert vacuum(horizon_hours=0, allow_short_horizon=True).success
    with pytest.raises(Exception):  # noqa: B017 - delta-rs or the object store says the file is gone
        DeltaTable(f"{url}/activities", version=before).to_pyarrow_table(columns=["id"])
    assert sorted(i for i, _ in stored(open_dataset(tmp_path, url), "contoso", DAYS[0])) == sorted(
        tenant.truth_ids(DAYS[0])
    ), "the current version reads whole"


def test_the_sensor_upgrades_a_day_compacted_with_older_typed_columns(tmp_path, server):
    """A dataset written by the schema-1 writer (fixtures/schema-1-dataset), as tenant `default`: its compacted
    day is of version 1, so the sensor asks for it; once the job has compacted it again it is current."""
    fixture = Path(__file__).with_name("fixtures") / "schema-1-dataset" / "local" / "activities" / "tenant=contoso"
    shutil.copytree(fixture, tmp_path / "activities" / f"tenant={TENANT}")
    old = dt.date(2026, 11, 21)
    assert tenant_data(tmp_path).manifest(old).schema_version == 1 and tenant_data(tmp_path).facts(old).rows
    defs = project_defs(tenant_resource(server.url), tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    requests = _compaction_tick(defs, tmp_path, instance)
    assert partition(old) in [r.partition_key for r in requests], "compacted, but with version 1's columns"
    request = next(r for r in requests if r.partition_key == partition(old))
    job = defs.resolve_job_def("compact_day")
    assert job.execute_in_process(partition_key=partition(old), tags=request.tags, instance=instance).success
    assert tenant_data(tmp_path).manifest(old).schema_version == 2
    assert partition(old) not in {r.partition_key for r in _compaction_tick(defs, tmp_path, instance)}


def test_a_compaction_tick_asks_for_a_bounded_number_of_runs_and_the_next_goes_on(tmp_path):
    from activity_pipeline.components.lifecycle import COMPACTIONS_PER_TICK_IN_ALL

    names = [f"t{i:02d}" for i in range(30)]
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n" + "".join(f"  - {{name: {n}, demo: true}}\n" for n in names))
    settled = [TODAY - dt.timedelta(days=k) for k in (10, 11)]
    for name in names:
        for day in settled:
            with tenant_data(tmp_path, name).writer(day) as writer:
                writer.commit()
    settings = config.load({"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(tmp_path)})
    defs = _defs(settings)
    sensor = defs.resolve_sensor_def("compaction")
    resources = {"storage": ActivityStorage(data_dir=str(tmp_path))}
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
        first = sensor.evaluate_tick(context)
    assert len(first.run_requests) == COMPACTIONS_PER_TICK_IN_ALL, "not one run per settled day of every tenant"
    asked = {r.tags["activity_pipeline/tenant"] for r in first.run_requests}
    with dg.build_sensor_context(
        instance=instance, resources=resources, definitions=defs, cursor=first.cursor
    ) as context:
        second = sensor.evaluate_tick(context)
    assert {r.tags["activity_pipeline/tenant"] for r in second.run_requests}.isdisjoint(asked), "the others next"
    assert len(first.run_requests) + len(second.run_requests) == 2 * COMPACTIONS_PER_TICK_IN_ALL
