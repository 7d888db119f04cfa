"""The demo tenant's query engine: filters, scan mode, list mode and the tenant's clock.

Scan mode follows the reference's best guess of the real mechanism: sort by the sort field, cut at
`limit`, drop the trailing records that share the page's last value T, and hand back the caller's
filters with the sort field bounded at T. When a whole page shares T (a tie larger than `limit`), the
server adds an opaque cursor of its own so that every record is still listed exactly once.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from activity_pipeline.demo_tenant.catalog import APPS, DEVICES, IP_CATEGORIES
from activity_pipeline.demo_tenant.data import DAY_MS, EVENTS, TenantSpec, day_start_ms, generate
from activity_pipeline.demo_tenant.render import Renderer

SCAN_LIMIT_MIN, SCAN_LIMIT_MAX, SCAN_LIMIT_DEFAULT = 500, 5000, 500
LIST_LIMIT_MAX = 100
LIST_WINDOW_MAX = 5000
# Filters on what no demo record carries: (operators, the one value every record matches).
_ABSENT: dict[str, tuple[tuple[str, ...], Any]] = {
    "user.orgUnit": (("eq", "neq", "isset", "isnotset"), None),
    "activity.impersonated": (("eq",), False),
    "activity.takenAction": (("eq", "neq"), "null"),
    "instance": (("eq", "neq"), 0),
}
KNOWN_FILTERS = (
    "date", "created", "service", "instance", "source", "user.username", "user.orgUnit", "activity.type",
    "activity.eventType", "activity.eventActionType", "actionType", "activity.impersonated", "activity.takenAction",
    "activity.id", "device.type", "ip.address", "ip.category", "location.country",
)  # fmt: skip

# The server's own key in nextQueryFilters for ties larger than a page. Clients never look inside.
CURSOR_KEY = "scanCursor"


class BadRequest(ValueError):
    """A request the API refuses with HTTP 400; the message is what the API says."""


@dataclass
class Page:
    records: list[str]
    has_next: bool
    next_filters: dict[str, Any] | None = None
    total: int | None = None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _as_int(name: str, op: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"Filter '{name}' operator '{op}' expects epoch milliseconds, got {value!r}")
    return int(value)


class DemoTenant:
    """A tenant's activities, queryable as the Activities API does, with a movable clock.

    >>> tenant = DemoTenant(TenantSpec(days=(dt.date(2026, 11, 24),), activities_per_day=1000))
    >>> tenant.set_now(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    >>> len(tenant.truth_ids(dt.date(2026, 11, 24))) >= 1000
    True
    """

    def __init__(self, spec: TenantSpec, *, now: Callable[[], int] | None = None) -> None:
        self.spec = spec
        self.directory, self.cols = generate(spec)
        self.renderer = Renderer(self.directory, self.cols)
        c = self.cols
        rank = np.empty(len(c), dtype=np.int64)
        rank[np.argsort(c.ids, kind="stable")] = np.arange(len(c))
        self.rank = rank
        # Sort orders for scan and list mode: (field value, id) is a total order.
        self._order = {
            "date": np.lexsort((rank, c.ts)),
            "created": np.lexsort((rank, c.created)),
        }
        self._sorted_key = {field: (c.ts if field == "date" else c.created)[o] for field, o in self._order.items()}
        self._row_by_id = {k: i for i, k in enumerate(c.ids.tolist())}
        self._user_index = {u: i for i, u in enumerate(self.directory.users)}
        self._ip_index = {ip: i for i, ip in enumerate(self.directory.ips)}
        self._event_names = np.array([e.type_name for _, e in EVENTS])
        self._event_admin = np.array([e.is_admin for _, e in EVENTS])
        self._app_ids = np.array([a.app_id for a in APPS])
        # Whether each event kind's records carry `user.userName` (a failed sign-in's do not).
        self._named = np.array([event.success is not False for _, event in EVENTS])
        self._ip_cc = np.array([p for p in self.renderer.ip_cc])
        # Per app, event, IP and device: what the other documented filters match (see `_attribute`).
        self._app_source = np.array([a.source for a in APPS])
        self._event_ops = np.array([e.operation.lower() for _, e in EVENTS])
        self._ip_category = np.array([IP_CATEGORIES[int(k)][0] for k in self.directory.ip_category])
        self._device_type = np.array([d[5].lower() for d in DEVICES])
        self._lock = threading.Lock()
        self._fixed_now: int | None = None
        self._clock = now

    # The clock: a record is visible once its `created` is at or before now.
    def now_ms(self) -> int:
        with self._lock:
            if self._fixed_now is not None:
                return self._fixed_now
        if self._clock is not None:
            return self._clock()
        return int(time.time() * 1000)

    def set_now(self, when: dt.datetime | int | None) -> None:
        """Pin the tenant's clock (aware datetime or epoch ms); None returns to the real time."""
        with self._lock:
            if when is None or isinstance(when, int):
                self._fixed_now = when
            else:
                if when.tzinfo is None:
                    raise ValueError("set_now needs an aware datetime (tzinfo=datetime.UTC)")
                self._fixed_now = int(when.timestamp() * 1000)

    def advance(self, delta: dt.timedelta) -> None:
        """Move a pinned clock forward; records saved in between become visible."""
        self.set_now(self.now_ms() + int(delta.total_seconds() * 1000))

    # Truth, for tests and benchmarks: what a perfect client would collect.
    def _day_rows(self, day: dt.date, now: int | None = None) -> np.ndarray:
        start = day_start_ms(day)
        now = self.now_ms() if now is None else now
        c = self.cols
        return np.flatnonzero((c.ts >= start) & (c.ts < start + DAY_MS) & (c.created <= now))

    def truth_ids(self, day: dt.date, *, now: int | None = None) -> set[str]:
        """Ids of every record of `day` visible at the tenant's now."""
        return {i.decode() for i in self.cols.ids[self._day_rows(day, now)].tolist()}

    def truth_count(self, day: dt.date, *, now: int | None = None) -> int:
        return len(self._day_rows(day, now))

    def record(self, activity_id: str) -> str | None:
        row = self._row_by_id.get(activity_id.encode())
        if row is None or self.cols.created[row] > self.now_ms():
            return None
        return self.renderer.render(row)

    # Filters
    def _mask(self, filters: dict[str, Any], rows: np.ndarray, now: int) -> np.ndarray:
        """Which of `rows` match every filter and are visible at `now`."""
        c = self.cols
        mask = c.created[rows] <= now
        for name, spec in filters.items():
            if name == CURSOR_KEY:
                mask &= self._cursor_mask(spec, rows)
                continue
            if not isinstance(spec, dict) or not spec:
                raise BadRequest(f"Filter '{name}' must be an object of operator to value, got {spec!r}")
            for op, value in spec.items():
                mask &= self._apply(name, op, value, rows, now)
        return mask

    def _apply(self, name: str, op: str, value: Any, rows: np.ndarray, now: int) -> np.ndarray:
        c = self.cols
        if name in ("date", "created"):
            col = (c.ts if name == "date" else c.created)[rows]
            return self._time_op(name, op, value, col, now)
        if name == "service":
            self._expect(name, op, ("eq", "neq"))
            ids = [self._int_value(name, op, v) for v in _as_list(value)]
            hit = np.isin(self._app_ids[c.app[rows]], ids)
            return hit if op == "eq" else ~hit
        if name == "user.username":
            self._expect(name, op, ("eq", "neq", "isset", "isnotset", "startswith"))
            # The filter reads `user.userName`, which a failed sign-in does not carry (its UPN is in failedUserData):
            # those records match isnotset and neq, never eq or startswith.
            named = self._named[c.event[rows]]
            if op in ("isset", "isnotset"):
                return named if op == "isset" else ~named
            if op == "startswith":
                prefixes = tuple(str(v).lower() for v in _as_list(value))
                wanted = [i for i, u in enumerate(self.directory.users) if u.lower().startswith(prefixes)]
                return np.isin(c.user[rows], wanted) & named
            wanted = [self._user_index.get(str(v), -1) for v in _as_list(value)]
            hit = np.isin(c.user[rows], wanted) & named
            return hit if op == "eq" else ~hit
        if name == "ip.address":
            self._expect(name, op, ("eq", "neq", "startswith", "doesnotstartwith", "isset", "isnotset"))
            if op in ("isset", "isnotset"):
                return np.full(len(rows), op == "isset")
            if op in ("startswith", "doesnotstartwith"):
                prefixes = tuple(str(v) for v in _as_list(value))
                wanted = [i for i, ip in enumerate(self.directory.ips) if ip.startswith(prefixes)]
                hit = np.isin(c.ip[rows], wanted)
                return hit if op == "startswith" else ~hit
            wanted = [self._ip_index.get(str(v), -1) for v in _as_list(value)]
            hit = np.isin(c.ip[rows], wanted)
            return hit if op == "eq" else ~hit
        if name == "location.country":
            self._expect(name, op, ("eq", "neq", "isset", "isnotset"))
            if op in ("isset", "isnotset"):
                return np.full(len(rows), op == "isset")
            hit = np.isin(self._ip_cc[c.ip[rows]], [str(v).upper() for v in _as_list(value)])
            return hit if op == "eq" else ~hit
        if name in ("activity.eventType", "activity.eventActionType"):
            self._expect(name, op, ("eq", "neq"))
            hit = np.isin(self._event_names[c.event[rows]], [str(v) for v in _as_list(value)])
            return hit if op == "eq" else ~hit
        if name == "activity.type":
            self._expect(name, op, ("eq",))
            wanted = _as_list(value)
            if not all(isinstance(v, bool) for v in wanted):
                raise BadRequest(f"Filter '{name}' operator 'eq' expects true or false, got {value!r}")
            admin = self._event_admin[c.event[rows]]
            return np.isin(admin, wanted)
        if name == "activity.id":
            self._expect(name, op, ("eq", "neq"))
            hit = np.isin(c.ids[rows], [str(v).encode() for v in _as_list(value)])
            return hit if op == "eq" else ~hit
        if name in _ABSENT:
            return self._absent(name, op, value, len(rows))
        return self._attribute(name, op, value, rows)

    def _attribute(self, name: str, op: str, value: Any, rows: np.ndarray) -> np.ndarray:
        """The filters on what a record carries once per app, event, IP or device."""
        c = self.cols
        if name == "source":
            self._expect(name, op, ("eq", "neq"))
            hit = np.isin(self._app_source[c.app[rows]], [self._int_value(name, op, v) for v in _as_list(value)])
        elif name == "ip.category":
            self._expect(name, op, ("eq", "neq"))
            hit = np.isin(self._ip_category[c.ip[rows]], [self._int_value(name, op, v) for v in _as_list(value)])
        elif name == "device.type":
            self._expect(name, op, ("eq", "neq"))
            hit = np.isin(self._device_type[c.device[rows]], [str(v).lower() for v in _as_list(value)])
        elif name == "actionType":
            self._expect(name, op, ("eq", "neq", "contains", "isset", "isnotset"))
            if op in ("isset", "isnotset"):
                return np.full(len(rows), op == "isset")  # every demo record names its operation
            ops = self._event_ops[c.event[rows]]
            wanted = [str(v).lower() for v in _as_list(value)]
            if op == "contains":
                return np.any([np.char.find(ops, w) >= 0 for w in wanted], axis=0)
            hit = np.isin(ops, wanted)
        else:
            raise BadRequest(f"Unknown filter '{name}'. Known filters: {', '.join(KNOWN_FILTERS)}")
        return hit if op == "eq" else ~hit

    def _absent(self, name: str, op: str, value: Any, n: int) -> np.ndarray:
        """Filters on what no demo record carries: no org unit, no impersonation, no action taken, instance 0."""
        allowed, matches = _ABSENT[name]
        self._expect(name, op, allowed)
        if op in ("isset", "isnotset"):
            return np.full(n, op == "isnotset")
        if name == "activity.impersonated" and not all(isinstance(v, bool) for v in _as_list(value)):
            raise BadRequest(f"Filter '{name}' operator 'eq' expects true or false, got {value!r}")
        hit = any(v == matches for v in _as_list(value))
        return np.full(n, hit if op == "eq" else not hit)

    @staticmethod
    def _expect(name: str, op: str, allowed: tuple[str, ...]) -> None:
        if op not in allowed:
            raise BadRequest(f"Unknown operator '{op}' for filter '{name}'. Allowed: {', '.join(allowed)}")

    @staticmethod
    def _int_value(name: str, op: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"Filter '{name}' operator '{op}' expects integers, got {value!r}")
        return value

    def _time_op(self, name: str, op: str, value: Any, col: np.ndarray, now: int) -> np.ndarray:
        if op == "gte":
            return col >= _as_int(name, op, value)
        if op == "gt":
            return col > _as_int(name, op, value)
        if op == "lte":
            return col <= _as_int(name, op, value)
        if op == "lt":
            return col < _as_int(name, op, value)
        if op == "eq":
            return np.isin(col, [_as_int(name, op, v) for v in _as_list(value)])
        if op in ("gte_ndays", "lte_ndays"):
            bound = now - _as_int(name, op, value) * DAY_MS
            return col >= bound if op == "gte_ndays" else col <= bound
        if op == "range":
            hit = np.zeros(len(col), dtype=bool)
            for interval in _as_list(value):
                if not isinstance(interval, dict) or not {"start", "end"} <= interval.keys():
                    raise BadRequest(f"Filter '{name}' operator 'range' expects {{start, end}} objects, got {value!r}")
                lo, hi = _as_int(name, op, interval["start"]), _as_int(name, op, interval["end"])
                hit |= (col >= lo) & (col <= hi)
            return hit
        raise BadRequest(
            f"Unknown operator '{op}' for filter '{name}'. Allowed: gte, gt, lte, lt, eq, range, gte_ndays, lte_ndays"
        )

    # The cursor for ties larger than a page: (sort field, direction, value, id rank) after which to go on.
    @staticmethod
    def _encode_cursor(field: str, direction: str, value: int, rank: int) -> str:
        raw = f"{field}:{direction}:{value}:{rank}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _cursor_mask(self, token: Any, rows: np.ndarray) -> np.ndarray:
        try:
            padded = str(token) + "=" * (-len(str(token)) % 4)
            field, direction, value, rank = base64.urlsafe_b64decode(padded).decode().split(":")
            value_i, rank_i = int(value), int(rank)
        except ValueError as exc:
            raise BadRequest("Invalid scan cursor; send nextQueryFilters back unchanged") from exc
        col = (self.cols.ts if field == "date" else self.cols.created)[rows]
        r = self.rank[rows]
        if direction == "asc":
            return (col > value_i) | ((col == value_i) & (r > rank_i))
        return (col < value_i) | ((col == value_i) & (r < rank_i))

    # Queries
    def scan(self, filters: dict[str, Any], *, limit: int, sort_field: str, direction: str) -> Page:
        """One scan-mode page: up to `limit` records, trailing ties dropped, and the next filters."""
        now = self.now_ms()
        order = self._order[sort_field]
        keys = self._sorted_key[sort_field]
        lo, hi = self._bounds(filters.get(sort_field), keys)
        rows = self._first_matches(filters, order, lo, hi, direction, limit + 1, now)
        if len(rows) <= limit:
            return Page(self.renderer.render_many(rows), has_next=False)
        page = rows[:limit]
        col = self.cols.ts if sort_field == "date" else self.cols.created
        last = int(col[page[-1]])
        keep = page[col[page] != last]
        next_filters = copy.deepcopy(filters)
        bound = dict(next_filters.get(sort_field) or {})
        bound["gte" if direction == "asc" else "lte"] = last
        next_filters[sort_field] = bound
        if len(keep):
            next_filters.pop(CURSOR_KEY, None)
            page = keep
        else:
            # The whole page shares one value: dropping it would repeat it forever.
            next_filters[CURSOR_KEY] = self._encode_cursor(sort_field, direction, last, int(self.rank[page[-1]]))
        return Page(self.renderer.render_many(page), has_next=True, next_filters=next_filters)

    def list(self, filters: dict[str, Any], *, limit: int, skip: int, sort_field: str, direction: str) -> Page:
        """One list-mode page and the total count of matching records."""
        now = self.now_ms()
        order = self._order[sort_field]
        lo, hi = self._bounds(filters.get(sort_field), self._sorted_key[sort_field])
        candidates = order[lo:hi]
        matched = candidates[self._mask(filters, candidates, now)]
        if direction == "desc":
            matched = matched[::-1]
        page = matched[skip : skip + limit]
        return Page(self.renderer.render_many(page), has_next=skip + limit < len(matched), total=len(matched))

    @staticmethod
    def _bounds(spec: Any, keys: np.ndarray) -> tuple[int, int]:
        """The slice of the sorted keys that a sort-field filter can match, for a fast start."""
        lo, hi = 0, len(keys)
        if not isinstance(spec, dict):
            return lo, hi
        for op, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if op == "gte":
                lo = max(lo, int(np.searchsorted(keys, value, "left")))
            elif op == "gt":
                lo = max(lo, int(np.searchsorted(keys, value, "right")))
            elif op == "lte":
                hi = min(hi, int(np.searchsorted(keys, value, "right")))
            elif op == "lt":
                hi = min(hi, int(np.searchsorted(keys, value, "left")))
        return lo, max(lo, hi)

    def _first_matches(
        self,
        filters: dict[str, Any],
        order: np.ndarray,
        lo: int,
        hi: int,
        direction: str,
        want: int,
        now: int,
    ) -> np.ndarray:
        found: list[np.ndarray] = []
        count, chunk = 0, max(want * 2, 4096)
        pos = lo if direction == "asc" else hi
        while count < want and (pos < hi if direction == "asc" else pos > lo):
            if direction == "asc":
                rows = order[pos : min(hi, pos + chunk)]
                pos += len(rows)
            else:
                rows = order[max(lo, pos - chunk) : pos][::-1]
                pos -= len(rows)
            hit = rows[self._mask(filters, rows, now)]
            found.append(hit)
            count += len(hit)
            chunk *= 2
        if not found:
            # Still validate the filters, so that a bad filter on an empty window is a 400, not a 200.
            self._mask(filters, order[:0], now)
            return order[:0]
        return np.concatenate(found)[:want]
