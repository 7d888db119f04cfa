"""Daily partitions: the default start date follows the service's retention and never drops a stored day."""

from __future__ import annotations

import datetime as dt

from activity_pipeline import config
from activity_pipeline.defs.partitions import start_date
from activity_pipeline.storage.writer import DayWriter

TODAY = dt.date(2026, 11, 26)  # pinned


def test_without_a_start_date_partitions_start_at_the_oldest_retained_day(tmp_path):
    settings = config.load({"ACTIVITY_DATA_DIR": str(tmp_path)})
    assert start_date(settings, TODAY) == dt.date(2026, 5, 30)
    # A year on, the default has moved with the retention: it does not rot.
    assert start_date(settings, TODAY + dt.timedelta(days=365)) == dt.date(2027, 5, 30)


def test_a_day_stored_before_the_retention_stays_a_partition(tmp_path):
    with DayWriter(tmp_path, dt.date(2026, 1, 15)) as writer:
        writer.commit({})
    settings = config.load({"ACTIVITY_DATA_DIR": str(tmp_path)})
    assert start_date(settings, TODAY) == dt.date(2026, 1, 15)


def test_activity_start_date_wins(tmp_path):
    settings = config.load({"ACTIVITY_DATA_DIR": str(tmp_path), "ACTIVITY_START_DATE": "2026-08-01"})
    assert start_date(settings, TODAY) == dt.date(2026, 8, 1)
