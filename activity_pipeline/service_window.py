"""The service window: Defender for Cloud Apps keeps activities for 180 days. Which days can still be
scanned, and which are about to be lost.

No Dagster here. `components/automation.py` turns `at_risk` into run requests; the DuckDB file's `retention_risk`
view computes the same from the stored days at query time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection


class OutsideServiceWindowError(Exception):
    """The day asked for is older than the service keeps activities: it can no longer be scanned."""


# Defender for Cloud Apps keeps the activity log for 180 days.
SERVICE_WINDOW_DAYS = 180
# A day this close to the cliff that is not safely stored is rescued first.
RESCUE_MARGIN_DAYS = 14


def first_scannable_day(today: dt.date, retention_days: int = SERVICE_WINDOW_DAYS) -> dt.date:
    """The oldest day the service still holds in full on `today` (UTC).

    >>> first_scannable_day(dt.date(2026, 11, 26))
    datetime.date(2026, 5, 30)
    """
    return today - dt.timedelta(days=retention_days)


def check_scannable(day: dt.date, now: dt.datetime, retention_days: int = SERVICE_WINDOW_DAYS) -> None:
    """Refuse a day the service no longer keeps, rather than store it as empty."""
    oldest = first_scannable_day((now.astimezone(dt.UTC)).date(), retention_days)
    if day < oldest:
        raise OutsideServiceWindowError(
            f"{day} is {(now.date() - day).days} days ago; Defender for Cloud Apps keeps activities for "
            f"{retention_days} days (nothing before {oldest} can be scanned), so this partition would be written "
            "empty. Only days that were collected while still retained exist; set ACTIVITY_START_DATE no "
            f"earlier than {oldest} for a new installation."
        )


@dataclasses.dataclass(frozen=True)
class DayAtRisk:
    day: dt.date
    days_left: int  # days until the service drops it; 0: its last day
    state: str  # "missing" (never stored) or "incomplete" (its last count check failed)


def at_risk(
    days: Collection[dt.date],
    *,
    today: dt.date,
    stored: Collection[dt.date],
    incomplete: Collection[dt.date] = (),
    margin_days: int = RESCUE_MARGIN_DAYS,
    retention_days: int = SERVICE_WINDOW_DAYS,
) -> list[DayAtRisk]:
    """Days among `days` within `margin_days` of leaving retention that are missing or incomplete, oldest first.

    >>> today = dt.date(2026, 11, 26)
    >>> days = [dt.date(2026, 5, 29) + dt.timedelta(days=k) for k in range(30)]
    >>> risky = at_risk(days, today=today, stored=days[3:], incomplete=[days[4]])
    >>> [(d.day.isoformat(), d.days_left, d.state) for d in risky]
    [('2026-05-30', 0, 'missing'), ('2026-05-31', 1, 'missing'), ('2026-06-02', 3, 'incomplete')]
    """
    oldest = first_scannable_day(today, retention_days)
    stored_set, incomplete_set = set(stored), set(incomplete)
    found = []
    for day in sorted(days):
        left = (day - oldest).days
        if not 0 <= left <= margin_days:
            continue
        if day not in stored_set:
            found.append(DayAtRisk(day, left, "missing"))
        elif day in incomplete_set:
            found.append(DayAtRisk(day, left, "incomplete"))
    return found
