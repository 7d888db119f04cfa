"""Fixtures only: one demo tenant for the session on fixed days, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os

# Partitions start at ACTIVITY_START_DATE, read when the definitions load: early enough that the retention
# test's day (200 days ago) is a partition, so that the asset, not Dagster, refuses it.
os.environ.setdefault("ACTIVITY_START_DATE", "2026-01-01")
# The tests' definitions hold the one tenant of the MDCA_* variables, named "default", whatever the shell
# (or the Makefile, for `make demo`) had configured.
os.environ.pop("ACTIVITY_TENANTS_FILE", None)
os.environ.pop("MDCA_TENANT_NAME", None)
os.environ.pop("MDCA_API_URL", None)

from collections.abc import Callable, Iterator

import pytest

from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, TenantSpec
from activity_pipeline_testing.backends import BACKENDS, Backend
from activity_pipeline_testing.helpers import ALL_ARRIVED, DAYS, RECENT, STRESS_DAY, later, serve
from activity_pipeline_testing.object_storage import EmulatorMissing, azurite_server, moto_server, new_dataset_url


@pytest.fixture(scope="session")
def tenant() -> DemoTenant:
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=12_000, stress_days=frozenset({STRESS_DAY})))
    t.set_now(ALL_ARRIVED)
    return t


@pytest.fixture(scope="session")
def server(tenant: DemoTenant) -> Iterator[DemoTenantServer]:
    s = serve(tenant)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def recent() -> DemoTenant:
    """Two recent days, every late record arrived."""
    t = DemoTenant(TenantSpec(days=RECENT, activities_per_day=12_000))
    t.set_now(later(10))
    return t


@pytest.fixture(scope="session")
def recent_server(recent: DemoTenant) -> Iterator[DemoTenantServer]:
    s = serve(recent)
    yield s
    s.stop()


@pytest.fixture
def served() -> Iterator[Callable[[DemoTenant], str]]:
    """Serve tenants for one test: `url = served(tenant)`; every server stops after the test."""
    servers: list[DemoTenantServer] = []

    def start(tenant: DemoTenant) -> str:
        servers.append(serve(tenant))
        return servers[-1].url

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def emulators() -> Iterator[Callable[[str], str]]:
    """moto's S3 server and Azurite, each started when first asked for (`emulators("s3")`, `("azure")`) and
    stopped with the session; a missing one skips the test, saying how to install it."""
    started: dict[str, str] = {}
    stack: list = []

    def get(kind: str) -> str:
        if kind not in started:
            cm = moto_server() if kind == "s3" else azurite_server()
            try:
                started[kind] = cm.__enter__()
            except EmulatorMissing as exc:
                pytest.skip(str(exc))
            stack.append(cm)
        return started[kind]

    yield get
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def lake_url(kind: str, emulators: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, str]]:
    """A new, empty dataset URL of `kind` (`object_storage.KINDS`), with the cloud's variables set here."""
    url, env = new_dataset_url(kind, emulators("s3" if kind == "s3" else "azure"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return url, env


@pytest.fixture(params=["s3", "azure-blob", "azure-data-lake"])
def lake(request, emulators, monkeypatch) -> tuple[str, dict[str, str]]:
    """A new, empty dataset URL on each emulator in turn, with the cloud's variables set (`lake_url`)."""
    return lake_url(request.param, emulators, monkeypatch)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "local":
        return Backend(tmp_path, None, {})
    endpoint = request.getfixturevalue("emulators")("s3" if request.param == "s3" else "azure")
    url, env = new_dataset_url(request.param, endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Backend(tmp_path, url, env)


@pytest.fixture(scope="module")
def stress() -> DemoTenant:
    """The tests' three days, the last with a tie of 6000 records on one timestamp; every late record arrived."""
    t = DemoTenant(TenantSpec(days=DAYS, activities_per_day=12_000, stress_days=frozenset({STRESS_DAY})))
    t.set_now(later(10))
    return t
