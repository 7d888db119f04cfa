"""What is particular to the dataset on object storage (ACTIVITY_DATA_URL), a Delta table, on moto's S3 server
and on Azurite: a Delta reader that knows nothing of the project, commits rebuilt on a moved table, a top-up
refused because another pod replaced the day, the storage service's refusals, and the daily job with its
checks and the DuckDB file, read by the DuckDB CLI. What every backend promises is `test_storage_contract.py`.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from activity_pipeline.components.resources import MDCA, ActivityStorage, TenantClients
from activity_pipeline.definitions import build_defs
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.ingest import ShorterScanError, ingest_day, top_up_day
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.delta import Lake
from activity_pipeline.storage.errors import DayChangedError
from activity_pipeline.storage.lake import LakeStore
from activity_pipeline.storage.lake_sql import duckdb_setup, duckdb_url, extension_path
from activity_pipeline.storage.lake_writer import LakeDayWriter
from activity_pipeline_testing.helpers import (
    ASSET,
    DAYS,
    JOB,
    NODE,
    STRESS_DAY,
    TENANT,
    TOKEN,
    LosesRecords,
    broken,
    client_for,
    evaluations,
    later,
    partition,
    serve,
    stored,
    tenant_resource,
)
from activity_pipeline_testing.object_storage import (
    S3_SECRET,
    azure_env,
    new_bucket,
)

pytestmark = pytest.mark.object_storage


@pytest.fixture(scope="module")
def stress() -> DemoTenant:
    """The tests' three days, the last with a tie of 6000 records on one timestamp; every late record arrived."""
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=12_000, stress_days=frozenset({STRESS_DAY})))
    t.set_now(later(10))
    return t


def delta_scan(url: str) -> list[tuple[str, str, dt.date, int]]:
    """(tenant, id, date, rows of that id) as DuckDB's own Delta reader sees the table: through the log, knowing
    nothing of this project."""
    with duckdb.connect() as con:
        for sql in duckdb_setup(url):
            con.execute(sql)
        con.execute(f"LOAD '{extension_path('delta')}'")
        return con.execute(
            "SELECT tenant, date, count(*), count(DISTINCT id) FROM delta_scan(?) GROUP BY ALL ORDER BY ALL",
            [duckdb_url(Lake(url).table_url)],  # abfss: its Blob twin, as Azurite has no Data Lake endpoint
        ).fetchall()


def test_a_delta_reader_that_knows_nothing_of_the_project_sees_each_day_once(tmp_path, lake, stress, monkeypatch):
    url, _ = lake
    data = LakeStore(Lake(url), tmp_path, "contoso")
    with serve(stress) as server:
        ingest_day(client_for(server.url), data, DAYS[0])
        ingest_day(client_for(server.url), data, DAYS[0])  # a re-run: the first version's files stay in the folder
        ingest_day(client_for(server.url), data, DAYS[1])
        from deltalake import DeltaTable

        with monkeypatch.context() as m, pytest.raises(RuntimeError):
            m.setattr(DeltaTable, "create_write_transaction", lambda *a, **k: (_ for _ in ()).throw(RuntimeError()))
            ingest_day(client_for(server.url), data, DAYS[1])  # uploaded, never committed
    n0, n1 = stress.truth_count(DAYS[0]), stress.truth_count(DAYS[1])
    assert delta_scan(url) == [("contoso", DAYS[0], n0, n0), ("contoso", DAYS[1], n1, n1)]


def test_a_commit_is_rebuilt_when_the_tables_metadata_changed_under_it(tmp_path, lake, stress, monkeypatch):
    # What two runs creating the table at once leave (delta-rs commits the loser's create as version 1), made
    # to land between the writer's read of the table and its commit: delta-rs refuses that commit.
    from deltalake import DeltaTable

    url, _ = lake
    real_commit = DeltaTable.create_write_transaction
    attempts = []

    def metadata_changed_first(self, *args, **kwargs):
        if not attempts:
            DeltaTable(Lake(url).table_url).alter.set_table_description("changed by another writer")
        attempts.append(self.version())
        return real_commit(self, *args, **kwargs)

    data = LakeStore(Lake(url), tmp_path, "contoso")
    with serve(stress) as server, monkeypatch.context() as m:
        m.setattr(DeltaTable, "create_write_transaction", metadata_changed_first)
        result = ingest_day(client_for(server.url), data, DAYS[0])
    assert len(attempts) == 2 and attempts[1] == attempts[0] + 1, "refused once, then built on the new version"
    history = [h["operation"] for h in reversed(Lake(url).table().history())]
    assert history[-2:] == ["UPDATE TABLE METADATA", "WRITE"], history
    assert sorted(f["name"] for f in data.current_files()[DAYS[0]]) == sorted(result.manifest.files)
    assert sorted(i for i, _ in stored(open_dataset(tmp_path, url), "contoso", DAYS[0])) == sorted(
        stress.truth_ids(DAYS[0])
    )


def test_a_top_up_refuses_a_day_another_run_replaced_meanwhile(tmp_path, lake, monkeypatch):
    url, _ = lake
    day = STRESS_DAY
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=5_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    data = LakeStore(Lake(url), tmp_path / "pod-a", "contoso")
    elsewhere = LakeStore(Lake(url), tmp_path / "pod-b", "contoso")  # another pod: its own disk
    real_commit = LakeDayWriter.commit
    with serve(tenant) as server:
        ingest_day(client_for(server.url), data, day)
        tenant.advance(dt.timedelta(days=3))
        replaced = []

        def replaced_meanwhile(self, **figures):
            if self.staging_root == data.staging and not replaced:
                replaced.append(ingest_day(client_for(server.url), elsewhere, day))
            return real_commit(self, **figures)

        with monkeypatch.context() as m, pytest.raises(DayChangedError, match="another run replaced the day"):
            m.setattr(LakeDayWriter, "commit", replaced_meanwhile)
            top_up_day(client_for(server.url), data, day)
        names = sorted(f["name"] for f in data.current_files()[day])
        assert names == sorted(replaced[0].manifest.files), "the other run's version stands, nothing added"
        again = top_up_day(client_for(server.url), data, day)
    ids = [i for i, _ in stored(open_dataset(tmp_path, url), "contoso", day)]
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(day)
    assert again.added == len(ids) - replaced[0].rows


def test_the_daily_job_checks_and_queries_the_dataset_on_object_storage(tmp_path, lake, recent, recent_server):
    url, env = lake
    day = sorted(recent.spec.days)[0]
    storage = ActivityStorage(data_dir=str(tmp_path / "data"), data_url=url)
    defs = build_defs({MDCA: TenantClients({TENANT: tenant_resource(recent_server.url)}), "storage": storage})
    result = defs.resolve_job_def(JOB).execute_in_process(partition_key=partition(day), raise_on_error=False)
    assert result.success
    verdicts = evaluations(result)
    assert verdicts["count_matches_source"].passed and verdicts["ids_unique"].passed
    assert not list((tmp_path / "data").rglob("*.parquet")), "no day is kept on local disk"
    database, script = tmp_path / "data" / "activities.duckdb", tmp_path / "data" / "activities.sql"
    cli = Path(sys.executable).with_name("duckdb")
    proc = subprocess.run(
        [str(cli), "-init", str(script), "-csv", "-noheader", str(database), "-c",
         "SELECT count(*) FROM activities; SELECT last_check_passed FROM partition_health"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert str(recent.truth_count(day)) in lines and "true" in lines
    texts = [repr(event) for event in result.all_events]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "data").rglob("*") if p.is_file()]
    texts += [str(Lake(url).get_json(key)) for key in Lake(url).keys("_manifests") + Lake(url).keys("_health")]
    assert len(texts) > 10
    for text in texts:
        assert S3_SECRET not in text and TOKEN not in text


def _materialize_on(url: str, tmp_path: Path, mdca_url: str, day: dt.date) -> dg.ExecuteInProcessResult:
    storage = ActivityStorage(data_dir=str(tmp_path / "data"), data_url=url)
    defs = build_defs({MDCA: TenantClients({TENANT: tenant_resource(mdca_url)}), "storage": storage})
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [defs.resolve_assets_def(ASSET)], partition_key=partition(day), instance=instance, raise_on_error=False
        )


def _fails_at_once(result: dg.ExecuteInProcessResult, seconds: float) -> str:
    assert not result.success
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert seconds < 60
    return result.failure_data_for_node(NODE).user_failure_data.description


def test_a_bucket_that_does_not_exist_fails_the_run_at_once_naming_it(tmp_path, lake, recent, recent_server):
    url, _ = lake
    missing = url.replace("lake-", "missing-")  # new_bucket's names start with lake-
    started = time.monotonic()
    result = _materialize_on(missing, tmp_path, recent_server.url, sorted(recent.spec.days)[0])
    description = _fails_at_once(result, time.monotonic() - started)
    assert missing in description and "does not exist" in description
    assert S3_SECRET not in description


def test_storage_credentials_the_service_refuses_fail_the_run_at_once(tmp_path, emulators, recent, recent_server,
                                                                     monkeypatch):  # fmt: skip
    """On Azurite, which checks the account key (moto's S3 takes any)."""
    endpoint = emulators("azure")
    for key, value in azure_env(endpoint).items():
        monkeypatch.setenv(key, value)
    url = new_bucket("azure", endpoint)
    wrong = "d3Jvbmcta2V5LWZvci10aGUtdGVzdC0zOWQx"
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", wrong)
    started = time.monotonic()
    result = _materialize_on(url, tmp_path, recent_server.url, sorted(recent.spec.days)[0])
    description = _fails_at_once(result, time.monotonic() - started)
    assert "refused the credentials" in description and "AZURE_STORAGE_ACCOUNT_KEY" in description
    assert wrong not in description


def test_a_short_full_rescan_is_kept_aside_and_the_table_keeps_the_day(tmp_path, lake, stress):
    url, _ = lake
    data = LakeStore(Lake(url), tmp_path, "contoso")
    with serve(stress) as server:
        ingest_day(client_for(server.url), data, DAYS[0])
    before, version = sorted(stored(open_dataset(tmp_path, url), "contoso", DAYS[0])), Lake(url).table().version()
    with broken(LosesRecords, stress) as lossy, pytest.raises(ShorterScanError, match="kept aside") as info:
        ingest_day(client_for(lossy.url), data, DAYS[0])
    assert Lake(url).table().version() == version, "nothing committed"
    assert sorted(stored(open_dataset(tmp_path, url), "contoso", DAYS[0])) == before
    assert list(info.value.path.glob("*.parquet")), "the short scan's files are kept aside locally"


def test_an_intraday_collection_on_object_storage_is_queryable_at_once(tmp_path, lake, served):
    """On object storage the DuckDB file names the table's files of the moment it was built: each intraday run that
    stores a version builds it again, so what it stored is returned, and `freshness` has its watermark."""
    from activity_pipeline import config
    from activity_pipeline.components.intraday import JOB as INTRADAY

    url, _env = lake
    now = dt.datetime.now(dt.UTC)
    tenant = DemoTenant(TenantSpec(days=(now.date(),), activities_per_day=3_000, seed=9))
    tenant.set_now(now - dt.timedelta(minutes=20))
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - {{name: {TENANT}, demo: true, intraday_minutes: 1}}\n")
    data = tmp_path / "data"
    settings = config.load(
        {"ACTIVITY_TENANTS_FILE": str(tenants), "ACTIVITY_DATA_DIR": str(data), "ACTIVITY_DATA_URL": url}
    )
    storage = ActivityStorage(data_dir=str(data), data_url=url)
    defs = build_defs({MDCA: TenantClients({TENANT: tenant_resource(served(tenant))}), "storage": storage}, settings)
    job = defs.resolve_job_def(INTRADAY)
    ask = {"ops": {"collect_intraday": {"config": {"tenants": [TENANT]}}}}
    dataset = open_dataset(data, url)
    for _ in range(2):
        assert job.execute_in_process(run_config=ask).success
        manifest = dataset.tenant(TENANT).manifest(now.date())
        con = duckdb.connect(str(data / "activities.duckdb"), read_only=True)
        try:
            for sql in duckdb_setup(url):
                con.execute(sql)
            assert con.execute("SELECT count(*) FROM activities").fetchone() == (manifest.rows,)
            (watermark,) = con.execute("SELECT complete_up_to FROM freshness").fetchone()
            (in_progress,) = con.execute("SELECT in_progress FROM partition_health").fetchone()
        finally:
            con.close()
        assert watermark == dt.datetime.fromtimestamp(manifest.watermark_ms / 1000, dt.UTC) and in_progress
        tenant.advance(dt.timedelta(minutes=10))
