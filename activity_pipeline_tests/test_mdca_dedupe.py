"""Duplicates, from overlapping or replayed pages, are dropped once and counted."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from activity_pipeline.demo_tenant import DemoTenant
from activity_pipeline.demo_tenant.tenant import Page as ServerPage
from activity_pipeline.mdca import DigestSet
from activity_pipeline.mdca.dedupe import RecentIds
from activity_pipeline_testing.helpers import (
    ALL_ARRIVED,
    DAYS,
    STRESS_DAY,
    OverlappingPages,
    broken,
    client_for,
    scan_day,
    serve,
)


def test_duplicates_across_pages_are_dropped_and_counted(tenant):
    with broken(OverlappingPages, tenant) as server:
        ids, scanner = scan_day(client_for(server.url), DAYS[0])
    assert sorted(ids) == sorted(tenant.truth_ids(DAYS[0]))
    assert scanner.stats.duplicates_dropped > 0


def test_a_replayed_page_adds_nothing_the_second_time():
    seen = DigestSet()
    page = [f"id-{k}" for k in range(5000)]
    assert seen.add_new(page).all()
    assert not seen.add_new(page).any()
    assert len(seen) == 5000


def test_ids_repeated_within_one_page_count_once():
    assert DigestSet().add_new(["a", "b", "a", "a"]).tolist() == [True, True, False, False]


def test_runs_stop_merging_at_their_cap_and_lookups_still_find_every_id():
    seen = DigestSet()
    seen.MAX_RUN = 1000  # small runs, so that several stay apart
    for start in range(0, 6000, 500):
        assert seen.add_new([f"id-{k}" for k in range(start, start + 500)]).all()
    assert len(seen._runs) > 1
    assert not seen.add_new([f"id-{k}" for k in range(0, 6000, 7)]).any()


class ReplaysAPage(DemoTenant):
    """A server that sends every third page again, in front of the page after it."""

    def scan(self, filters: dict[str, Any], **kw: Any) -> ServerPage:
        page = super().scan(filters, **kw)
        with self.lock:
            self.pages = getattr(self, "pages", 0) + 1
            replay, self.previous = getattr(self, "previous", None), None
            if self.pages % 3 == 0 and page.has_next:
                self.previous = list(page.records)
        if replay:
            page = dataclasses.replace(page, records=replay + page.records)
        return page


def test_a_slices_recent_pages_find_a_replay_an_overlap_and_a_tie_spanning_pages():
    seen = RecentIds()
    assert seen.add_new([f"a{k}" for k in range(5000)], [10] * 5000).all()  # a tie on one timestamp ...
    assert seen.add_new([f"a{k}" for k in range(4990, 6000)], [10] * 1010).tolist() == [False] * 10 + [True] * 1000
    assert not seen.add_new([f"a{k}" for k in range(4990, 6000)], [10] * 1010).any(), "... and its page replayed"
    page = [f"b{k}" for k in range(100)]
    assert seen.add_new(page, list(range(11, 111))).all()
    assert not seen.add_new(page[50:], list(range(61, 111))).any(), "an overlap with the page before"


def test_a_slices_recent_pages_hold_a_few_pages_however_long_the_day():
    seen = RecentIds()
    held = []
    for p in range(400):  # 2,000,000 records, 5,000 a page, each page starting where the last one ended
        ids = [f"r{p}-{k}" for k in range(5000)]
        assert seen.add_new(ids, [p * 1000 + k // 5 for k in range(5000)]).all()
        held.append(len(seen))
    assert max(held) <= RecentIds.KEEP_PAGES * 5000, "a few pages, not the day"


def test_a_replayed_page_and_a_tie_across_a_page_boundary_are_each_stored_once(tenant, server):
    """The stress day: a tie of 6,000 records on one timestamp crosses a page boundary, and every third page
    is served twice."""
    replaying = ReplaysAPage(tenant.spec)
    replaying.lock = threading.Lock()
    replaying.set_now(ALL_ARRIVED)
    with serve(replaying) as replay_server:
        ids, scanner = scan_day(client_for(replay_server.url), STRESS_DAY)
    assert len(ids) == len(set(ids)) and set(ids) == tenant.truth_ids(STRESS_DAY)
    assert scanner.stats.duplicates_dropped >= 5000, "replayed pages were met and dropped"
    assert 0 < scanner.stats.ids_held_peak < len(ids), "the ids held are bounded by pages, not the day"
