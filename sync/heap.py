"""Garbage-collector settings for bulk work.

A pull parses every page into about 100,000 small dicts and lists, none of them in a reference
cycle: reference counting frees them all. CPython's cyclic collector does not know that. At its
default threshold (a young collection every 700 new containers) it runs a full collection, over
every object the process holds, every few pages; measured with `bench/pull_full.py`, that was
about 40% of the pull process's CPU and cut the ingest rate from about 7,700 to 5,600 contacts/s.

`fewer_collections()` raises the young-generation threshold while bulk work runs, and puts the
old one back when the last such block ends (blocks may nest or overlap across threads). Cycles
are still collected, only less often (older generations too, about 70 times less often). The
threshold counts containers, not bytes: a cycle that holds a large buffer keeps it until the next
collection, so code on the hot path must not leave big objects in cycles (see how
`sync.amo.session` reads response bodies).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 50_000  # new containers between young collections (CPython's default: 700)


class _Relaxation:
    """The process-wide count of blocks running, and the threshold to put back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.saved: tuple[int, int, int] = gc.get_threshold()

    def enter(self, threshold: int) -> None:
        with self.lock:
            if self.active == 0:
                self.saved = gc.get_threshold()
                gc.set_threshold(max(threshold, self.saved[0]), *self.saved[1:])
            self.active += 1

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0:
                gc.set_threshold(*self.saved)


_relaxation = _Relaxation()


@contextmanager
def fewer_collections(threshold: int = BULK_THRESHOLD) -> Iterator[None]:
    """Run the block with the cyclic collector's young threshold raised to `threshold`."""
    _relaxation.enter(threshold)
    try:
        yield
    finally:
        _relaxation.leave()
