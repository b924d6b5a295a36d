"""Turning a stream of notifications into few calls: a quiet period, with a ceiling.

    debounce = Debounce(push_soon, quiet_s=0.3, max_s=1.0)
    debounce.start(); debounce.note(); ...; debounce.close()

`fire` is called on the debounce's own thread once the notes have been quiet for `quiet_s`, or
`max_s` after the first note of a burst when they never go quiet: one edit goes out about
`quiet_s` after it was made, a burst of edits goes out together, and a continuous stream of edits
still goes out about every `max_s`, in batches. A note that arrives while `fire` runs starts the
next burst. `Burst` is the arithmetic alone (pure, tested without threads or sleeps).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sync.logs import get_logger

log = get_logger("sync.debounce")


@dataclass
class Burst:
    """When the current burst of notes is due (monotonic seconds), if there is one."""

    quiet_s: float
    max_s: float
    first: float | None = None  # the burst's first note
    due: float | None = None

    def note(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.due = min(now + self.quiet_s, self.first + self.max_s)

    def take(self, now: float) -> bool:
        """True, and the burst is over, when it is due at `now`."""
        if self.due is None or now < self.due:
            return False
        self.first = self.due = None
        return True

    def wait_s(self, now: float) -> float | None:
        """Seconds until the burst is due (None: no burst)."""
        return None if self.due is None else max(0.0, self.due - now)


class Debounce:
    """Calls `fire` after bursts of `note()` calls (see the module docstring)."""

    def __init__(
        self,
        fire: Callable[[], None],
        *,
        quiet_s: float,
        max_s: float,
        name: str = "amosync-debounce",
    ) -> None:
        self._fire = fire
        self._burst = Burst(quiet_s, max_s)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def note(self) -> None:
        with self._cond:
            self._burst.note(time.monotonic())
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while self._next():
            try:
                self._fire()
            except Exception as exc:  # noqa: BLE001 - the next burst must still fire
                log.error("debounce_fire_failed", error=str(exc), error_type=type(exc).__name__)

    def _next(self) -> bool:
        """Block until a burst is due (True) or the debounce is closed (False)."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._burst.take(now):
                    return True
                self._cond.wait(self._burst.wait_s(now))
            return False
