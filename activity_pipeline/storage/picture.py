"""A picture per tenant: `activities.html` beside the DuckDB file, written with it (`duckdb_views.build_database`).

For each tenant, its last `DAYS` days as bars: the activities stored each day, the failed ones within them (red),
and under each day its completeness: the count check passed (green), failed (red), not checked yet (grey), the day
still in progress (blue) or not stored (an empty box). Each bar's tooltip says the figures. One self-contained
file (inline SVG, no script, nothing fetched), readable in any browser and linked from `activities_duckdb`'s
metadata in the UI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import os
from pathlib import Path
from typing import Any

NAME = "activities.html"
DAYS = 60
_BAR, _GAP, _HEIGHT = 12, 2, 120
_STATES = {
    "passed": ("#2e7d32", "count check passed"),
    "failed": ("#c62828", "count check failed"),
    "unchecked": ("#9e9e9e", "not checked yet"),
    "in progress": ("#1565c0", "day in progress"),
    "missing": ("#ffffff", "not stored"),
}


@dataclasses.dataclass(frozen=True)
class Day:
    tenant: str
    date: dt.date
    rows: int
    failures: int
    state: str


def days(con: Any, today: dt.date, n: int = DAYS) -> list[Day]:
    """Each tenant's last `n` days up to `today`, from the views on `con` (its stored days, their failures and the
    count checks' findings); a day not stored between a tenant's first stored day and today is `missing`."""
    first = today - dt.timedelta(days=n - 1)
    rows = con.execute(
        """
        WITH failures AS (
            SELECT tenant, date, count(*) FILTER (WHERE is_success = false) AS failures
            FROM activities WHERE date >= ? GROUP BY ALL
        )
        SELECT h.tenant, h.date, h.rows_stored, coalesce(f.failures, 0), h.last_check_passed, h.in_progress
        FROM partition_health AS h LEFT JOIN failures AS f ON f.tenant = h.tenant AND f.date = h.date
        WHERE h.date >= ? AND h.rows_stored > 0
        ORDER BY 1, 2""",
        [first, first],
    ).fetchall()
    stored: dict[str, dict[dt.date, Day]] = {}
    for tenant, date, count, failures, passed, in_progress in rows:
        state = "in progress" if in_progress else "unchecked" if passed is None else "passed" if passed else "failed"
        stored.setdefault(tenant, {})[date] = Day(tenant, date, int(count), int(failures), state)
    found = []
    for tenant, held in sorted(stored.items()):
        day = min(held)
        while day <= min(today, max(held)):
            found.append(held.get(day) or Day(tenant, day, 0, 0, "missing"))
            day += dt.timedelta(days=1)
    return found


def render(found: list[Day], today: dt.date) -> str:
    """The page for `found` (`days`)."""
    by_tenant: dict[str, list[Day]] = {}
    for day in found:
        by_tenant.setdefault(day.tenant, []).append(day)
    sections = [_section(tenant, tenant_days) for tenant, tenant_days in by_tenant.items()]
    legend = " ".join(
        f'<span class="key"><svg width="10" height="10"><rect width="10" height="10" fill="{colour}" '
        f'stroke="#555"/></svg> {html.escape(text)}</span>'
        for colour, text in _STATES.values()
    )
    body = "\n".join(sections) or "<p>No day is stored yet.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Activities per tenant</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.1em; margin-top: 2em; }}
.summary {{ color: #555; }} .key {{ margin-right: 1.5em; }}
.bar {{ fill: #90a4ae; }} .failures {{ fill: #c62828; }}
</style></head><body>
<h1>Activities per tenant, the last {DAYS} days to {today} (UTC)</h1>
<p>Bars: activities stored each day; red within them: failed activities (<code>is_success = false</code>). Below
each day, its completeness: {legend}</p>
{body}
</body></html>
"""


def _section(tenant: str, tenant_days: list[Day]) -> str:
    peak = max((d.rows for d in tenant_days), default=0) or 1
    parts = []
    for k, day in enumerate(tenant_days):
        x = k * (_BAR + _GAP)
        height = round(_HEIGHT * day.rows / peak)
        failed = round(_HEIGHT * day.failures / peak)
        colour, said = _STATES[day.state]
        title = html.escape(f"{day.date}: {day.rows:,} activities, {day.failures:,} failed; {said}")
        parts.append(
            f'<g class="day" data-date="{day.date}" data-rows="{day.rows}" data-state="{day.state}"><title>{title}'
            f'</title><rect class="bar" x="{x}" y="{_HEIGHT - height}" width="{_BAR}" height="{height}"/>'
            f'<rect class="failures" x="{x}" y="{_HEIGHT - failed}" width="{_BAR}" height="{failed}"/>'
            f'<rect class="state" x="{x}" y="{_HEIGHT + 4}" width="{_BAR}" height="{_BAR}" fill="{colour}" '
            'stroke="#555"/></g>'
        )
    width = max(160, len(tenant_days) * (_BAR + _GAP))
    axis = _HEIGHT + _BAR + 18
    if tenant_days:
        parts.append(f'<text x="0" y="{axis}" font-size="10">{tenant_days[0].date}</text>')
        if len(tenant_days) > 12:
            parts.append(f'<text x="{width}" y="{axis}" font-size="10" text-anchor="end">{tenant_days[-1].date}</text>')
    counts: dict[str, int] = {}
    for day in tenant_days:
        counts[day.state] = counts.get(day.state, 0) + 1
    summary = "; ".join(f"{_STATES[state][1]}: {n}" for state, n in counts.items())
    total = sum(d.rows for d in tenant_days)
    name = html.escape(tenant)
    n = len(tenant_days)
    return (
        f'<section class="tenant" data-tenant="{name}"><h2>{name}</h2>'
        f'<p class="summary">{total:,} activities over {n} day{"s" if n != 1 else ""} '
        f"({html.escape(summary)})</p>"
        f'<svg width="{width}" height="{axis + 4}" role="img" aria-label="{name}: activities per day">'
        + "".join(parts)
        + "</svg></section>"
    )


def write(con: Any, folder: Path, today: dt.date | None = None) -> Path:
    """Write the page into `folder` from the views on `con`, replacing the last one whole; returns its path."""
    today = today or dt.datetime.now(dt.UTC).date()
    target = folder / NAME
    tmp = folder / f".{NAME}.{os.getpid()}.tmp"
    tmp.write_text(render(days(con, today), today))
    os.replace(tmp, target)
    return target
