"""Resources: each tenant to read (a real one, or the built-in demo tenant), and the dataset they land in.

Every tenant's resource hands out an `MdcaClient`; all of them are one resource, `mdca` (`TenantClients`), and
which kind a tenant uses is chosen where the definitions are assembled (`resources_for`). The demo tenant's code is
imported only when its resource is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic

from activity_pipeline.config import DEFAULT_DATA_DIR, PipelineConfig, TenantConfig
from activity_pipeline.config.model import variable_values
from activity_pipeline.errors import ConfigError
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RateLimiter, RetryPolicy
from activity_pipeline.mdca.errors import MdcaError
from activity_pipeline.mdca.settings import DEFAULT_AUTHORITY_HOST, DEFAULT_REQUESTS_PER_MINUTE
from activity_pipeline.storage.core import Dataset, Finding, TenantStore
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.layout import STAGING

DEMO_WARNING = "reading the built-in demo tenant on 127.0.0.1 (no api_url configured); its activities are synthetic"
_DEFAULT_RETRY = RetryPolicy()


_LIMITERS: dict[tuple[str, int, float, str | None], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def _shared_limiter(api_url: str, requests_per_minute: int, window: float, state_dir: str | None) -> RateLimiter:
    """One limiter per tenant: the service's limit is per tenant, so the scan, the checks' counts and a
    sensor's counts draw on one budget instead of each on its own. In a process, one object; with
    `state_dir`, one file (`<state_dir>/.staging/rate-<hash of the API URL>.json`) that every run process of
    the machine shares, as overlapping runs of a backfill do."""
    shared = None
    if state_dir and requests_per_minute:
        digest = hashlib.sha256(api_url.rstrip("/").encode()).hexdigest()[:16]
        shared = Path(state_dir).expanduser().resolve() / STAGING / f"rate-{digest}.json"
    with _LIMITERS_LOCK:
        key = (api_url, requests_per_minute, window, str(shared) if shared else None)
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(requests_per_minute, window, shared=shared)
        return _LIMITERS[key]


class TenantResource(dg.ConfigurableResource):
    """What every tenant resource shares: how fast to go, how many slices, how long to retry."""

    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    # The rolling window `requests_per_minute` counts in: the service's is a minute. Tests and benchmarks shorten
    # it to scale time down (the demo tenant's window shrinks with it).
    rate_window_seconds: float = 60.0
    # Where the tenant's request log is kept for every run process of this machine to share (the dataset's
    # folder, ACTIVITY_DATA_DIR); None: each process keeps its own.
    rate_state_dir: str | None = None
    # 0 lets the client choose from the day's size, the rate limit and the measured latency.
    slices: int = 0
    # The tenant's own API filters (`mdca.filters`, checked at load), sent with every request of its runs.
    filters: dict[str, Any] = pydantic.Field(default_factory=dict)
    retry_max_attempts: int = _DEFAULT_RETRY.max_attempts
    retry_max_seconds: float = _DEFAULT_RETRY.max_seconds
    # First backoff after a failure, doubling per attempt (with jitter) up to a minute.
    retry_backoff_seconds: float = _DEFAULT_RETRY.backoff_first
    # The longest silence within one answer, and the longest one request may take, body included.
    read_timeout_seconds: float = _DEFAULT_RETRY.read_timeout
    request_deadline_seconds: float = _DEFAULT_RETRY.request_deadline

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.retry_max_attempts,
            max_seconds=self.retry_max_seconds,
            backoff_first=self.retry_backoff_seconds,
            # 429 without Retry-After: ten times the first backoff (10 s by default), doubling.
            throttle_default=max(self.retry_backoff_seconds, 0.1) * 10,
            read_timeout=self.read_timeout_seconds,
            request_deadline=self.request_deadline_seconds,
        )

    def client(self, logger: Any = None) -> contextlib.AbstractContextManager[MdcaClient]:
        """A client for the tenant, closed when the block ends."""
        raise NotImplementedError

    def _client(self, settings: MdcaSettings, logger: Any = None) -> MdcaClient:
        limiter = _shared_limiter(
            settings.api_url, settings.requests_per_minute, self.rate_window_seconds, self.rate_state_dir
        )
        client = MdcaClient(settings, retry=self.retry_policy(), limiter=limiter, filters=self.filters)
        if logger is not None:
            client.log = logger  # a pause for the rate limit is said in the run's log
        return client


class MdcaResource(TenantResource):
    """A Defender for Cloud Apps tenant. Its fields are `MdcaSettings`' and mean the same.

    A secret left unset here is read from the variable `variables` names when a client opens: the resource's
    configuration never holds it.
    """

    api_url: str
    api_token: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    authority_host: str = DEFAULT_AUTHORITY_HOST
    # Field -> the name of the variable it is read from (names, not values), for messages that say what to fix.
    variables: dict[str, str] = pydantic.Field(default_factory=dict)
    # Where `api_url` (and `authority_host`) were set, for those messages: "" is the MDCA_* variables; a tenants-file
    # tenant's are its keys in that file, never a variable it does not use.
    url_source: str = ""

    def settings(self) -> MdcaSettings:
        """Checked settings; a secret not given here is read from its variable (`variables`) now. Raises
        ConfigError naming what to fix."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(MdcaSettings) if f.name != "variables"}
        unset = {field: name for field, name in self.variables.items() if fields.get(field) is None}
        fields.update(variable_values(unset))
        return MdcaSettings(**fields, variables=tuple(sorted(self.variables.items())))

    @contextlib.contextmanager
    def client(self, logger: Any = None) -> Iterator[MdcaClient]:
        with self._client(self.settings(), logger) as client:
            try:
                yield client
            except MdcaError as exc:
                if self.url_source and exc.args:
                    exc.args = (_named_by(str(exc.args[0]), self.url_source), *exc.args[1:])
                raise


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
        served = ServerSettings(
            tokens=(token,), requests_per_minute=self.requests_per_minute, window_seconds=self.rate_window_seconds
        )
        with DemoTenantServer(tenant, served) as server:
            (logger or logging.getLogger(__name__)).warning(f"{DEMO_WARNING} ({server.url})")
            settings = MdcaSettings(api_url=server.url, api_token=token, requests_per_minute=self.requests_per_minute)
            with self._client(settings, logger) as client:
                yield client


class ActivityStorage(dg.ConfigurableResource):
    """The dataset: every tenant's Parquet days, their manifests and the DuckDB file under `data_dir`
    (`ACTIVITY_DATA_DIR`); with `data_url` (`ACTIVITY_DATA_URL`), the days are a Delta table on object storage
    and `data_dir` keeps work in progress and the DuckDB file. Which backend is `storage.dataset`'s business."""

    data_dir: str = DEFAULT_DATA_DIR
    data_url: str | None = None

    @property
    def dataset(self) -> Dataset:
        return open_dataset(self.data_dir, self.data_url)

    def tenant(self, name: str) -> TenantStore:
        """The tenant's stored days."""
        return self.dataset.tenant(name)

    def check_location(self) -> None:
        """Raise StorageLocationError when the dataset cannot go where it is configured to."""
        self.dataset.check()

    @property
    def location(self) -> str:
        """Where the days are, for messages: the URL or the folder."""
        return self.dataset.location

    def record_count_check(self, tenant: str, day: dt.date, **finding: Any) -> None:
        """Keep the count check's finding (`storage.core.Finding`) for `partition_health`."""
        self.tenant(tenant).record_finding(Finding.of(day, at=dt.datetime.now(dt.UTC), **finding))

    def adopt_legacy_days(self, tenant: str) -> list[dt.date]:
        """Move days stored before tenants existed under `tenant` (see `storage.layout`); returns them."""
        return self.dataset.adopt_legacy_days(tenant)


# The resource key of every tenant's client (`TenantClients`).
MDCA = "mdca"


class TenantClients:
    """Every tenant's resource (`TenantResource`), by name: the definitions' one `mdca` resource.

    One object for every tenant instead of a resource each: a step initializes the resources it requires, and a
    thousand of them would be built for every run. A configured tenant's resource is built when it is first asked
    for (`configured`), so a load of a thousand tenants builds none. A real tenant's secrets are read from its
    variables only when its client opens (`MdcaResource.settings`), so no resource's configuration in the UI
    holds one.
    """

    def __init__(
        self,
        tenants: Mapping[str, TenantResource] | None = None,
        *,
        configured: Mapping[str, TenantConfig] | None = None,
        rate_state_dir: str | None = None,
    ) -> None:
        self.tenants = dict(tenants or {})
        self.configured = {name: t for name, t in (configured or {}).items() if name not in self.tenants}
        self.rate_state_dir = rate_state_dir
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TenantClients({len(self.names)} tenants)"

    @property
    def names(self) -> list[str]:
        return [*self.tenants, *(n for n in self.configured if n not in self.tenants)]

    def __getitem__(self, tenant: str) -> TenantResource:
        with self._lock:
            if tenant not in self.tenants and tenant in self.configured:
                self.tenants[tenant] = tenant_resource(self.configured[tenant], rate_state_dir=self.rate_state_dir)
            if tenant in self.tenants:
                return self.tenants[tenant]
        raise ConfigError(f"no tenant named {tenant} is configured; configured: {', '.join(self.names)}")

    def client(self, tenant: str, logger: Any = None) -> contextlib.AbstractContextManager[MdcaClient]:
        """A client for `tenant`, closed when the block ends."""
        return self[tenant].client(logger)


def _named_by(message: str, source: str) -> str:
    """`message` with the MDCA_* variables that set the URLs replaced by where this tenant sets them."""
    return message.replace("MDCA_API_URL", f"the `api_url` of {source}").replace(
        "MDCA_AUTHORITY_HOST", f"the `authority_host` of {source}"
    )


def _url_source(tenant: TenantConfig) -> str:
    """Where a tenant's `api_url` is set, for its messages: "" for the MDCA_* variables."""
    from_file = tenant.origin and "MDCA_" not in tenant.origin
    return f"tenant {tenant.name!r} in the tenants file" if from_file else ""


def tenant_resource(tenant: TenantConfig, *, rate_state_dir: Any = None) -> TenantResource:
    """The tenant's resource: its secrets' variables by name only (`MdcaResource.variables`), read when a client
    opens. `rate_state_dir`: see `TenantResource.rate_state_dir`."""
    if tenant.demo is not None:
        # No shared log for the demo tenant: each process serves its own, on a port of its own, with its own
        # budget (and a file per port would pile up).
        return DemoTenantResource(
            requests_per_minute=tenant.requests_per_minute,
            rate_window_seconds=tenant.rate_window_seconds,
            seed=tenant.demo.seed,
            activities_per_day=tenant.demo.activities_per_day,
            filters=tenant.filters,
        )
    assert tenant.api_url is not None
    return MdcaResource(
        rate_state_dir=rate_state_dir,
        api_url=tenant.api_url,
        authority_host=tenant.authority_host,
        requests_per_minute=tenant.requests_per_minute,
        rate_window_seconds=tenant.rate_window_seconds,
        variables=dict(tenant.variables),
        filters=tenant.filters,
        # A tenants-file tenant (its origin names the file and line) never reads MDCA_API_URL.
        url_source=""
        if "MDCA_" in tenant.origin or not tenant.origin
        else f"tenant {tenant.name!r} in the tenants file",
    )


def resources_for(config: PipelineConfig) -> dict[str, Any]:
    """The resources a deployment with this configuration runs with: every tenant's client, and the dataset."""
    data_dir = str(config.data_dir)
    clients = TenantClients(configured={t.name: t for t in config.tenants}, rate_state_dir=data_dir)
    return {
        MDCA: dg.ResourceDefinition.hardcoded_resource(
            clients, description=f"The {len(clients.names)} configured tenants' API clients (ACTIVITY_TENANTS_FILE)"
        ),
        "storage": ActivityStorage(data_dir=data_dir, data_url=config.data_url),
    }
