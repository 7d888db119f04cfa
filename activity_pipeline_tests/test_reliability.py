"""Reliability: whatever goes wrong, a day lands exactly once or the previous version stays.

Each test states its figures: records expected (the tenant's truth), stored, duplicated, lost.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from activity_pipeline.components.resources import MdcaResource
from activity_pipeline.demo_tenant import FAULT_KINDS, DemoTenant, DemoTenantServer, TenantSpec
from activity_pipeline_testing import helpers
from activity_pipeline_testing.helpers import (
    NODE,
    clean_env,
    cli_env,
    last_days,
    later,
    launch,
    serve,
    tenant_data,
    tenant_resource,
)

DAYS = last_days(4)[:3]


@pytest.fixture(scope="module")
def tenant() -> DemoTenant:
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=10_000, stress_days=frozenset({DAYS[2]})))
    t.set_now(later(5))
    return t


def serving(tenant: DemoTenant, **settings: Any) -> DemoTenantServer:
    return serve(tenant, **settings)


def materialize(
    day: dt.date, url: str, data_dir: Path, *, full: bool = False, **resource: Any
) -> dg.ExecuteInProcessResult:
    """The asset for `day`; `full` scans a stored day in full instead of topping it up."""
    mdca = tenant_resource(url, retry_backoff_seconds=0.02, retry_max_attempts=12, **resource)
    tags = {"activity_pipeline/full_rescan": "true"} if full else None
    return helpers.materialize(day, data_dir, mdca, raise_on_error=False, tags=tags)


def figures(tenant: DemoTenant, day: dt.date, data_dir: Path) -> dict[str, int]:
    """Records expected, stored, duplicated and lost for one day."""
    ids = pq.read_table(tenant_data(data_dir).paths.day_dir(day), columns=["id"]).column("id").to_pylist()
    truth = tenant.truth_ids(day)
    return {
        "expected": len(truth),
        "stored": len(ids),
        "duplicated": len(ids) - len(set(ids)),
        "lost": len(truth - set(ids)),
        "extra": len(set(ids) - truth),
    }


def exact(tenant: DemoTenant, day: dt.date, data_dir: Path) -> dict[str, int]:
    got = figures(tenant, day, data_dir)
    assert got == {"expected": got["expected"], "stored": got["expected"], "duplicated": 0, "lost": 0, "extra": 0}
    return got


def test_fault_rate_0_3_of_every_kind_loses_and_duplicates_nothing(tenant, tmp_path):
    # Seed 52 draws every fault kind within the first 15 requests; the test checks that each one happened.
    with serving(tenant, fault_rate=0.3, fault_seed=52) as server:
        results = [materialize(day, server.url, tmp_path, slices=2) for day in DAYS]
        faults = dict(server.stats.faults)
    assert all(r.success for r in results)
    assert set(faults) == set(FAULT_KINDS), faults
    for day, result in zip(DAYS, results, strict=True):
        exact(tenant, day, tmp_path)  # expected == stored, duplicated 0, lost 0
        assert result.asset_materializations_for_node(NODE)[0].metadata["retries"].value >= 0
    assert sum(r.asset_materializations_for_node(NODE)[0].metadata["retries"].value for r in results) >= sum(
        faults.values()
    )


@pytest.mark.parametrize("retry_after", [True, False])
def test_throttling_with_and_without_retry_after_loses_nothing(tenant, tmp_path, retry_after):
    with serving(tenant, requests_per_minute=3, window_seconds=1.0, retry_after=retry_after) as server:
        result = materialize(DAYS[2], server.url, tmp_path)  # the stress day: a 6,000-record tie
        throttled = server.stats.throttled
    assert result.success and throttled > 0
    exact(tenant, DAYS[2], tmp_path)
    assert result.asset_materializations_for_node(NODE)[0].metadata["throttled_responses"].value > 0


def _cli(day: dt.date, url: str, data_dir: Path, home: Path) -> subprocess.Popen[str]:
    env = cli_env(url, data_dir, home)
    return subprocess.Popen(launch(day), env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_runs_of_the_same_day_at_once_are_atomic_or_refused(tenant, tmp_path):
    day = DAYS[1]
    data = tmp_path / "data"
    with serving(tenant, latency_ms=700) as server:
        runs = [_cli(day, server.url, data, tmp_path / f"home{k}") for k in range(2)]
        outputs = [r.communicate(timeout=300)[0] for r in runs]
    codes = [r.returncode for r in runs]
    assert 0 in codes, outputs[codes.index(max(codes))][-3000:]
    for code, out in zip(codes, outputs, strict=True):
        assert code == 0 or "Another run is writing" in out, out[-3000:]
    exact(tenant, day, data)  # whichever landed, the day is whole and once
    assert not [p for p in tenant_data(data).staging.iterdir() if p.is_dir()]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 12 MiB tmpfs: room for one version of a day, not for two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to make a size-limited filesystem")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_partway_leaves_the_previous_day_intact(small_disk):
    day = DAYS[0]
    big = DemoTenant(TenantSpec(days=(day,), activities_per_day=40_000))
    big.set_now(later(5))
    small = DemoTenant(TenantSpec(days=(day,), activities_per_day=15_000))
    small.set_now(big.now_ms())
    with serving(small) as server:
        assert materialize(day, server.url, small_disk).success  # about 4 MiB
    before = {p.name: p.read_bytes() for p in tenant_data(small_disk).paths.day_dir(day).iterdir()}
    with serving(big) as server:
        result = materialize(day, server.url, small_disk, full=True)  # about 11 MiB more: the disk fills up
    assert not result.success
    description = result.failure_data_for_node(NODE).user_failure_data.description
    assert "No space left on device" in description and "intact" in description
    after = {p.name: p.read_bytes() for p in tenant_data(small_disk).paths.day_dir(day).iterdir()}
    assert after == before
    got = figures(small, day, small_disk)
    assert got["stored"] == got["expected"] and got["lost"] == 0 and got["duplicated"] == 0


def test_a_bad_partition_key_is_named_in_the_error(tmp_path):
    (tmp_path / "home").mkdir()
    env = clean_env(DAGSTER_HOME=str(tmp_path / "home"), ACTIVITY_START_DATE="2026-01-01")
    out = subprocess.run(launch("2026-13-45"), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "partition key `2026-13-45|default`" in out.stderr


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({"api_url": "not a url", "api_token": "t"}, "must be an http(s) URL"),
        ({"api_url": "https://contoso.eu2.portal.cloudappsecurity.com"}, "no credentials are: set MDCA_API_TOKEN"),
        ({"api_url": "http://10.0.0.5", "api_token": "t"}, "plain http:// to 10.0.0.5"),
        (
            {"api_url": "https://contoso.eu2.portal.cloudappsecurity.com", "api_token": "t", "client_id": "c"},
            "Both kinds of credentials",
        ),
        (
            {"requests_per_minute": -5, "api_url": "https://contoso.eu2.portal.cloudappsecurity.com", "api_token": "t"},
            "MDCA_REQUESTS_PER_MINUTE",
        ),
    ],
)
def test_bad_configuration_fails_before_any_request_with_its_own_message(tmp_path, resource, message):
    result = helpers.materialize(DAYS[0], tmp_path, MdcaResource(**resource), raise_on_error=False)
    assert not result.success
    assert message in result.failure_data_for_node(NODE).user_failure_data.description
    assert not (tmp_path / "activities").exists()


def test_concurrent_days_in_threads_do_not_interfere(tenant, tmp_path):
    """Three days scanned at once in one process (what a multi-run backfill does across processes)."""
    with serving(tenant) as server:
        results: dict[dt.date, bool] = {}

        def run(day: dt.date) -> None:
            results[day] = materialize(day, server.url, tmp_path).success

        threads = [threading.Thread(target=run, args=(d,)) for d in DAYS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert all(results.get(d) for d in DAYS)
    for day in DAYS:
        exact(tenant, day, tmp_path)
