"""The service's 180 days, with a pinned clock: which days can be scanned, and which are about to be lost."""

from __future__ import annotations

import datetime as dt

import pytest

from activity_pipeline.service_window import OutsideServiceWindowError, at_risk, check_scannable, first_scannable_day

TODAY = dt.date(2026, 11, 26)  # pinned
CLIFF = first_scannable_day(TODAY)  # 2026-05-30: its last day at the service


def days_from(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=k) for k in range(n)]


def test_the_oldest_retained_day_is_180_days_back():
    assert dt.date(2026, 5, 30) == CLIFF


def test_a_day_past_retention_is_refused_with_the_reason():
    now = dt.datetime.combine(TODAY, dt.time(2, 15), dt.UTC)
    check_scannable(CLIFF, now)  # still there, just
    with pytest.raises(OutsideServiceWindowError, match="keeps activities for 180 days"):
        check_scannable(CLIFF - dt.timedelta(days=1), now)


def test_missing_days_within_14_days_of_the_cliff_are_at_risk_oldest_first():
    days = days_from(CLIFF - dt.timedelta(days=5), 60)  # some already lost, some safe
    risky = at_risk(days, today=TODAY, stored=[])
    assert [d.day for d in risky] == days_from(CLIFF, 15)
    assert [d.days_left for d in risky] == list(range(15))
    assert {d.state for d in risky} == {"missing"}


def test_stored_days_are_safe_and_incomplete_ones_are_at_risk():
    days = days_from(CLIFF, 30)
    risky = at_risk(days, today=TODAY, stored=days, incomplete=[days[3], days[20]])
    assert [(d.day, d.state) for d in risky] == [(days[3], "incomplete")], "days[20] is not yet near the cliff"


def test_the_margin_is_configurable():
    days = days_from(CLIFF, 30)
    assert len(at_risk(days, today=TODAY, stored=[], margin_days=2)) == 3
