"""The storage contract's backends, for the suites that run on each of them (`backend` in conftest)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from activity_pipeline.demo_tenant import DemoTenant, TenantSpec
from activity_pipeline.storage.core import Dataset, TenantStore
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline_testing.helpers import STRESS_DAY

BACKENDS = [
    "local",
    *(pytest.param(kind, marks=pytest.mark.object_storage) for kind in ("s3", "azure-blob", "azure-data-lake")),
]


@dataclasses.dataclass
class Backend:
    root: Path
    url: str | None
    env: dict[str, str]

    @property
    def dataset(self) -> Dataset:
        return open_dataset(self.root, self.url)

    def store(self, tenant: str = "contoso", root: Path | None = None) -> TenantStore:
        return open_dataset(root or self.root, self.url).tenant(tenant)


def early_tenant(activities: int) -> DemoTenant:
    """STRESS_DAY at 02:00 the next morning: its late records still to come (`tenant.advance` brings them)."""
    tenant = DemoTenant(TenantSpec(days=(STRESS_DAY,), activities_per_day=activities))
    tenant.set_now(dt.datetime.combine(STRESS_DAY + dt.timedelta(days=1), dt.time(2), dt.UTC))
    return tenant
