"""Resources: the tenant to scan (or the demo tenant), and where the data lives."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from activity_pipeline.mdca import MdcaSettings, RetryPolicy, Secret
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST
from activity_pipeline.source import Tenant, open_tenant


class MdcaResource(dg.ConfigurableResource):
    """The Defender for Cloud Apps tenant to scan; without `api_url`, the built-in demo tenant.

    Secrets come in through `dg.EnvVar`, so the UI shows the variable's name and never its value.
    """

    api_url: str | None = None
    api_token: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    authority_host: str = DEFAULT_AUTHORITY_HOST
    requests_per_minute: int = 30
    # 0 lets the client choose from the day's size, the rate limit and the measured latency.
    slices: int = 0
    retry_max_attempts: int = 8
    retry_max_seconds: float = 900.0
    # First backoff after a failure, doubling per attempt (with jitter) up to a minute.
    retry_backoff_seconds: float = 1.0
    demo_activities_per_day: int = 20_000
    demo_seed: int = 7

    def settings(self) -> MdcaSettings | None:
        """Checked settings, or None for the demo tenant. Raises ConfigError naming what to fix."""
        if not self.api_url:
            return None
        return MdcaSettings(
            api_url=self.api_url,
            token=Secret(self.api_token) if self.api_token else None,
            tenant_id=self.tenant_id or None,
            client_id=self.client_id or None,
            client_secret=Secret(self.client_secret) if self.client_secret else None,
            authority_host=self.authority_host or DEFAULT_AUTHORITY_HOST,
            requests_per_minute=self.requests_per_minute,
        )

    @contextlib.contextmanager
    def open(self, days: tuple[dt.date, ...], logger: Any) -> Iterator[Tenant]:
        retry = RetryPolicy(
            max_attempts=self.retry_max_attempts,
            max_seconds=self.retry_max_seconds,
            backoff_first=self.retry_backoff_seconds,
            throttle_default=max(self.retry_backoff_seconds, 0.1) * 10,
        )
        with open_tenant(
            self.settings(),
            days=days,
            retry=retry,
            requests_per_minute=self.requests_per_minute,
            demo_activities_per_day=self.demo_activities_per_day,
            demo_seed=self.demo_seed,
            logger=logger,
        ) as tenant:
            yield tenant


class ActivityStorage(dg.ConfigurableResource):
    """Where the Parquet days and the DuckDB file live (`ACTIVITY_DATA_DIR`, default `data/`)."""

    data_dir: str = "data"

    @property
    def path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def _env(name: str) -> Any:
    """An EnvVar when the variable is set (the UI shows its name, not its value), else None."""
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else None


def mdca_from_env() -> MdcaResource:
    fields: dict[str, Any] = {
        "api_url": _env("MDCA_API_URL"),
        "api_token": _env("MDCA_API_TOKEN"),
        "tenant_id": _env("MDCA_TENANT_ID"),
        "client_id": _env("MDCA_CLIENT_ID"),
        "client_secret": _env("MDCA_CLIENT_SECRET"),
        "authority_host": _env("MDCA_AUTHORITY_HOST"),
    }
    if os.environ.get("MDCA_REQUESTS_PER_MINUTE", "").strip():
        fields["requests_per_minute"] = dg.EnvVar.int("MDCA_REQUESTS_PER_MINUTE")
    return MdcaResource(**{k: v for k, v in fields.items() if v is not None})


def storage_from_env() -> ActivityStorage:
    return ActivityStorage(data_dir=_env("ACTIVITY_DATA_DIR") or "data")


def data_dir_from_env() -> Path:
    """The data directory as the resource will resolve it (outside a run, where EnvVars stay unresolved)."""
    return ActivityStorage(data_dir=os.environ.get("ACTIVITY_DATA_DIR", "").strip() or "data").path
