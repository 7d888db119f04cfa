"""A dataset written with older typed columns is upgraded in place from its own `raw`, on disk and on object
storage: every id and raw unchanged, the typed columns today's, and the views answer across a half-upgraded
dataset. The dataset is a fixture written by the writer of schema version 1 (fixtures/schema-1-dataset)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from activity_pipeline.storage.compaction import is_current
from activity_pipeline.storage.duckdb_views import build_database
from activity_pipeline.storage.schema import SCHEMA, SCHEMA_VERSION, derive_table
from activity_pipeline.upgrade import upgrade_days
from activity_pipeline_testing.backends import Backend
from activity_pipeline_testing.helpers import stored

FIXTURE = Path(__file__).with_name("fixtures") / "schema-1-dataset"
DAYS = (dt.date(2026, 11, 21), dt.date(2026, 11, 22))


def _old_dataset(backend: Backend) -> None:
    """The fixture's dataset, written by the schema-1 writer, where `backend` keeps its dataset."""
    if backend.url is None:
        shutil.copytree(FIXTURE / "local", backend.root, dirs_exist_ok=True)
        return
    import obstore

    from activity_pipeline.storage.delta import Lake

    store = Lake(backend.url).store
    for path in sorted((FIXTURE / "lake").rglob("*")):
        if path.is_file():
            obstore.put(store, path.relative_to(FIXTURE / "lake").as_posix(), path.read_bytes())


def _typed(backend: Backend, day: dt.date) -> list[dict]:
    """The day's rows as the views read them, typed columns and all, by id."""
    sources = backend.dataset.view_sources()
    with duckdb.connect() as con:
        for sql in sources.setup:
            con.execute(sql)
        table = con.execute(
            f"SELECT * EXCLUDE (tenant, date) FROM ({sources.activities}) WHERE tenant = 'contoso' AND date = ? "
            "ORDER BY id",
            [day],
        ).to_arrow_table()
    return table.to_pylist()


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.object_storage),
                                     pytest.param("azure-blob", marks=pytest.mark.object_storage)],
                         indirect=True)  # fmt: skip
def test_an_older_dataset_is_upgraded_in_place_with_every_id_and_raw_unchanged(backend):
    _old_dataset(backend)
    store = backend.store()
    assert [store.manifest(d).schema_version for d in DAYS] == [1, 1]
    before = {d: sorted(stored(backend.dataset, "contoso", d)) for d in DAYS}
    assert all(before.values())
    assert [store.facts(d).schema_mismatches for d in DAYS] == [[], []], "an older version's files are no mismatch"

    upgraded, failed = upgrade_days(store, None, report=print)

    assert (upgraded, failed) == (list(DAYS), [])
    for day in DAYS:
        manifest = store.manifest(day)
        assert manifest.schema_version == SCHEMA_VERSION and is_current(manifest.files)
        assert sorted(stored(backend.dataset, "contoso", day)) == before[day], "every id and raw as they were"
        rows = _typed(backend, day)
        expected = derive_table(pq.read_table(_one_file(backend, day))).sort_by("id").to_pylist()
        assert rows == expected, "typed columns are today's, derived from raw"
        assert store.verify_day(day).intact
        facts = store.facts(day)
        assert facts.schema_mismatches == [] and facts.duplicate_ids == 0 and facts.rows == len(before[day])
    if backend.url is not None:  # the Delta table's schema has the new columns, for the lakehouse engines
        assert set(SCHEMA.names) <= {f.name for f in store.lake.table().schema().fields}
    again, _ = upgrade_days(store, None, report=print)
    assert again == [], "a current day is left as it is"


def _one_file(backend: Backend, day: dt.date) -> Path:
    """The day's single (compacted) file, as a local path."""
    store = backend.store()
    names = store.manifest(day).files
    assert len(names) == 1
    if backend.url is None:
        return store.day_location(day) / names[0]
    target = backend.root / names[0]
    store.lake.download(f"activities/tenant=contoso/date={day}/{names[0]}", target)
    return target


def test_the_views_answer_across_a_half_upgraded_dataset(tmp_path):
    shutil.copytree(FIXTURE / "local", tmp_path, dirs_exist_ok=True)
    backend = Backend(tmp_path, None, {})
    upgraded, _ = upgrade_days(backend.store(), [DAYS[0]], report=print)
    assert upgraded == [DAYS[0]] and backend.store().manifest(DAYS[1]).schema_version == 1
    database = build_database(backend.dataset)
    with duckdb.connect(str(database.path), read_only=True) as con:
        per_day = dict(con.execute(
            "SELECT date, count(*) FILTER (WHERE account_object_id IS NOT NULL OR objects IS NOT NULL) "
            "FROM activities GROUP BY date").fetchall())  # fmt: skip
        total = con.execute("SELECT count(*) FROM activities").fetchone()[0]
        events = con.execute("SELECT count(*), count(ReportId) FROM cloud_app_events").fetchone()
        failed = con.execute("SELECT count(*), count(user_name) FROM failed_sign_ins").fetchone()
    stored_rows = sum(backend.store().manifest(d).rows for d in DAYS)
    assert total == stored_rows and events == (stored_rows, stored_rows)
    assert per_day[DAYS[0]] > 0, "the upgraded day has the new columns"
    assert per_day[DAYS[1]] == 0, "the day not yet upgraded reads them as NULL"
    assert failed[0] > 0 and failed[0] == failed[1]
    assert {f.name for f in pq.read_schema(_one_file(backend, DAYS[0]))} == set(SCHEMA.names)


def test_make_upgrade_says_a_line_a_day_and_its_exit_status_tells(tmp_path):
    import subprocess

    from activity_pipeline_testing.helpers import REPO, cli_env

    shutil.copytree(FIXTURE / "local", tmp_path / "data")
    # No tenant is reached: an upgrade reads only what is stored.
    env = {**cli_env("http://127.0.0.1:9", tmp_path / "data", tmp_path / "home"), "MDCA_TENANT_NAME": "contoso"}

    def upgrade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "-s", "upgrade", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    one = upgrade(f"DAY={DAYS[0]}")
    assert one.returncode == 0, one.stdout + one.stderr
    assert f"contoso {DAYS[0]}: upgraded from version 1 to {SCHEMA_VERSION}" in one.stdout
    assert str(DAYS[1]) not in one.stdout
    every = upgrade()
    assert every.returncode == 0 and f"contoso {DAYS[0]}: current (version {SCHEMA_VERSION})" in every.stdout
    assert (
        f"contoso {DAYS[1]}: upgraded from version 1" in every.stdout and "every day named is current" in every.stdout
    )
    bad = upgrade("DAY=2026-11-3")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
    unknown = upgrade("TENANT=nobody")
    assert unknown.returncode == 2 and "nobody" in unknown.stderr
