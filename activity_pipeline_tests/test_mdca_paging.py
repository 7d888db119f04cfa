"""Paging by the server's cursor: it goes back as sent, and a cursor that does not move stops the scan."""

from __future__ import annotations

import pytest

from activity_pipeline.demo_tenant.data import DAY_MS, day_start_ms
from activity_pipeline.mdca import ScanStalledError, ServerCursor, window_filters
from activity_pipeline_testing.helpers import DAYS, RepeatingCursor, broken, client_for, scan_day


def test_a_cursor_that_does_not_move_is_an_error_not_a_loop(tenant):
    with broken(RepeatingCursor, tenant) as server:
        with pytest.raises(ScanStalledError, match="same nextQueryFilters"):
            scan_day(client_for(server.url), DAYS[0])
        assert server.stats.requests <= 2


def test_the_cursor_follows_next_query_filters_to_the_last_page(server, tenant):
    start = day_start_ms(DAYS[0])
    cursor = ServerCursor(client_for(server.url), window_filters(start, start + DAY_MS), label="paging")
    seen = len(cursor.fetch()[0].data)
    while cursor.has_next:
        cursor.advance()
        seen += len(cursor.fetch()[0].data)
    assert cursor.pages >= 3
    # Pages end on whole timestamps, so following the cursor alone lists the day exactly once.
    assert seen == tenant.truth_count(DAYS[0])


def test_advancing_past_a_page_without_next_filters_is_an_error(server):
    start = day_start_ms(DAYS[0])
    # One page is the whole window: the server sends no nextQueryFilters with it.
    cursor = ServerCursor(client_for(server.url), window_filters(start, start + 1000), label="tiny")
    cursor.fetch()
    with pytest.raises(ScanStalledError, match="sent no nextQueryFilters"):
        cursor.advance()
