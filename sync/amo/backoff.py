"""Exponential back-off with jitter, bounded, honouring amoCRM's `retry_after` up to a cap;
pauses that a stopping process cuts short."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from sync.clock import Clock, SystemClock
from sync.errors import AmoStoppedError

# The longest single pause a 429's `retry_after` buys (docs/operations.md, "429"): amoCRM's
# documented body says 300 s, but its limit is a 1-s window; a longer pause only stalls the
# sync, and a retry every 30 s is no load that could get the IP blocked.
MAX_PAUSE_S = 30.0


@dataclass
class Backoff:
    """Delay before retry number `attempt` (0 = the first retry).

    "Equal jitter": half the exponential step is fixed, half random, so clients that failed
    together spread out but none retries immediately. A 429 without `retry_after` starts at
    `throttle_base_s` (amoCRM's HTML 429 carries no hint; ~1-2 s is the community advice).
    """

    base_s: float = 0.5
    throttle_base_s: float = 2.0
    cap_s: float = 30.0
    max_pause_s: float = MAX_PAUSE_S
    rng: random.Random = field(default_factory=random.Random)

    def delay(
        self, attempt: int, *, throttled: bool = False, retry_after: float | None = None
    ) -> float:
        base = self.throttle_base_s if throttled else self.base_s
        step = min(self.cap_s, base * (2 ** max(0, attempt)))
        jittered: float = step / 2 + self.rng.uniform(0, step / 2)
        if retry_after is not None:
            # The server's figure is a floor (up to the cap); a little jitter stops threads
            # waking in lockstep.
            floor = min(retry_after, self.max_pause_s)
            return float(floor + self.rng.uniform(0, min(1.0, base)))
        return jittered


def pause(clock: Clock, stopping: threading.Event, seconds: float) -> None:
    """Sleep `seconds`, or less: raise `AmoStoppedError` as soon as `stopping` is set (the
    real clock waits on the event; an injected test clock sleeps, then checks it)."""
    if isinstance(clock, SystemClock):
        stopped = stopping.wait(seconds) if seconds > 0 else stopping.is_set()
    else:
        clock.sleep(seconds)
        stopped = stopping.is_set()
    if stopped:
        raise AmoStoppedError("stopping: a request waiting to be retried was given up, unsent")
