"""Daily partitions: the default start date follows the service's retention and never drops a stored day."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from activity_pipeline import config
from activity_pipeline.defs.partitions import start_date
from activity_pipeline.storage.local import LocalStore
from activity_pipeline_testing.helpers import REPO, clean_env, tenant_data

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


def test_make_run_refuses_a_day_outside_the_partitions_in_one_line(tmp_path):
    env = clean_env(ACTIVITY_DATA_DIR=str(tmp_path), ACTIVITY_START_DATE="2026-06-01")
    command = [sys.executable, "-m", "activity_pipeline.defs.partitions"]
    out = subprocess.run([*command, "2026-01-01"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "tenant default: 2026-01-01 is not one of this tenant's days: they run from 2026-06-01" in out.stderr
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ok = subprocess.run([*command, str(yesterday)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr


def test_a_storage_that_cannot_list_its_days_leaves_the_retention_default(tmp_path, caplog):
    class Unreachable(LocalStore):
        def days(self) -> list[dt.date]:
            raise OSError("the bucket is unreachable")

    (tenant,) = config.load({"ACTIVITY_DATA_DIR": str(tmp_path)}).tenants
    assert start_date(tenant, Unreachable(tmp_path, tenant.name), TODAY) == dt.date(2026, 5, 30)
    assert "could not be listed (the bucket is unreachable)" in caplog.text
