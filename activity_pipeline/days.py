"""UTC days as epoch-millisecond windows, the unit of partitioning. The API's times are epoch milliseconds.

A partition's day comes from its time window (`components/partitions.py::partition_day`); everything below that
works with the day and turns it into milliseconds here, once.
"""

from __future__ import annotations

import datetime as dt
import sys

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Late records (Power BI, Dynamics 365, lagging connectors) arrive up to three days after they happened: the
# late-arrivals sensor tops up the last SETTLE_DAYS days, and records still missing after that are a warning.
SETTLE_DAYS = 3


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


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, both included.

    >>> days_between(dt.date(2026, 11, 30), dt.date(2026, 12, 1))
    [datetime.date(2026, 11, 30), datetime.date(2026, 12, 1)]
    """
    return [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]


def main(argv: list[str]) -> int:
    """`python -m activity_pipeline.days FROM TO`: the days from FROM to TO, one a line (for `make backfill`)."""
    try:
        first, last = (dt.date.fromisoformat(a) for a in argv)
    except ValueError:
        print(f"expected two dates like 2026-11-01 2026-11-24 (FROM and TO, YYYY-MM-DD); got {argv}", file=sys.stderr)
        return 2
    if last < first:
        print(f"TO ({last}) is before FROM ({first})", file=sys.stderr)
        return 2
    print("\n".join(d.isoformat() for d in days_between(first, last)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
