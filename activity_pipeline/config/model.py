"""The configuration's values: what a tenant is, what a deployment is. Built by `config.load` (the environment)
and `config.tenants_file` (the tenants file); read everywhere else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activity_pipeline.alerts import Destination
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca import MdcaSettings
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE, DEFAULT_VARIABLES

DEFAULT_DATA_DIR = "data"
DEFAULT_INTRADAY_MINUTES = 15
# A day has 1,440 minutes; more would mean "not today".
MAX_INTRADAY_MINUTES = 1440
DEFAULT_TENANT_NAME = "default"
TENANT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

# MdcaSettings field -> the variable it is read from, for the single tenant configured without a file.
TENANT_VARIABLES = {"api_url": "MDCA_API_URL", **DEFAULT_VARIABLES, "authority_host": "MDCA_AUTHORITY_HOST"}


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """A tenant served by the built-in demo tenant: synthetic activities over HTTP on 127.0.0.1."""

    seed: int = 7
    activities_per_day: int = 20_000


@dataclasses.dataclass(frozen=True)
class TenantConfig:
    """One tenant: its name, where it is, which variables hold its credentials, how fast, from which day."""

    name: str
    # None: the built-in demo tenant stands in (`demo`).
    api_url: str | None = None
    # MdcaSettings field -> the variable that holds it (api_token, or tenant_id, client_id and client_secret).
    variables: dict[str, str] = dataclasses.field(default_factory=dict)
    authority_host: str = DEFAULT_AUTHORITY_HOST
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # The window `requests_per_minute` is counted in: the service's minute. Shorter only to scale time down in
    # tests and benchmarks (the demo tenant's window with it).
    rate_window_seconds: float = 60.0
    # None: partitions start at the oldest day the service still keeps, or the oldest stored day if earlier.
    start_date: dt.date | None = None
    demo: DemoSettings | None = None
    # The schedule and the sensors run by default whenever the daemon runs; `automation: false` in the tenants
    # file leaves them stopped (runs are then started by hand, or switched on in the UI).
    automation: bool = True
    # The Activities API's own filters this tenant collects under (`mdca.filters.check_filters`, normalized);
    # empty: every activity.
    filters: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Days kept (`keep_days`): older days are deleted by the tenant's retention job, each with an audit record.
    # None: kept forever.
    keep_days: int | None = None
    # Delete a day only once this other dataset (a folder, or an object-storage URL) holds it whole.
    keep_copied_to: str | None = None
    # Today (and yesterday, until its nightly run) is collected every this many minutes (`intraday_minutes`,
    # `MDCA_INTRADAY_MINUTES`); 0: not at all, the day is scanned once it is complete.
    intraday_minutes: int = DEFAULT_INTRADAY_MINUTES
    # Where the tenant was defined, for messages: "tenant 'contoso' (line 4 of /etc/tenants.yaml)".
    origin: str = ""

    @property
    def uses_demo_tenant(self) -> bool:
        return self.api_url is None

    def mdca_settings(self, env: Mapping[str, str] | None = None) -> MdcaSettings:
        """The tenant's checked settings with the variables' values, for code that runs outside Dagster."""
        if self.api_url is None:
            raise ConfigError(f"{self.origin or self.name} is the demo tenant; it has no API settings")
        values = variable_values(self.variables, env)
        return MdcaSettings(
            api_url=self.api_url,
            authority_host=self.authority_host,
            requests_per_minute=self.requests_per_minute,
            variables=tuple(sorted(self.variables.items())),
            **values,
        )


def variable_values(variables: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Field -> the value of the variable that holds it ("" when unset, which `MdcaSettings` refuses by name)."""
    env = os.environ if env is None else env
    return {field: env.get(name, "") for field, name in variables.items()}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the environment says: where data lives, and which tenants to read."""

    data_dir: Path
    tenants: tuple[TenantConfig, ...]
    tenants_file: Path | None = None
    # The dataset on object storage (ACTIVITY_DATA_URL, see storage.lake); None: under data_dir.
    data_url: str | None = None
    # Where alerts go: the tenants file's `alerts:` list (see activity_pipeline.alerts).
    alerts: tuple[Destination, ...] = ()
    # The group that may read the dataset (ACTIVITY_DATA_GROUP, see activity_pipeline.privacy); None: its owner only.
    data_group: str | None = None

    def tenant(self, name: str) -> TenantConfig:
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        raise ConfigError(f"no tenant named {name!r}; configured: {', '.join(t.name for t in self.tenants)}")


def parse_date(text: str, what: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} must be a date like 2026-06-01 (YYYY-MM-DD), got {text!r}") from None
