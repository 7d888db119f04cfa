"""UTC days as epoch-millisecond windows, the unit of partitioning. The API's times are epoch milliseconds.

A partition's day comes from its time window (`defs/partitions.py::partition_day`); everything below that
works with the day and turns it into milliseconds here, once.
"""

from __future__ import annotations

import datetime as dt

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def day_start_ms(day: dt.date) -> int:
    """Epoch milliseconds of 00:00 UTC on `day`.

    >>> day_start_ms(dt.date(1970, 1, 2))
    86400000
    """
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def day_window(day: dt.date) -> tuple[int, int]:
    """[start, end) of `day` in epoch milliseconds.

    >>> day_window(dt.date(1970, 1, 2))
    (86400000, 172800000)
    """
    start = day_start_ms(day)
    return start, start + DAY_MS


def utc_day(start: dt.datetime, end: dt.datetime) -> dt.date:
    """The UTC day that [start, end) covers exactly; ValueError for any other window.

    >>> utc_day(dt.datetime(2026, 11, 24, tzinfo=dt.UTC), dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    datetime.date(2026, 11, 24)
    """
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    day = start.date()
    if start != dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) or end - start != dt.timedelta(days=1):
        raise ValueError(f"[{start.isoformat()}, {end.isoformat()}) is not one whole UTC day")
    return day
