"""The controllable clock and the fault schedule."""

from __future__ import annotations

import time

import pytest

from sync.emulator.clock import EmulatorClock
from sync.emulator.faults import FaultBook, FaultRule


def test_frozen_clock_starts_exactly_and_moves_only_when_told() -> None:
    clock = EmulatorClock(1_000_000, frozen=True)
    assert clock.now() == 1_000_000
    clock.advance(2.5)
    assert clock.now_s() == 1_000_002
    clock.set(5)
    assert clock.now() == 5


def test_running_clock_follows_wall_time_from_its_start() -> None:
    clock = EmulatorClock(1_000_000)
    first = clock.now()
    time.sleep(0.01)
    assert clock.now() > first
    clock.freeze()
    frozen = clock.now()
    time.sleep(0.01)
    assert clock.now() == frozen
    clock.unfreeze()
    assert frozen <= clock.now() < frozen + 1


def test_fault_rules_match_method_path_and_page() -> None:
    rule = FaultRule(kind="empty_page", method="get", path="/api/v4/contacts", min_page=2)
    assert rule.matches("GET", "/api/v4/contacts", 2)
    assert not rule.matches("GET", "/api/v4/contacts", 1)
    assert not rule.matches("POST", "/api/v4/contacts", 2)
    assert not rule.matches("GET", "/api/v4/events", 2)
    glob = FaultRule(kind="error", path="/api/v4/contacts*")
    assert glob.matches("PATCH", "/api/v4/contacts/5", None)


def test_fault_book_counts_skip_and_times() -> None:
    book = FaultBook()
    book.add(FaultRule(kind="error", skip=1, times=2))
    picks = [book.pick("GET", "/x", None) is not None for _ in range(5)]
    assert picks == [False, True, True, False, False]
    (listed,) = book.list()
    assert (listed["seen"], listed["fired"]) == (3, 2)


def test_fault_from_json_refuses_unknown_keys_and_kinds() -> None:
    assert FaultRule.from_json({"kind": "reset", "times": None}).times is None
    with pytest.raises(ValueError, match="unknown fault keys"):
        FaultRule.from_json({"kind": "reset", "oops": 1})
    with pytest.raises(ValueError, match="kind"):
        FaultRule.from_json({"kind": "explode"})
