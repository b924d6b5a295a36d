"""The debounce arithmetic on given times: quiet period, ceiling, one call per burst."""

from __future__ import annotations

import threading

import pytest

from sync.daemon.debounce import Burst, Debounce


def test_one_note_is_due_after_the_quiet_period() -> None:
    burst = Burst(quiet_s=0.3, max_s=1.0)
    assert burst.wait_s(10.0) is None
    assert not burst.take(10.0)
    burst.note(10.0)
    assert burst.wait_s(10.0) == pytest.approx(0.3)
    assert not burst.take(10.29)
    assert burst.take(10.3)
    assert not burst.take(10.4)  # taken: the burst is over
    assert burst.wait_s(10.4) is None


def test_notes_in_quick_succession_push_the_deadline_back() -> None:
    burst = Burst(quiet_s=0.3, max_s=1.0)
    for at in (0.0, 0.1, 0.2, 0.3):
        burst.note(at)
        assert not burst.take(at)
    assert not burst.take(0.59)
    assert burst.take(0.6)  # 0.3 s after the last note


def test_a_continuous_stream_is_due_at_most_max_s_after_its_first_note() -> None:
    burst = Burst(quiet_s=0.3, max_s=1.0)
    fired = []
    at = 0.0
    while at < 3.05:  # a note every 20 ms for 3 s: never quiet
        if burst.take(at):
            fired.append(round(at, 2))
        burst.note(at)
        at += 0.02
    assert fired == [1.0, 2.0, 3.0]  # each burst ends 1 s after its first note


def test_a_note_after_a_due_burst_starts_a_new_one() -> None:
    burst = Burst(quiet_s=0.3, max_s=1.0)
    burst.note(0.0)
    assert burst.take(0.3)
    burst.note(5.0)
    assert burst.first == 5.0
    assert burst.wait_s(5.0) == pytest.approx(0.3)


def test_debounce_calls_fire_once_for_a_burst_of_notes() -> None:
    fired = threading.Event()
    calls: list[int] = []

    def fire() -> None:
        calls.append(1)
        fired.set()

    debounce = Debounce(fire, quiet_s=0.05, max_s=10.0)
    debounce.start()
    try:
        for _ in range(100):
            debounce.note()
        assert fired.wait(5)
    finally:
        debounce.close()
    assert calls == [1]
