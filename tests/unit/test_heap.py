"""`sync.heap`: the collector threshold raised while any block runs, restored after the last;
glibc's malloc arenas capped."""

from __future__ import annotations

import gc
import threading

import pytest

from sync.heap import fewer_collections, fewer_malloc_arenas


def test_threshold_raised_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    with fewer_collections(123_456):
        assert gc.get_threshold() == (123_456, *before[1:])
    assert gc.get_threshold() == before


def test_nested_and_overlapping_blocks_restore_only_at_the_end() -> None:
    before = gc.get_threshold()
    inner_started, outer_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def other_thread() -> None:
        with fewer_collections(50_000):
            inner_started.set()
            outer_done.wait(5)
            seen.append(gc.get_threshold()[0])

    thread = threading.Thread(target=other_thread)
    with fewer_collections(50_000):
        thread.start()
        inner_started.wait(5)
    outer_done.set()
    thread.join(5)
    assert seen == [50_000]  # the first block's end did not undo the second's
    assert gc.get_threshold() == before


def test_restored_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="boom"), fewer_collections():
        raise ValueError("boom")
    assert gc.get_threshold() == before


def test_never_lowers_a_threshold_set_higher_elsewhere() -> None:
    before = gc.get_threshold()
    gc.set_threshold(1_000_000, *before[1:])
    try:
        with fewer_collections(50_000):
            assert gc.get_threshold()[0] == 1_000_000
    finally:
        gc.set_threshold(*before)


def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    """glibc (this image, CI): capped; an operator's MALLOC_ARENA_MAX is left to glibc."""
    assert fewer_malloc_arenas() is True


def test_an_operators_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert fewer_malloc_arenas() is False
