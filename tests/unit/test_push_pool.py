"""The read-then-write scheduler of push's updates (threads, no I/O)."""

from __future__ import annotations

import threading

import pytest

from sync.push.pool import ReadThenWrite


def test_every_batch_of_every_chunk_is_written_once() -> None:
    written: list[int] = []
    lock = threading.Lock()

    def write(batch: int) -> None:
        with lock:
            written.append(batch)

    work = ReadThenWrite(list(range(20)), lambda c: [c * 10 + i for i in range(3)], write)
    work.run(4)
    assert sorted(written) == sorted(c * 10 + i for c in range(20) for i in range(3))


def test_ready_writes_go_before_new_reads() -> None:
    events: list[str] = []
    work = ReadThenWrite([1, 2], lambda c: [f"{c}a", f"{c}b"], events.append)
    original = work._read

    def read(chunk: int) -> list[str]:
        events.append(f"read {chunk}")
        return original(chunk)

    work._read = read  # type: ignore[method-assign]
    work.run(1)
    assert events == ["read 1", "1a", "1b", "read 2", "2a", "2b"]


def test_the_first_failure_stops_the_rest_and_is_raised() -> None:
    written: list[int] = []

    def write(batch: int) -> None:
        if batch == 3:
            raise RuntimeError("boom")
        written.append(batch)

    work = ReadThenWrite([0, 1, 2, 3, 4, 5], lambda c: [c], write)
    with pytest.raises(RuntimeError, match="boom"):
        work.run(1)
    assert written == [0, 1, 2]
