"""A demo tenant with no fixed list of days: each query builds the days its `date` filter asks for.

The Dagster resource for the demo tenant uses this, so that a run needs to tell the stand-in nothing about
the partition it is scanning: like a real tenant, it simply holds every day of the last 180.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from activity_pipeline.demo_tenant.data import DAY_MS, TenantSpec, day_start_ms
from activity_pipeline.demo_tenant.tenant import BadRequest, DemoTenant, Page

SERVICE_WINDOW_DAYS = 180
# Building a day takes ~0.1 s per 20,000 records; a query over more days than this is refused, not slow.
MAX_DAYS_PER_QUERY = 14


class DemoTenantOnDemand:
    """Every day of the last `retention_days`, built when a query first touches it.

    A day holds exactly the records `DemoTenant(TenantSpec(days=(day,), activities_per_day=n, seed=s))` holds:
    records are a function of (seed, day), whatever else is built. Days older than the retention hold
    nothing, as on the real service. The few most recently used day sets are kept.

    >>> tenant = DemoTenantOnDemand(activities_per_day=2_000)
    >>> start = day_start_ms(dt.date.today() - dt.timedelta(days=2))
    >>> page = tenant.list({"date": {"gte": start, "lte": start + DAY_MS - 1}}, limit=1, skip=0,
    ...                    sort_field="date", direction="desc")              # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        activities_per_day: int = 20_000,
        seed: int = 7,
        retention_days: int = SERVICE_WINDOW_DAYS,
        keep: int = 4,
        now: Callable[[], int] | None = None,
    ) -> None:
        self.activities_per_day, self.seed = activities_per_day, seed
        self.retention_days = retention_days
        self._keep = keep
        self._clock = now or (lambda: int(time.time() * 1000))
        self._built: collections.OrderedDict[tuple[dt.date, ...], DemoTenant] = collections.OrderedDict()
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return self._clock()

    def spec(self, days: tuple[dt.date, ...]) -> TenantSpec:
        return TenantSpec(days=days, activities_per_day=self.activities_per_day, seed=self.seed)

    def _days(self, filters: dict[str, Any]) -> tuple[dt.date, ...]:
        """The retained days that the `date` filter can reach."""
        now = self.now_ms()
        today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
        lo, hi = day_start_ms(today - dt.timedelta(days=self.retention_days)), now
        spec = filters.get("date")
        if isinstance(spec, dict):
            for op, value in spec.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if op in ("gte", "gt"):
                    lo = max(lo, int(value) + (op == "gt"))
                elif op in ("lte", "lt"):
                    hi = min(hi, int(value) - (op == "lt"))
        if hi < lo:
            return ()
        first = dt.datetime.fromtimestamp(lo / 1000, dt.UTC).date()
        n = (hi - day_start_ms(first)) // DAY_MS + 1
        if n > MAX_DAYS_PER_QUERY:
            raise BadRequest(
                f"The demo tenant builds at most {MAX_DAYS_PER_QUERY} days for one query, and this one reaches "
                f"{n}; narrow the 'date' filter (gte/lte in epoch milliseconds)"
            )
        return tuple(first + dt.timedelta(days=k) for k in range(n))

    def _tenant(self, days: tuple[dt.date, ...]) -> DemoTenant:
        with self._lock:
            tenant = self._built.get(days)
            if tenant is None:
                tenant = DemoTenant(self.spec(days), now=self.now_ms)
                self._built[days] = tenant
                while len(self._built) > self._keep:
                    self._built.popitem(last=False)
            self._built.move_to_end(days)
            return tenant

    def scan(self, filters: dict[str, Any], **kwargs: Any) -> Page:
        days = self._days(filters)
        return self._tenant(days).scan(filters, **kwargs) if days else Page([], has_next=False)

    def list(self, filters: dict[str, Any], **kwargs: Any) -> Page:
        days = self._days(filters)
        return self._tenant(days).list(filters, **kwargs) if days else Page([], has_next=False, total=0)

    def record(self, activity_id: str) -> str | None:
        with self._lock:
            built = list(self._built.values())
        return next((r for t in built if (r := t.record(activity_id)) is not None), None)
