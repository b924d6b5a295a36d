"""Where PostgreSQL's clock stands on ours (`sync.db.budget.ClockOffset`): pure arithmetic on
the moments a read began and ended."""

from __future__ import annotations

import pytest

from sync.db.budget import ClockOffset


def test_the_clock_offset_keeps_the_tightest_reading_until_it_ages() -> None:
    clock = ClockOffset()
    assert clock.observe(0.0, 100.0, 0.002) == pytest.approx(-99.999)
    # a reading stretched by a 0.6 s round trip agrees within its bound: the tight one stays
    assert clock.observe(10.0, 110.0, 10.6) == pytest.approx(-99.999)
    # a tighter one replaces it
    assert clock.observe(20.0, 120.0, 20.0006) == pytest.approx(-99.9997)
    # much later the old one may have drifted more than a wider new one is off
    assert clock.observe(1000.0, 1100.0, 1000.1) == pytest.approx(-99.95)


def test_a_stepped_clock_is_followed_at_once() -> None:
    clock = ClockOffset()
    clock.observe(0.0, 100.0, 0.002)
    # PostgreSQL's clock stepped 5 s: no bound covers it, the new reading is taken as it is
    assert clock.observe(10.0, 115.0, 10.6) == pytest.approx(-104.7)
