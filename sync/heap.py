"""Garbage-collector settings for bulk work.

A pull parses every page into about 100,000 small dicts and lists, none of them in a reference
cycle: reference counting frees them all. CPython's cyclic collector does not know that. At its
default threshold (a young collection every 700 new containers) it runs a full collection, over
every object the process holds, every few pages; measured with `bench/pull_full.py`, that was
about 40% of the pull process's CPU and cut the ingest rate from about 7,700 to 5,600 contacts/s.

`fewer_collections()` raises the young-generation threshold while bulk work runs, and puts the
old one back when the last such block ends (blocks may nest or overlap across threads). Cycles
are still collected, only less often (older generations too, about 70 times less often). A
page's parse still crosses the threshold (the collector counts containers allocated minus
freed; a page is ~100,000): a 100,000-contact resync runs about 240 young collections, ~1 s of
the pull's 12 CPU seconds (`gc.callbacks`). 200,000 would save that second but held more
cyclic garbage between collections: a 1,000,000-contact resync peaked at 159 MB, over the
150 MB target (143 MB at 50,000). The
threshold counts containers, not bytes: a cycle that holds a large buffer keeps it until the next
collection, so code on the hot path must not leave big objects in cycles (see how
`sync.amo.session` reads response bodies).

`long_lived()` runs a command's imports without the collector, then exempts what they built from
every later collection (`gc.freeze`, as the emulator does with its seeded heap): ~70,000 objects
(modules, classes, functions, SQLAlchemy's statements) that live as long as the process. The
collector scanned them ~160 times while they imported (13 middle and one full collection among
them) and would again in every middle and full collection after, finding nothing to free. Only
cyclic garbage present when the block ends is never collected (refcounting frees the rest).

`fewer_malloc_arenas()` caps glibc's malloc arenas. A pull parses pages on its fetch threads and
frees them on its sink threads; glibc gives each contending thread an arena of its own (up to
8 per core) and keeps what is freed in each, so the process's resident memory crept up with the
account's size although Python's own heap stayed at 25-40 MB (tracemalloc): 161 MB at the end
of a 1,000,000-contact resync, 149 MB at 300,000. With two arenas: 136 MB at 300,000, the same
speed (`bench/pull_full.py`). The same as `MALLOC_ARENA_MAX=2` in the environment, which wins
when an operator sets it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 50_000  # new containers between young collections (CPython's default: 700)
M_ARENA_MAX = -8  # glibc's `mallopt` parameter number (malloc.h)
MALLOC_ARENAS = 2


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


@contextmanager
def long_lived() -> Iterator[None]:
    """Run the block (imports) with the cyclic collector off, then freeze what is tracked; a
    block inside another, or one entered while something else turned the collector off,
    leaves it as it found it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        gc.enable()


def fewer_malloc_arenas(limit: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `limit` (call it before the threads start); False where
    there is no glibc or the operator set `MALLOC_ARENA_MAX` themselves."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, limit))
