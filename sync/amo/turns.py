"""Which waiting request takes the rate budget's next start (`sync.amo.ratelimit`).

A caller decides what to send when it submits a request, but the request leaves only when the
budget has a start for it, often several starts later, and what the caller needs first can
change meanwhile. The thread that sends a request says so around its call:

    with limiter.turns.behind(lambda: pages_waiting() < 8):   # while true, others go first
        client.iter_chats(...)
    with limiter.turns.unless(no_longer):   # given up if `no_longer` is set before it starts
        client.get(...)                     # raises Withdrawn; nothing was sent

A request **behind** (its condition is asked again each time a start is free, so it can come
to the front while it waits) takes a start only when every other request waiting is behind
too, or once the start has been free for `YIELD_SHARE` of a step (the one ahead had its
chance: a start not taken soon is lost, `ratelimit.LATE_SHARE`). A request **withdrawn** never
takes a start: the next one waiting takes it, so the budget loses nothing. Conditions are
called with the limiter's lock held: they must be quick and take no lock of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

YIELD_SHARE = 0.15  # of a step: how long a free start waits for a request ahead (< LATE_SHARE)

Condition = Callable[[], bool]


def _never() -> bool:
    return False


class Withdrawn(Exception):
    """A request given up before it started: its answer is no longer needed."""


class Turns:
    """What each thread's requests wish while they wait (thread-local), and who waits."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._waiting: dict[object, Condition] = {}  # the limiter's lock held

    @contextmanager
    def behind(self, while_: Condition | None = None) -> Iterator[None]:
        """This thread's requests let the others go first (while `while_()` is true)."""
        was = getattr(self._local, "behind", None)
        self._local.behind = while_ or (lambda: True)
        try:
            yield
        finally:
            self._local.behind = was

    @contextmanager
    def unless(self, withdrawn: threading.Event) -> Iterator[None]:
        """This thread's requests are given up (`Withdrawn`) if `withdrawn` is set before they
        start."""
        was = getattr(self._local, "withdrawn", None)
        self._local.withdrawn = withdrawn
        try:
            yield
        finally:
            self._local.withdrawn = was

    # --- for the limiter (its lock held) --------------------------------------------------------

    def enter(self) -> object:
        """The calling thread's request begins to wait; returns its place."""
        place = object()
        self._waiting[place] = getattr(self._local, "behind", None) or _never
        return place

    def leave(self, place: object) -> None:
        self._waiting.pop(place, None)

    def check(self) -> None:
        """Raise `Withdrawn` if this thread's request is no longer wanted."""
        withdrawn = getattr(self._local, "withdrawn", None)
        if withdrawn is not None and withdrawn.is_set():
            raise Withdrawn("the request was given up before it started")

    def __len__(self) -> int:
        """Requests waiting for a start (the limiter's lock held)."""
        return len(self._waiting)

    def ahead(self) -> int:
        """Requests waiting that are not behind now."""
        return sum(1 for behind in list(self._waiting.values()) if not behind())

    def yields(self, place: object, free_for: float, step: float) -> float:
        """How long the request at `place` should leave a free start to one ahead of it (0:
        take it)."""
        behind = self._waiting.get(place, _never)
        if not behind() or self.ahead() == 0:
            return 0.0
        return max(0.0, YIELD_SHARE * step - free_for)
