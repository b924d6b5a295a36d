"""The rate budget: one sliding-window limiter per amoCRM origin, shared by the whole process.

amoCRM allows 7 requests per second per IP and answers 429 (then a 403 IP block) beyond it. The
server counts requests when they *arrive*; the client can only count when it *sends*. So the
limiter keeps a log of send times and lets a request go only when fewer than `limit` were sent in
the last `window` seconds, where `window` is `limit / max_rps` plus a safety margin that absorbs
scheduling jitter between "the limiter said go" and "the bytes reached the server".

Starts are also paced about `window / limit` apart instead of going out in bursts of 7: a burst
makes the 7 requests contend (new connections, threads, the GIL), which spreads their arrival
times and eats the margin. Pacing costs no throughput, since the window allows no more anyway.

Requests in flight overlap: the limiter only spaces *starts*, so 600 ms of latency does not cost
throughput (7 per 1.08 s ≈ 6.5 rps with the default margin).

The limiter is also the process-wide gate to amoCRM:
- `pause(seconds)` holds every thread back after a 429, so one throttled thread does not let the
  others keep hammering;
- `halt(error)` makes every later `acquire` raise `error` (a 403 IP block stops all work).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from sync.errors import AmoError

DEFAULT_MARGIN_S = 0.08


class Slot:
    """One request's place in the window; `at` moves to when its bytes really left."""

    __slots__ = ("at", "started")

    def __init__(self, at: float) -> None:
        self.started = at  # when the limiter let it go: paces the next start
        self.at = at  # when it left (at least): counts in the window


class RateLimiter:
    """At most `limit` request starts in any `window` seconds, across every thread using it."""

    def __init__(
        self,
        max_rps: float,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self.limit = max(1, math.floor(max_rps))
        self.window = self.limit / max_rps + margin_s
        # Pacing only smooths; a little slack keeps wake-up delays from costing throughput.
        self.gap = 0.8 * self.window / self.limit
        self._monotonic = monotonic
        self._sends: deque[Slot] = deque(maxlen=2 * self.limit)
        self._paused_until = 0.0
        self._halted: AmoError | None = None
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self.limit}, window={self.window:.3f}s)"

    def acquire(self) -> Slot:
        """Block until a request may start; record its start and return its slot."""
        with self._cond:
            while True:
                if self._halted is not None:
                    raise self._halted
                now = self._monotonic()
                wait = self._wait_time(now)
                if wait <= 0:
                    slot = Slot(now)
                    self._sends.append(slot)
                    return slot
                self._cond.wait(timeout=wait)

    def sent(self, slot: Slot) -> None:
        """The request's bytes are leaving now: count it from now if that is later.

        Connection set-up and thread scheduling can delay a request after `acquire`; moving its
        slot keeps the window honest about when the server will actually see it.
        """
        with self._cond:
            slot.at = max(slot.at, self._monotonic())

    def _wait_time(self, now: float) -> float:
        wait = self._paused_until - now
        if not self._sends:
            return wait
        wait = max(wait, self._sends[-1].started + self.gap - now)
        times = sorted((s.at for s in self._sends), reverse=True)
        if len(times) >= self.limit:
            wait = max(wait, times[self.limit - 1] + self.window - now)
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every thread back for `seconds` (after a 429); never shortens a longer pause."""
        with self._cond:
            self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    def halt(self, error: AmoError) -> None:
        """Refuse every later request with `error` (the IP is blocked); wakes waiting threads."""
        with self._cond:
            self._halted = error
            self._cond.notify_all()

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when none)."""
        with self._cond:
            return max(0.0, self._paused_until - self._monotonic())

    @property
    def halted(self) -> AmoError | None:
        return self._halted


_SHARED: dict[tuple[str, float, float], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(origin: str, max_rps: float, margin_s: float = DEFAULT_MARGIN_S) -> RateLimiter:
    """The process-wide limiter for one amoCRM origin (`https://host:port`).

    Every client built for the same origin and settings gets the same limiter, so the budget is
    counted across all threads and jobs of the process, whichever client object they use.
    """
    key = (origin.lower().rstrip("/"), float(max_rps), float(margin_s))
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter(max_rps, margin_s=margin_s)
        return limiter
