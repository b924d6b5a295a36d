"""The daemon's memory between polls, on a clock the test moves."""

from __future__ import annotations

from sync.pull.memo import PollMemo


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_filter_flag_is_remembered_for_an_hour() -> None:
    ticks = Ticks()
    memo = PollMemo(300, clock=ticks)
    assert memo.cached_filters() is None  # never read: read it
    memo.remember_filters(False)
    ticks.now += 3599
    assert memo.cached_filters() is False
    ticks.now += 1
    assert memo.cached_filters() is None  # an hour old: read it again


def test_events_are_due_first_then_every_interval_and_at_once_when_asked() -> None:
    ticks = Ticks()
    memo = PollMemo(300, clock=ticks)
    assert memo.events_due()
    memo.events_done(memo.now())
    ticks.now += 299
    assert not memo.events_due()
    ticks.now += 1
    assert memo.events_due()
    memo.events_done(memo.now())
    memo.events_soon()
    assert memo.events_due()


def test_an_interval_of_zero_reads_events_on_every_poll() -> None:
    memo = PollMemo(0, clock=Ticks())
    memo.events_done(memo.now())
    assert memo.events_due()
