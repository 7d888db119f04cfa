"""The dataset on object storage (ACTIVITY_DATA_URL): a Delta table on moto's S3 server and on Azurite.

Against both: every id and raw record exactly once, a re-run, a run killed mid-scan with `kill -9`, a run
that dies between its upload and its commit, two days committed at once, a top-up, and the daily job with
its checks and the DuckDB file, read by the DuckDB CLI.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from activity_pipeline.definitions import build_defs
from activity_pipeline.defs.resources import ActivityStorage, mdca_key
from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.ingest import ShorterScanError, ingest_day, top_up_day
from activity_pipeline.storage import inspect
from activity_pipeline.storage.lake import DayChangedError, Lake, LakeDayWriter, LakeTenantData, duckdb_url
from activity_pipeline.storage.lake_sql import AZURITE_ACCOUNT, duckdb_setup, extension_path
from activity_pipeline_tests.helpers import (
    ASSET,
    DAYS,
    JOB,
    NODE,
    REPO,
    STRESS_DAY,
    TENANT,
    TOKEN,
    LosesRecords,
    broken,
    client_for,
    evaluations,
    later,
    serve,
    tenant_resource,
)
from activity_pipeline_tests.lake_servers import (
    S3_SECRET,
    azure_env,
    azurite_server,
    moto_server,
    new_bucket,
    s3_env,
)

pytestmark = pytest.mark.object_storage


@pytest.fixture(scope="module")
def emulators() -> Iterator[dict[str, object]]:
    """Both emulators, started on first use, for the module."""
    started: dict[str, object] = {}
    stack: list = []

    def get(kind: str) -> str:
        if kind not in started:
            cm = moto_server() if kind == "s3" else azurite_server()
            started[kind] = cm.__enter__()
            stack.append(cm)
        return started[kind]  # type: ignore[return-value]

    yield get  # type: ignore[misc]
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(params=["s3", "azure-blob", "azure-data-lake"])
def lake(request, emulators, monkeypatch) -> Iterator[tuple[str, dict[str, str]]]:
    """A new, empty dataset URL on one emulator, with the cloud's variables set in this process: s3://,
    az:// (Blob) or abfss://container@account.dfs.core.windows.net/ (Data Lake)."""
    kind = "s3" if request.param == "s3" else "azure"
    endpoint = emulators(kind)
    env = s3_env(endpoint) if kind == "s3" else azure_env(endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    url = new_bucket(kind, endpoint)
    if request.param == "azure-data-lake":
        container = url.removeprefix("az://").split("/", 1)[0]
        url = f"abfss://{container}@{AZURITE_ACCOUNT}.dfs.core.windows.net/mdca"
    yield url, env


@pytest.fixture(scope="module")
def stress() -> DemoTenant:
    """The tests' three days, the last with a tie of 6000 records on one timestamp; every late record arrived."""
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=12_000, stress_days=frozenset({STRESS_DAY})))
    t.set_now(later(10))
    return t


def stored(url: str, tenant: str, day: dt.date) -> list[tuple[str, str]]:
    """(id, raw) of the day as an engine that knows only Delta's file list reads it: DuckDB over the table's
    current files."""
    files = LakeTenantData(Path("."), tenant, lake=Lake(url)).day_files(day)
    if not files:
        return []
    with duckdb.connect() as con:
        for sql in duckdb_setup(url):
            con.execute(sql)
        return con.execute("SELECT id, raw FROM read_parquet(?, hive_partitioning = false)", [files]).fetchall()


def test_a_day_lands_with_every_id_and_raw_record_exactly_once(tmp_path, lake, stress):
    url, _ = lake
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server:
        result = ingest_day(client_for(server.url), data, STRESS_DAY)
    rows = stored(url, "contoso", STRESS_DAY)
    ids = [i for i, _ in rows]
    assert len(ids) == len(set(ids)) == result.rows, "nothing doubled"
    assert set(ids) == stress.truth_ids(STRESS_DAY), "nothing lost, nothing extra"
    for activity_id, raw in rows[:: max(1, len(rows) // 200)]:
        assert raw == stress.record(activity_id), "raw is the record exactly as received"
    facts = inspect.day_facts(data, STRESS_DAY)
    assert (facts.rows, facts.duplicate_ids, facts.outside, facts.schema_mismatches) == (len(ids), 0, 0, [])
    assert facts.manifest is not None and facts.manifest["run_id"] == result.manifest["run_id"]
    assert data.stored_days() == [STRESS_DAY] and data.row_total() == len(ids)
    assert not list((tmp_path / ".staging").rglob("date=*/*.parquet")), "nothing left in local staging"


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
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
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


def test_a_rerun_replaces_the_day_whole_and_changes_nothing(tmp_path, lake, stress):
    url, _ = lake
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), data, DAYS[0])
        second = ingest_day(client_for(server.url), data, DAYS[0])
    ids = [i for i, _ in stored(url, "contoso", DAYS[0])]
    assert sorted(ids) == sorted(stress.truth_ids(DAYS[0])) and len(ids) == len(set(ids))
    names = sorted(f["name"] for f in data.current_files()[DAYS[0]])
    assert names == sorted(second.manifest["files"]), "only the second run's files are the day"
    assert not set(names) & set(first.manifest["files"])
    assert data.manifest(DAYS[0])["run_id"] == second.manifest["run_id"]
    assert Lake(url).table().version() == 2, "create, then one commit per run"


def test_two_days_and_two_tenants_commit_at_once(tmp_path, lake, stress):
    url, _ = lake
    jobs = [("contoso", DAYS[0]), ("contoso", DAYS[1]), ("fabrikam", DAYS[0])]
    errors: list[BaseException] = []
    with serve(stress) as server:

        def run(tenant: str, day: dt.date) -> None:
            try:
                ingest_day(client_for(server.url), LakeTenantData(tmp_path, tenant, lake=Lake(url)), day)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    assert not errors, errors
    for tenant, day in jobs:
        ids = [i for i, _ in stored(url, tenant, day)]
        assert sorted(ids) == sorted(stress.truth_ids(day)), f"{tenant} {day}"


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

    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server, monkeypatch.context() as m:
        m.setattr(DeltaTable, "create_write_transaction", metadata_changed_first)
        result = ingest_day(client_for(server.url), data, DAYS[0])
    assert len(attempts) == 2 and attempts[1] == attempts[0] + 1, "refused once, then built on the new version"
    history = [h["operation"] for h in reversed(Lake(url).table().history())]
    assert history[-2:] == ["UPDATE TABLE METADATA", "WRITE"], history
    assert sorted(f["name"] for f in data.current_files()[DAYS[0]]) == sorted(result.manifest["files"])
    assert sorted(i for i, _ in stored(url, "contoso", DAYS[0])) == sorted(stress.truth_ids(DAYS[0]))


def test_a_top_up_refuses_a_day_another_run_replaced_meanwhile(tmp_path, lake, monkeypatch):
    url, _ = lake
    day = STRESS_DAY
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=5_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    data = LakeTenantData(tmp_path / "pod-a", "contoso", lake=Lake(url))
    elsewhere = LakeTenantData(tmp_path / "pod-b", "contoso", lake=Lake(url))  # another pod: its own disk
    real_commit = LakeDayWriter.commit
    with serve(tenant) as server:
        ingest_day(client_for(server.url), data, day)
        tenant.advance(dt.timedelta(days=3))
        replaced = []

        def replaced_meanwhile(self, manifest):
            if self.data is data and not replaced:
                replaced.append(ingest_day(client_for(server.url), elsewhere, day))
            return real_commit(self, manifest)

        with monkeypatch.context() as m, pytest.raises(DayChangedError, match="another run replaced the day"):
            m.setattr(LakeDayWriter, "commit", replaced_meanwhile)
            top_up_day(client_for(server.url), data, day)
        names = sorted(f["name"] for f in data.current_files()[day])
        assert names == sorted(replaced[0].manifest["files"]), "the other run's version stands, nothing added"
        again = top_up_day(client_for(server.url), data, day)
    ids = [i for i, _ in stored(url, "contoso", day)]
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(day)
    assert again.added == len(ids) - replaced[0].rows


def test_a_run_that_dies_between_upload_and_commit_leaves_nothing_a_reader_sees(tmp_path, lake, stress, monkeypatch):
    url, _ = lake
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), data, DAYS[0])
        from deltalake import DeltaTable

        def die(*args, **kwargs):
            raise RuntimeError("killed before the commit")

        with monkeypatch.context() as m, pytest.raises(RuntimeError, match="killed before the commit"):
            m.setattr(DeltaTable, "create_write_transaction", die)
            ingest_day(client_for(server.url), data, DAYS[0])
    # The uploaded files and their manifest are in the bucket, but no version names them.
    assert sorted(f["name"] for f in data.current_files()[DAYS[0]]) == sorted(first.manifest["files"])
    assert data.manifest(DAYS[0])["run_id"] == first.manifest["run_id"]
    assert len(Lake(url).keys(f"_manifests/tenant=contoso/date={DAYS[0]}")) == 2
    assert sorted(i for i, _ in stored(url, "contoso", DAYS[0])) == sorted(stress.truth_ids(DAYS[0]))


_KILLED_RUN = """
import sys, datetime as dt
from pathlib import Path
from activity_pipeline.ingest import ingest_day
from activity_pipeline.storage.lake import Lake, LakeTenantData
from activity_pipeline_tests.helpers import client_for
ingest_day(client_for(sys.argv[1]), LakeTenantData(Path(sys.argv[2]), "contoso", lake=Lake(sys.argv[3])),
           dt.date.fromisoformat(sys.argv[4]))
"""


def test_kill_9_mid_scan_leaves_the_previous_version_whole(tmp_path, lake, stress):
    url, env = lake
    day = DAYS[1]
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server:
        first = ingest_day(client_for(server.url), data, day)
    version = Lake(url).table().version()
    with serve(stress, latency_ms=600) as slow:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN, slow.url, str(tmp_path), url, day.isoformat()],
            cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(p.stat().st_size for p in data.staging.rglob("*.parquet")):
            time.sleep(0.05)
        assert proc.poll() is None, "the run was still scanning"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert Lake(url).table().version() == version, "no commit"
    assert sorted(f["name"] for f in data.current_files()[day]) == sorted(first.manifest["files"])
    assert sorted(i for i, _ in stored(url, "contoso", day)) == sorted(stress.truth_ids(day))
    with serve(stress) as server:
        again = ingest_day(client_for(server.url), data, day)  # the next run cleans up and lands the day
    assert sorted(i for i, _ in stored(url, "contoso", day)) == sorted(stress.truth_ids(day))
    assert data.manifest(day)["run_id"] == again.manifest["run_id"]


def test_a_top_up_appends_only_the_late_records(tmp_path, lake):
    url, _ = lake
    day = STRESS_DAY
    tenant = DemoTenant(TenantSpec(days=(day,), activities_per_day=20_000))
    tenant.set_now(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(tenant) as server:
        full = ingest_day(client_for(server.url), data, day)
        tenant.advance(dt.timedelta(days=3))
        result = top_up_day(client_for(server.url), data, day)
    late = tenant.truth_count(day) - full.rows
    assert late > 0 and result.added == late
    ids = [i for i, _ in stored(url, "contoso", day)]
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(day)
    names = {f["name"] for f in data.current_files()[day]}
    assert set(full.manifest["files"]) < names, "the full scan's files stay; the late file is added"
    manifest = data.manifest(day)
    assert manifest["rows"] == len(ids) and len(manifest["top_ups"]) == 1


def test_the_daily_job_checks_and_queries_the_dataset_on_object_storage(tmp_path, lake, recent, recent_server):
    url, env = lake
    day = sorted(recent.spec.days)[0]
    storage = ActivityStorage(data_dir=str(tmp_path / "data"), data_url=url)
    defs = build_defs({mdca_key(TENANT): tenant_resource(recent_server.url), "storage": storage})
    result = defs.resolve_job_def(JOB).execute_in_process(partition_key=day.isoformat(), raise_on_error=False)
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
    defs = build_defs({mdca_key(TENANT): tenant_resource(mdca_url), "storage": storage})
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [defs.resolve_assets_def(ASSET)], partition_key=day.isoformat(), instance=instance, raise_on_error=False
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
    data = LakeTenantData(tmp_path, "contoso", lake=Lake(url))
    with serve(stress) as server:
        ingest_day(client_for(server.url), data, DAYS[0])
    before, version = sorted(stored(url, "contoso", DAYS[0])), Lake(url).table().version()
    with broken(LosesRecords, stress) as lossy, pytest.raises(ShorterScanError, match="kept aside") as info:
        ingest_day(client_for(lossy.url), data, DAYS[0])
    assert Lake(url).table().version() == version, "nothing committed"
    assert sorted(stored(url, "contoso", DAYS[0])) == before
    assert list(info.value.path.glob("*.parquet")), "the short scan's files are kept aside locally"
