"""Daily partitions: the default start date follows the service's retention and never drops a stored day."""

from __future__ import annotations

import datetime as dt

from activity_pipeline import config
from activity_pipeline.defs.partitions import start_date
from activity_pipeline_testing.helpers import tenant_data

TODAY = dt.date(2026, 11, 26)  # pinned


def first_day(tmp_path, **env: str) -> dt.date:
    """The first partition of the one tenant configured by `env`, with its data in `tmp_path`."""
    (tenant,) = config.load({"ACTIVITY_DATA_DIR": str(tmp_path), **env}).tenants
    return start_date(tenant, tenant_data(tmp_path, tenant.name), TODAY)


def test_without_a_start_date_partitions_start_at_the_oldest_retained_day(tmp_path):
    (tenant,) = config.load({"ACTIVITY_DATA_DIR": str(tmp_path)}).tenants
    assert start_date(tenant, tenant_data(tmp_path), TODAY) == dt.date(2026, 5, 30)
    # A year on, the default has moved with the retention: it does not rot.
    assert start_date(tenant, tenant_data(tmp_path), TODAY + dt.timedelta(days=365)) == dt.date(2027, 5, 30)


def test_a_day_stored_before_the_retention_stays_a_partition(tmp_path):
    with tenant_data(tmp_path).writer(dt.date(2026, 1, 15)) as writer:
        writer.commit()
    assert first_day(tmp_path) == dt.date(2026, 1, 15)
    assert first_day(tmp_path, MDCA_TENANT_NAME="other") == dt.date(2026, 5, 30), "another tenant's days are not its"


def test_activity_start_date_wins(tmp_path):
    assert first_day(tmp_path, ACTIVITY_START_DATE="2026-08-01") == dt.date(2026, 8, 1)
