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
    ticks.now += 269
    assert not memo.events_due()
    ticks.now += 1  # 10 % early: the read began a moment into its poll
    assert memo.events_due()
    memo.events_done(memo.now())
    memo.events_soon()
    assert memo.events_due()


def test_an_interval_of_zero_reads_events_on_every_poll() -> None:
    memo = PollMemo(0, clock=Ticks())
    memo.events_done(memo.now())
    assert memo.events_due()


def test_a_read_that_began_into_its_poll_is_due_again_three_polls_later() -> None:
    """Polls start every 2 s; the events read began 0.6 s into its poll (after the contacts
    page): the poll 6 s after that poll's start reads them, not the one after it."""
    ticks = Ticks()
    memo = PollMemo(6, clock=ticks)
    poll_start = ticks.now
    ticks.now += 0.6
    memo.events_done(memo.now())
    due = []
    for n in (1, 2, 3):
        ticks.now = poll_start + 2 * n
        due.append(memo.events_due())
    assert due == [False, False, True]
