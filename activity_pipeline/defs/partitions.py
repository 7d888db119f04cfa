"""One partition per complete UTC day, from ACTIVITY_START_DATE."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

# Roughly the service's 180-day retention before this release: set ACTIVITY_START_DATE to the first day
# you collect. Keep it fixed afterwards, so days kept beyond retention stay partitions.
DEFAULT_START_DATE = "2026-06-01"


def start_date_from_env() -> dt.date:
    text = os.environ.get("ACTIVITY_START_DATE", "").strip() or DEFAULT_START_DATE
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ACTIVITY_START_DATE must be a date like 2026-06-01 (YYYY-MM-DD), got {text!r}") from None


# end_offset=0: the newest partition is yesterday, the last complete UTC day.
daily = dg.DailyPartitionsDefinition(start_date=start_date_from_env().isoformat(), timezone="UTC", end_offset=0)
