"""The one place that reads the environment, and the project's defaults.

Everything else takes what it needs from a `PipelineConfig`. Secrets are not read here: the config only
notes which variables are set, and Dagster resources receive them as `dg.EnvVar`, so the UI shows a
variable's name and never its value.

>>> config = load({"ACTIVITY_DATA_DIR": "/srv/activities", "MDCA_REQUESTS_PER_MINUTE": "20"})
>>> config.data_dir, config.requests_per_minute, config.uses_demo_tenant
(PosixPath('/srv/activities'), 20, True)
>>> load({"MDCA_API_URL": "https://contoso.eu2.portal.cloudappsecurity.com"}).tenant_variables
{'api_url': 'MDCA_API_URL'}
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from activity_pipeline.mdca import ConfigError, MdcaSettings
from activity_pipeline.mdca.settings import DEFAULT_REQUESTS_PER_MINUTE

DEFAULT_DATA_DIR = "data"

# MdcaSettings field -> the variable it is read from.
TENANT_VARIABLES = {
    "api_url": "MDCA_API_URL",
    "api_token": "MDCA_API_TOKEN",
    "tenant_id": "MDCA_TENANT_ID",
    "client_id": "MDCA_CLIENT_ID",
    "client_secret": "MDCA_CLIENT_SECRET",
    "authority_host": "MDCA_AUTHORITY_HOST",
}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the environment says: where data lives, from which day, and which tenant to read."""

    data_dir: Path
    # None: partitions start at the oldest day the service still keeps, or the oldest stored day if earlier.
    start_date: dt.date | None
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # The tenant's settings that are set, each as the variable that holds it (MdcaSettings field -> name).
    tenant_variables: dict[str, str] = dataclasses.field(default_factory=dict)
    data_dir_variable: str | None = None

    @property
    def uses_demo_tenant(self) -> bool:
        """No MDCA_API_URL: the built-in demo tenant stands in."""
        return "api_url" not in self.tenant_variables

    def mdca_settings(self, env: Mapping[str, str] | None = None) -> MdcaSettings:
        """The tenant's checked settings with the variables' values, for code that runs outside Dagster."""
        if self.uses_demo_tenant:
            raise ConfigError("MDCA_API_URL is not set")
        env = os.environ if env is None else env
        values = {field: env.get(name, "") for field, name in self.tenant_variables.items()}
        return MdcaSettings(**values, requests_per_minute=self.requests_per_minute)


def load(env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read ACTIVITY_* and MDCA_* (default: os.environ). Raises ConfigError naming the variable to fix."""
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    data_dir = get("ACTIVITY_DATA_DIR")
    return PipelineConfig(
        data_dir=Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve(),
        start_date=_start_date(get("ACTIVITY_START_DATE")),
        requests_per_minute=_requests_per_minute(get("MDCA_REQUESTS_PER_MINUTE")),
        tenant_variables={field: name for field, name in TENANT_VARIABLES.items() if get(name)},
        data_dir_variable="ACTIVITY_DATA_DIR" if data_dir else None,
    )


def _start_date(text: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"ACTIVITY_START_DATE must be a date like 2026-06-01 (YYYY-MM-DD), got {text!r}") from None


def _requests_per_minute(text: str) -> int:
    if not text:
        return DEFAULT_REQUESTS_PER_MINUTE
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"MDCA_REQUESTS_PER_MINUTE must be a whole number like 30, got {text!r}") from None
