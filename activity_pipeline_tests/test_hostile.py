"""Hostile servers and filesystems, through real Dagster runs: every dead end fails at once (no step retry) naming
the cause and the fix; no credential reaches any text the project writes; an interruption stops the run; a
short re-scan or a damaged file never replaces or passes for a good day."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from activity_pipeline import config
from activity_pipeline.components.resources import ActivityStorage
from activity_pipeline.errors import ConfigError
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import DATABASE, build_database
from activity_pipeline_testing import helpers
from activity_pipeline_testing.helpers import (
    NODE,
    RECENT,
    REPO,
    TOKEN,
    LosesRecords,
    broken,
    clean_env,
    cli_env,
    launch,
    serve,
    tenant_data,
    tenant_resource,
)
from activity_pipeline_tests.hostile import HostileServer

DAY = RECENT[0]
FULL = {"activity_pipeline/full_rescan": "true"}


def _run(url: str, data: Path, **kw: object) -> dg.ExecuteInProcessResult:
    kw.setdefault("raise_on_error", False)
    resource = tenant_resource(url, retry_max_seconds=2, retry_backoff_seconds=0.05, retry_max_attempts=50)
    return helpers.materialize(DAY, data, resource, **kw)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return result.failure_data_for_node(NODE).user_failure_data.description


def _retried(result: dg.ExecuteInProcessResult) -> bool:
    return any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("html200", "not the Activities API's JSON"),
        ("data_not_list", "JSON that is not the Activities API's"),
        ("nan", "not valid JSON"),
        ("huge_length", "more than any answer of the Activities API"),
        ("no_cursor", "hasNext but sent no nextQueryFilters"),
        ("echo:429", "Gave up on POST"),
        ("echo:500", "Gave up on POST"),
        ("echo:418", "Unexpected HTTP 418"),
    ],
)
def test_a_dead_end_fails_the_run_at_once_without_a_step_retry(tmp_path, mode, words):
    started = time.monotonic()
    with HostileServer(mode) as server:
        result = _run(server.url, tmp_path)
    seconds = time.monotonic() - started
    assert words in _failure(result)
    assert not _retried(result), "no step retry: another attempt meets the same answer"
    assert seconds < 60
    assert not tenant_data(tmp_path).paths.days.exists(), "nothing stored"


def test_no_credential_reaches_logs_metadata_or_the_instances_databases(tmp_path, capfd):
    """Servers that echo the request's headers, for every status the client handles, in runs kept in a real
    (SQLite) instance; then every file of the instance and the dataset is searched, with what the runs printed."""
    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(instance_dir)) as instance, HostileServer("echo:200") as server:
        for status in (200, 400, 401, 403, 404, 418, 429, 500, 502, 503, 504):
            server.mode = f"echo:{status}"
            result = _run(server.url, tmp_path / "data", instance=instance)
            assert not result.success
            assert "[redacted]" in _failure(result) or status == 200
            for event in instance.all_logs(result.run_id):
                assert TOKEN not in json.dumps(dg.serialize_value(event))
    printed = capfd.readouterr()
    assert TOKEN not in printed.out + printed.err
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaks


def test_a_headless_run_against_an_echoing_server_leaks_nothing_to_stdout_compute_logs_or_databases(tmp_path):
    with HostileServer("echo:401") as server:
        env = cli_env(server.url, tmp_path / "data", tmp_path / "home")
        proc = subprocess.run(launch(DAY), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "rejected the credentials" in proc.stdout + proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), "the instance's databases were written"
    assert not [p for p in files if TOKEN.encode() in p.read_bytes()]


def test_a_data_folder_that_is_a_file_is_a_configuration_error_at_load(tmp_path):
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"ACTIVITY_DATA_DIR \(.*data\) is a file, not a folder"):
        config.load({"ACTIVITY_DATA_DIR": str(a_file)})
    with pytest.raises(ConfigError, match="lies under"):
        config.load({"ACTIVITY_DATA_DIR": str(a_file / "below")})


def test_a_data_folder_that_is_a_file_fails_the_run_at_once(tmp_path, recent_server):
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    result = _run(recent_server.url, a_file)
    assert "is a file, not a folder" in _failure(result) and not _retried(result)
    assert a_file.read_text() == "not a folder"


def test_a_configuration_error_is_printed_first_and_alone(tmp_path):
    (tmp_path / "home").mkdir()
    # The instance `make` sets up (telemetry off: otherwise Dagster's first-run banner comes before anything).
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    env = clean_env(
        DAGSTER_HOME=str(tmp_path / "home"), MDCA_API_URL="https://contoso.portal.cloudappsecurity.com/?x=1"
    )
    env["MDCA_API_TOKEN"] = TOKEN
    out = subprocess.run(launch(DAY), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("activity_pipeline: configuration error: MDCA_API_URL must be the portal's base URL")
    assert "drop '?x=1'" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert TOKEN not in out.stderr + out.stdout


def test_a_short_full_rescan_is_kept_aside_and_the_stored_day_stays(tmp_path, recent, recent_server):
    assert _run(recent_server.url, tmp_path).success
    day_dir = tenant_data(tmp_path).paths.day_dir(DAY)
    before = {p.name: p.read_bytes() for p in day_dir.iterdir()}
    with broken(LosesRecords, recent) as lossy:
        result = _run(lossy.url, tmp_path, tags=FULL)
        description = _failure(result)
        assert "fewer than the" in description and "kept aside" in description and "allow_shorter" in description
        assert not _retried(result)
        assert {p.name: p.read_bytes() for p in day_dir.iterdir()} == before, "the stored day is unchanged"
        aside = list((tenant_data(tmp_path).staging / "kept-aside").glob("date=*/*.parquet"))
        assert aside and sum(pq.ParquetFile(p).metadata.num_rows for p in aside) < len(recent.truth_ids(DAY))
        # The deliberate override: the source really holds fewer.
        assert _run(lossy.url, tmp_path, tags={**FULL, "activity_pipeline/allow_shorter": "true"}).success
    rows = pq.read_table(day_dir, columns=["id"]).num_rows
    assert rows < len(recent.truth_ids(DAY))


def _corrupt(path: Path, column: str) -> None:
    """Flip bytes inside the first data page of `column` in the file's first row group."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    leaves = [meta.column(i).path_in_schema for i in range(meta.num_columns)]  # nested columns have several
    chunk = meta.column(leaves.index(column))
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset + 64
    for k in range(start, start + 256):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("column", ["raw", "id"])
def test_a_damaged_file_fails_the_checks_naming_the_file_and_the_fix(tmp_path, recent_server, column):
    mdca = tenant_resource(recent_server.url)
    assert helpers.run_day(DAY, mdca, tmp_path).success
    files = sorted(tenant_data(tmp_path).paths.day_dir(DAY).glob("*.parquet"))
    _corrupt(files[0], column)
    evaluations = {n: helpers.check_only(n, DAY, mdca, tmp_path) for n in ("ids_unique", "count_matches_source")}
    for evaluation in evaluations.values():
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert files[0].name in evaluation.description and "full_rescan=true" in evaluation.description


def test_a_top_up_of_a_day_with_a_damaged_footer_fails_at_once_suggesting_a_full_rescan(tmp_path, recent_server):
    assert _run(recent_server.url, tmp_path).success
    path = sorted(tenant_data(tmp_path).paths.day_dir(DAY).glob("*.parquet"))[0]
    path.write_bytes(path.read_bytes()[:-100] + b"\0" * 100)
    result = _run(recent_server.url, tmp_path)
    assert "full_rescan=true" in _failure(result) and not _retried(result)
    assert _run(recent_server.url, tmp_path, tags=FULL).success, "a full re-scan mends it"


def test_quarantined_records_are_reported_as_such_by_the_count_check(tmp_path, recent):
    with broken(helpers.Untidy, recent) as untidy:
        result = helpers.run_day(DAY, tenant_resource(untidy.url), tmp_path)
    evaluations = helpers.evaluations(result)
    count = evaluations["count_matches_source"]
    assert count.passed, count.description
    assert "in quarantine" in count.description and "real gap" not in count.description
    assert count.metadata["quarantined"].value > 0
    assert not evaluations["no_quarantined_records"].passed


def _interrupt(
    tmp_path: Path, recent: object, command: list[str], how: signal.Signals, *, pid_only: bool = False
) -> tuple[float, str]:
    """Start `command` on a slow server, let it reach the scan, signal it (`pid_only`: its PID alone, as a
    supervisor stops the process it started); (seconds to exit, its output)."""
    data = tmp_path / "data"
    slow = serve(recent, latency_ms=800)
    proc = None
    try:
        proc = subprocess.Popen(
            command, env=cli_env(slow.url, data, tmp_path / "home"), cwd=REPO if pid_only else tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tenant_data(data).staging.glob("date=*/*.parquet")):
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        signalled = time.monotonic()
        # SIGTERM to the process, as Kubernetes sends it; SIGINT to the group, as a terminal's Ctrl-C does.
        os.kill(proc.pid, how) if how == signal.SIGTERM or pid_only else os.killpg(proc.pid, how)
        output, _ = proc.communicate(timeout=120)
        return time.monotonic() - signalled, output
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        slow.stop()


@pytest.mark.parametrize(
    ("how", "launcher"),
    [(signal.SIGTERM, "dg launch"), (signal.SIGINT, "dg launch"), (signal.SIGTERM, "dagster job execute"),
     (signal.SIGTERM, "make run"), (signal.SIGINT, "make run"),
     (signal.SIGTERM, "make run's PID"), (signal.SIGINT, "make run's PID"), (signal.SIGINT, "make backfill's PID")],
)  # fmt: skip
def test_an_interruption_stops_the_run_without_a_retry_and_cleans_staging(tmp_path, recent, how, launcher):
    if launcher == "dg launch":
        command = launch(DAY, job=True)
    elif launcher == "make run":  # its command for one tenant and day
        command = [sys.executable, "-m", "activity_pipeline.launch", helpers.JOB, helpers.partition(DAY)]
    elif launcher.startswith("make"):  # make itself, signalled at its own PID only
        what = ["run", f"DAY={DAY}"] if "run" in launcher else ["backfill", f"FROM={DAY}", f"TO={RECENT[1]}"]
        command = ["make", "-s", *what]
    else:
        dagster = str(Path(sys.executable).with_name("dagster"))
        tags = {"dagster/partition": helpers.partition(DAY), "dagster/partition/day": str(DAY),
                "dagster/partition/tenant": helpers.TENANT}  # fmt: skip
        command = [dagster, "job", "execute", "-m", "activity_pipeline.definitions", "-j", helpers.JOB,
                   "--tags", json.dumps(tags)]  # fmt: skip
    seconds, output = _interrupt(tmp_path, recent, command, how, pid_only=launcher.endswith("PID"))
    print(f"{launcher} {how.name}: run ended {seconds:.1f}s after the signal")
    assert seconds < 30
    pattern = re.escape(f"activity_pipeline.launch {helpers.JOB} {helpers.partition(DAY)}")
    left = subprocess.run(["pgrep", "-f", pattern],
                          capture_output=True, text=True).stdout.split()  # fmt: skip
    assert not left, f"the run's process went on after the signal: {left}"
    if launcher.startswith("make backfill"):
        assert f"default {RECENT[1]}" not in output, "the backfill stopped with the interrupted run"
    # Dagster's console names events; make's (components/console.py) says them in words.
    for said in ("RUN_SUCCESS", "STEP_UP_FOR_RETRY", "Finished execution of run", "requested a retry"):
        assert said not in output
    assert not tenant_data(tmp_path / "data").paths.days.exists(), "nothing swapped in"
    assert not [p for p in tenant_data(tmp_path / "data").staging.glob("date=*") if p.is_dir()], "staging cleaned"
    assert TOKEN not in output


def test_a_read_only_duckdb_session_does_not_block_the_views(tmp_path, recent_server):
    assert _run(recent_server.url, tmp_path).success
    build_database(open_dataset(tmp_path))
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
         "print('open', flush=True); time.sleep(60)", str(tmp_path / DATABASE)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
        db = build_database(open_dataset(tmp_path))
    finally:
        reader.kill()
        reader.wait()
    assert db.rows == len(pq.read_table(tenant_data(tmp_path).paths.day_dir(DAY), columns=["id"]))


def test_a_full_disk_while_writing_the_views_says_so_and_keeps_the_old_file(tmp_path, recent_server):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited filesystem")
    assert _run(recent_server.url, tmp_path).success
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        # The dataset's days where they are; the DuckDB file on a disk with no room left for a new one.
        (disk / "activities").symlink_to(tmp_path / "activities")
        build_database(open_dataset(disk))
        old = (disk / DATABASE).read_bytes()
        with open(disk / "filler", "ab", buffering=0) as fill:
            try:
                while True:
                    fill.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(Exception) as info:
            build_database(ActivityStorage(data_dir=str(disk)).dataset)
        assert "Could not write" in str(info.value) and "Free space" in str(info.value)
        assert (disk / DATABASE).read_bytes() == old
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_the_failure_modes_table_lists_every_case():
    text = (REPO / "docs" / "failure-modes.md").read_text()
    cases = ["echoes", "trickle", "never answers", "HTML", "NaN", "Content-Length", "hasNext", "bucket", "credentials",
             "429", "5xx", "SIGTERM", "damaged", "quarantine", "read-only", "full disk"]  # fmt: skip
    assert [case for case in cases if case not in text] == []


def test_a_day_outside_the_partitions_is_refused_with_the_valid_range(tmp_path, recent_server):
    with pytest.raises(dg.DagsterUnknownPartitionError) as info:
        helpers.materialize(dt.date(2025, 6, 1), tmp_path, tenant_resource(recent_server.url))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert "2025-06-01|default is not a partition: a partition is DAY|TENANT" in str(info.value)
    assert "the days from 2026-01-01 to" in str(info.value)
    assert f"to {today} (today, the day in progress)" in str(info.value)
