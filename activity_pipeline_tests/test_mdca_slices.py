"""Slices: how many pay off, and how an idle worker takes half of what the busiest has left."""

from __future__ import annotations

import threading

import pytest

from activity_pipeline.mdca import PAGE_LIMIT, choose_slices
from activity_pipeline.mdca.slices import MIN_SPLIT_PAGES, Slice, WorkQueue


def test_an_idle_worker_takes_half_of_what_is_left_after_the_page_in_flight():
    stop = threading.Event()
    work = WorkQueue(0, 1_000_000, 2)
    busy, quiet = work.take(stop), work.take(stop)
    assert (busy.start, busy.end, quiet.start, quiet.end) == (0, 500_000, 500_000, 1_000_000)
    # A full page over the first 10,000 ms: one record every 2 ms. Its worker now fetches the next page,
    # which likely reaches 20,000 ms; 480,000 ms (240,000 records) are left after it.
    work.advance(busy, range(0, 10_000, 2))
    work.advance(quiet, [600_000])
    work.finish(quiet)
    assert busy.ahead() == 19_998
    stolen = work.take(stop)
    assert stolen is not None
    assert (stolen.start, stolen.end) == (19_998 + (500_000 - 19_998) // 2, 500_000)
    assert busy.end == stolen.start
    # What is left after the page in flight decides, not the whole remainder: 1.2 pages more is not split.
    # One record every 2 ms up to 10,000 ms; the page in flight likely ends at 20,000 ms, and 6,000 follow.
    tail = Slice(9, 0, 20_000 + 2 * int(1.2 * PAGE_LIMIT), 0)
    tail.kept, tail.pages, tail.progress, tail.density = PAGE_LIMIT, 1, 10_000, 0.5
    assert tail.remaining_estimate() == pytest.approx(1.2 * PAGE_LIMIT, abs=1)
    assert tail.remaining_estimate() < MIN_SPLIT_PAGES * PAGE_LIMIT


@pytest.mark.parametrize(
    ("total", "rpm", "latency", "expected"),
    [
        (1_000_000, 30, 0.3, 1),
        (1_000_000, 30, 5.0, 3),
        (1_000_000, 0, 0.3, 4),
        (1_000_000, 0, 0.01, 2),
        (4_000, 0, 0.3, 1),
        (12_000, 0, 1, 3),
    ],
)
def test_choose_slices_pays_off_only_when_latency_dominates(total, rpm, latency, expected):
    assert choose_slices(total, rpm, latency) == expected
