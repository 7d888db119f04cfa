"""Resources: the tenant to read (a real one, or the built-in demo tenant), and the dataset it lands in.

Each tenant resource hands out an `MdcaClient`; which one a deployment uses is chosen where the definitions
are assembled (`resources_for`). The demo tenant's code is imported only when its resource is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline.config import DEFAULT_DATA_DIR, PipelineConfig
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RetryPolicy
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE
from activity_pipeline.storage import health, inspect, writer

DEMO_WARNING = "MDCA_API_URL is not set: reading the built-in demo tenant on 127.0.0.1; its activities are synthetic"
_DEFAULT_RETRY = RetryPolicy()


class TenantResource(dg.ConfigurableResource):
    """What every tenant resource shares: how fast to go, how many slices, how long to retry."""

    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # 0 lets the client choose from the day's size, the rate limit and the measured latency.
    slices: int = 0
    retry_max_attempts: int = _DEFAULT_RETRY.max_attempts
    retry_max_seconds: float = _DEFAULT_RETRY.max_seconds
    # First backoff after a failure, doubling per attempt (with jitter) up to a minute.
    retry_backoff_seconds: float = _DEFAULT_RETRY.backoff_first

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_max_attempts,
            max_seconds=self.retry_max_seconds,
            backoff_first=self.retry_backoff_seconds,
            # 429 without Retry-After: ten times the first backoff (10 s by default), doubling.
            throttle_default=max(self.retry_backoff_seconds, 0.1) * 10,
        )

    def client(self, logger: Any = None) -> contextlib.AbstractContextManager[MdcaClient]:
        """A client for the tenant, closed when the block ends."""
        raise NotImplementedError


class MdcaResource(TenantResource):
    """A Defender for Cloud Apps tenant. Its fields are `MdcaSettings`' and mean the same.

    Secrets come in through `dg.EnvVar`, so the UI shows the variable's name and never its value.
    """

    api_url: str
    api_token: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    authority_host: str = DEFAULT_AUTHORITY_HOST

    def settings(self) -> MdcaSettings:
        """Checked settings. Raises ConfigError naming what to fix."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(MdcaSettings)}
        return MdcaSettings(**fields)

    @contextlib.contextmanager
    def client(self, logger: Any = None) -> Iterator[MdcaClient]:
        with MdcaClient(self.settings(), retry=self.retry_policy()) as client:
            yield client


class DemoTenantResource(TenantResource):
    """The built-in demo tenant: synthetic activities served over HTTP on 127.0.0.1 while the block runs.

    It holds every day of the last 180, each built when first asked for, and throttles at
    `requests_per_minute` as the real service does.
    """

    activities_per_day: int = 20_000
    seed: int = 7

    @contextlib.contextmanager
    def client(self, logger: Any = None) -> Iterator[MdcaClient]:
        from activity_pipeline.demo_tenant import DemoTenantOnDemand, DemoTenantServer, ServerSettings

        tenant = DemoTenantOnDemand(activities_per_day=self.activities_per_day, seed=self.seed)
        token = secrets.token_urlsafe(24)
        served = ServerSettings(tokens=(token,), requests_per_minute=self.requests_per_minute)
        with DemoTenantServer(tenant, served) as server:
            (logger or logging.getLogger(__name__)).warning(f"{DEMO_WARNING} ({server.url})")
            settings = MdcaSettings(api_url=server.url, api_token=token, requests_per_minute=self.requests_per_minute)
            with MdcaClient(settings, retry=self.retry_policy()) as client:
                yield client


class ActivityStorage(dg.ConfigurableResource):
    """The dataset: Parquet days, their manifests and the DuckDB file under `data_dir` (`ACTIVITY_DATA_DIR`)."""

    data_dir: str = DEFAULT_DATA_DIR

    @property
    def path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def manifest(self, day: dt.date) -> dict[str, Any] | None:
        """The stored day's manifest, or None when the day has not been materialized."""
        return writer.read_manifest(self.path, day)

    def facts(self, day: dt.date) -> inspect.DayFacts:
        return inspect.day_facts(self.path, day)

    def trailing_manifests(self, day: dt.date, days: int) -> dict[dt.date, dict[str, Any]]:
        return inspect.trailing_manifests(self.path, day, days)

    def row_total(self) -> int:
        return inspect.stored_row_total(self.path)

    def stored_days(self) -> list[dt.date]:
        return inspect.stored_days(self.path)

    def incomplete_days(self) -> set[dt.date]:
        """Days whose last count check failed."""
        return health.failed_count_checks(self.path)

    def record_count_check(self, day: dt.date, **finding: Any) -> None:
        """Keep the count check's finding (see `storage.health.record_count_check`) for `partition_health`."""
        health.record_count_check(self.path, day, at=dt.datetime.now(dt.UTC), **finding)


def resources_for(config: PipelineConfig) -> dict[str, dg.ConfigurableResource]:
    """The resources a deployment with this configuration runs with: its tenant (or the demo) and its dataset."""
    tenant: TenantResource
    if config.uses_demo_tenant:
        tenant = DemoTenantResource(requests_per_minute=config.requests_per_minute)
    else:
        variables = {field: dg.EnvVar(name) for field, name in config.tenant_variables.items()}
        tenant = MdcaResource(**variables, requests_per_minute=config.requests_per_minute)
    data_dir = dg.EnvVar(config.data_dir_variable) if config.data_dir_variable else DEFAULT_DATA_DIR
    return {"mdca": tenant, "storage": ActivityStorage(data_dir=data_dir)}
