"""The emulator's controllable clock: `updated_at`, events and token expiry all read it.

It follows the wall clock (plus an offset) until frozen; tests freeze, advance or set it so
that timestamps are exact. Rate limiting and latency deliberately do not use it: they are
about real elapsed time as the client experiences it.
"""

from __future__ import annotations

import threading
import time


class EmulatorClock:
    """Unix time in float seconds that tests can freeze, advance and set."""

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0 if start is None else start - time.time()
        self._frozen_at: float | None = None
        if frozen:
            self.freeze(start)  # exactly `start`: now() - offset round-trips lose a few ns

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def now_s(self) -> int:
        """Whole seconds, the resolution of every amoCRM timestamp."""
        return int(self.now())

    def freeze(self, at: float | None = None) -> None:
        """Stop the clock (at `at`, or where it is now)."""
        current = self.now() if at is None else at
        with self._lock:
            self._frozen_at = current

    def unfreeze(self) -> None:
        """Let the clock run again from where it stands."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
            self._frozen_at = None

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def set(self, at: float) -> None:
        """Jump to `at`, keeping the frozen/running state."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = at
            else:
                self._offset = at - time.time()

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen_at is not None

    def state(self) -> dict[str, float | bool]:
        return {"now": self.now(), "frozen": self.frozen}
