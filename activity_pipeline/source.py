"""Where activities come from: the configured tenant, or the built-in demo tenant when none is configured."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from activity_pipeline.demo_tenant import DemoTenant, DemoTenantServer, ServerSettings, TenantSpec
from activity_pipeline.mdca import MdcaClient, MdcaSettings, RetryPolicy, Secret

log = logging.getLogger(__name__)

DEMO_WARNING = "MDCA_API_URL is not set: reading the built-in demo tenant on 127.0.0.1; its activities are synthetic"


@dataclasses.dataclass
class Tenant:
    client: MdcaClient
    is_demo: bool
    demo: DemoTenant | None = None


@contextlib.contextmanager
def open_tenant(
    settings: MdcaSettings | None,
    *,
    days: tuple[dt.date, ...],
    retry: RetryPolicy | None = None,
    requests_per_minute: int = 30,
    demo_activities_per_day: int = 20_000,
    demo_seed: int = 7,
    logger: logging.Logger | Any = None,
) -> Iterator[Tenant]:
    """A client for the tenant; without settings, a demo tenant serving `days` over loopback HTTP."""
    logger = logger or log
    if settings is not None:
        client = MdcaClient(settings, retry=retry)
        try:
            yield Tenant(client, is_demo=False)
        finally:
            client.close()
        return
    tenant = DemoTenant(TenantSpec(days=days, activities_per_day=demo_activities_per_day, seed=demo_seed))
    token = secrets.token_urlsafe(24)
    server_settings = ServerSettings(tokens=(token,), requests_per_minute=requests_per_minute)
    with DemoTenantServer(tenant, server_settings) as server:
        logger.warning(f"{DEMO_WARNING} ({server.url})")
        client = MdcaClient(
            MdcaSettings(api_url=server.url, token=Secret(token), requests_per_minute=requests_per_minute),
            retry=retry,
        )
        try:
            yield Tenant(client, is_demo=True, demo=tenant)
        finally:
            client.close()
