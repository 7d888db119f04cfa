"""UTC days as epoch-millisecond windows, the unit of partitioning. The API's times are epoch milliseconds."""

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
    """[start, end) of `day` in epoch milliseconds."""
    start = day_start_ms(day)
    return start, start + DAY_MS
