"""Every tenant's days: the default first day follows the service's window and never drops a stored day; each
tenant has its own; a day outside a tenant's days is refused in one line that says why."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from activity_pipeline import config
from activity_pipeline.components.partitions import TenantDays
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.local import LocalDataset
from activity_pipeline_testing.helpers import REPO, clean_env, tenant_data

TODAY = dt.date(2026, 11, 26)  # pinned


def grid(tmp_path, today: dt.date = TODAY, **env: str) -> TenantDays:
    settings = config.load({"ACTIVITY_DATA_DIR": str(tmp_path), **env})
    return TenantDays.of(settings.tenants, open_dataset(tmp_path), today)


def first_day(tmp_path, **env: str) -> dt.date:
    """The first day of the one tenant configured by `env`, with its data in `tmp_path`."""
    (first,) = grid(tmp_path, **env).first.values()
    return first


def test_without_a_start_date_partitions_start_at_the_oldest_day_the_service_keeps(tmp_path):
    assert first_day(tmp_path) == dt.date(2026, 5, 30)
    # A year on, the default has moved with the service's window: it does not rot.
    assert grid(tmp_path, TODAY + dt.timedelta(days=365)).first["default"] == dt.date(2027, 5, 30)


def test_a_day_stored_before_the_service_window_stays_a_partition(tmp_path):
    with tenant_data(tmp_path).writer(dt.date(2026, 1, 15)) as writer:
        writer.commit()
    assert first_day(tmp_path) == dt.date(2026, 1, 15)
    assert first_day(tmp_path, MDCA_TENANT_NAME="other") == dt.date(2026, 5, 30), "another tenant's days are not its"


def test_activity_start_date_wins(tmp_path):
    assert first_day(tmp_path, ACTIVITY_START_DATE="2026-08-01") == dt.date(2026, 8, 1)


def test_each_tenant_has_its_own_first_day_and_the_grid_starts_at_the_earliest(tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  - {name: early, demo: true, start_date: 2026-09-01}\n"
        "  - {name: kept, demo: true, keep_days: 30}\n  - {name: late, demo: true, start_date: 2026-11-01}\n"
    )
    days = grid(tmp_path, ACTIVITY_TENANTS_FILE=str(tenants))
    assert days.first == {"early": dt.date(2026, 9, 1), "kept": dt.date(2026, 10, 27), "late": dt.date(2026, 11, 1)}
    assert days.partitions.days.get_first_partition_key() == "2026-09-01"
    assert days.partitions.tenants == ["early", "kept", "late"]
    assert days.refusal("late", dt.date(2026, 11, 1)) is None
    assert "they run from 2026-11-01 (its start_date" in (days.refusal("late", dt.date(2026, 10, 31)) or "")
    assert "its keep_days (30)" in (days.refusal("kept", dt.date(2026, 10, 1)) or "")
    assert days.refusal("early", TODAY) is None, "today is the day in progress"
    assert "has not begun" in (days.refusal("early", TODAY + dt.timedelta(days=1)) or "")
    assert days.partitions.days.get_last_partition_key() == dt.datetime.now(dt.UTC).date().isoformat()
    assert "no tenant named nobody" in (days.refusal("nobody", TODAY) or "")


def test_make_run_refuses_a_day_outside_the_partitions_in_one_line(tmp_path):
    env = clean_env(ACTIVITY_DATA_DIR=str(tmp_path), ACTIVITY_START_DATE="2026-06-01")
    command = [sys.executable, "-m", "activity_pipeline.components.partitions"]
    out = subprocess.run([*command, "2026-01-01"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "tenant default: 2026-01-01 is not one of tenant default's days: they run from 2026-06-01" in out.stderr
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ok = subprocess.run([*command, str(yesterday)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr


@pytest.mark.parametrize("day", ["2026-12-3", "03/12/2026", "yesterday"])
def test_a_malformed_day_is_told_the_format(tmp_path, day):
    env = clean_env(ACTIVITY_DATA_DIR=str(tmp_path))
    command = [sys.executable, "-m", "activity_pipeline.components.partitions", day]
    out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"DAY={day} is not a day: write it as YYYY-MM-DD" in out.stderr


def test_a_storage_that_cannot_list_its_days_leaves_the_service_window_default(tmp_path, caplog, monkeypatch):
    def unreachable(self: LocalDataset) -> dict[str, dt.date]:
        raise OSError("the bucket is unreachable")

    monkeypatch.setattr(LocalDataset, "oldest_days", unreachable)
    assert first_day(tmp_path) == dt.date(2026, 5, 30)
    assert "could not be listed (the bucket is unreachable)" in caplog.text
