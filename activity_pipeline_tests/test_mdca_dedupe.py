"""Duplicates, from overlapping or replayed pages, are dropped once and counted."""

from __future__ import annotations

from activity_pipeline.mdca import DigestSet
from activity_pipeline_tests.helpers import DAYS, OverlappingPages, broken, client_for, scan_day


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
