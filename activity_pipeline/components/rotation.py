"""Which tenants a sensor's tick looks at, when there are hundreds.

A sensor's evaluation must end within Dagster's timeout (60 s by default), and looking at a tenant may cost a few
requests to its API. So each tick looks at the tenants not looked at for `every` seconds, least recently first,
for at most `budget` seconds; the cursor keeps when each one was last looked at. One tenant that fails (a refused
token, an outage) is logged and passed over: it never stops the others.

>>> r = Rotation(None, ["a", "b"], every=3600, budget=30, now=1000.0)
>>> [t for t in r]
['a', 'b']
>>> Rotation(r.cursor(), ["a", "b", "c"], every=3600, budget=30, now=2000.0).due
['c']
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence


class Rotation:
    def __init__(self, cursor: str | None, tenants: Sequence[str], *, every: float, budget: float, now: float) -> None:
        try:
            seen = {str(k): float(v) for k, v in json.loads(cursor).items()} if cursor else {}
        except (ValueError, AttributeError, TypeError):
            seen = {}  # a cursor of an older release: start the rotation again
        self.seen = {t: seen[t] for t in tenants if t in seen}
        self.now = now
        self.budget = budget
        # Least recently looked at first; never looked at before all.
        self.due = sorted(
            (t for t in tenants if now - self.seen.get(t, -1e18) >= every), key=lambda t: self.seen.get(t, -1e18)
        )
        self.looked: list[str] = []

    def __iter__(self) -> Iterator[str]:
        started = time.monotonic()
        for tenant in self.due:
            if self.looked and time.monotonic() - started > self.budget:
                return
            self.seen[tenant] = self.now
            self.looked.append(tenant)
            yield tenant

    @property
    def left(self) -> int:
        """Tenants due that this tick did not reach: the next tick starts with them."""
        return len(self.due) - len(self.looked)

    def cursor(self) -> str:
        return json.dumps(self.seen, sort_keys=True)
