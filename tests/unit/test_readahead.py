"""`sync.pull.readahead.ReadAhead`: order, errors after the items before them, early exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sync.pull.readahead import ReadAhead


def test_items_arrive_in_order_prepared_on_the_producer_thread() -> None:
    threads: set[str] = set()

    def prepare(item: int) -> tuple[int, str]:
        threads.add(threading.current_thread().name)
        return item, threading.current_thread().name

    with ReadAhead(iter(range(50)), depth=2, name="ahead", prepare=prepare) as ahead:
        got = list(ahead)
    assert [item for item, _ in got] == list(range(50))
    assert threads == {"ahead"}


def test_an_error_arrives_after_every_item_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise LookupError("walk failed")

    seen: list[int] = []
    with (
        pytest.raises(LookupError, match="walk failed"),
        ReadAhead(source(), depth=5, name="ahead", prepare=lambda x: x) as ahead,
    ):
        seen.extend(ahead)
    assert seen == [1, 2]


def test_the_producer_stays_at_most_depth_items_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    with ReadAhead(source(), depth=2, name="ahead", prepare=lambda x: x) as ahead:
        items = iter(ahead)
        assert next(items) == 0
        time.sleep(0.3)
        # one taken, two queued, one held by the producer waiting for room
        assert len(produced) <= 4


def test_leaving_early_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    with ReadAhead(source(), depth=2, name="ahead", prepare=lambda x: x) as ahead:
        for item in ahead:
            if item == 3:
                break
    assert closed.wait(2)
    assert not any(t.name == "ahead" for t in threading.enumerate())


def test_a_failing_consumer_waits_for_the_producer_and_discards_what_it_prepared() -> None:
    release = threading.Event()
    prepared: list[int] = []
    discarded: list[int] = []

    def source() -> Iterator[int]:
        yield 1
        yield 2
        yield 3
        release.wait(5)  # a request still in flight when the consumer fails
        yield 4
        yield 5

    def prepare(item: int) -> int:
        prepared.append(item)
        return item

    def consume() -> None:
        with ReadAhead(
            source(), depth=5, name="ahead", prepare=prepare, discard=discarded.append
        ) as ahead:
            for item in ahead:
                if item == 1:
                    time.sleep(0.2)  # 2 and 3 are queued by now
                    threading.Timer(0.3, release.set).start()
                    raise ValueError("store failed")

    with pytest.raises(ValueError, match="store failed"):
        consume()
    assert release.is_set()  # the block waited for the producer's last request
    assert not any(t.name == "ahead" for t in threading.enumerate())
    assert prepared == [1, 2, 3]  # nothing prepared after the stop (4 was read, not prepared)
    assert sorted(discarded) == [2, 3]


def test_an_interrupt_leaves_without_waiting() -> None:
    stuck = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        stuck.wait(10)
        yield 2

    def interrupted() -> None:
        with ReadAhead(source(), depth=1, name="stuck", prepare=lambda x: x) as ahead:
            for _ in ahead:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert any(t.name == "stuck" for t in threading.enumerate())  # left without waiting
    stuck.set()
