"""Exponential back-off with jitter, bounded, honouring amoCRM's `retry_after` (up to
`max_pause_s`); pauses that a stopping process cuts short."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from sync.clock import Clock, SystemClock
from sync.errors import AmoStoppedError

# The longest `retry_after` a one-shot command waits out (docs/operations.md, "How long one 429
# pauses"); amoCRM asking for more (its documented body says 300 s) fails the command with one
# line saying so, rather than sitting for minutes. The daemon waits it out, up to
# `responses.MAX_RETRY_AFTER_S` (its `max_pause_s`), a stop ending the wait.
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


class Stopping(threading.Event):
    """Set when the process stops: every wait for a start, a 429's pause or a retry ends at once
    (the daemon's stop). `reason` opens the error each request gets; `final` (a one-shot
    command's SIGTERM/SIGINT, `sync.cli_stop`) also refuses every request not yet sent."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = "stopping"
        self.final = False

    def stop(self, reason: str, *, final: bool) -> None:
        self.reason, self.final = reason, final
        self.set()

    def check(self) -> None:
        """Raise `AmoStoppedError` if a final stop refuses new requests."""
        error = stop_error(self, paused=False)
        if error is not None:
            raise error


def stop_error(stopping: threading.Event | None, *, paused: bool) -> AmoStoppedError | None:
    """The error for a request not sent because the process stops (None: send it): one waiting
    out a 429 pause (`paused`) is given up at any stop, any other one only at a final stop."""
    if stopping is None or not stopping.is_set():
        return None
    reason = getattr(stopping, "reason", "stopping")
    if paused:
        return AmoStoppedError(f"{reason}: a request waiting out a 429 pause was given up")
    if getattr(stopping, "final", False):
        return AmoStoppedError(f"{reason}: no request is sent to amoCRM any more")
    return None


def pause(clock: Clock, stopping: threading.Event, seconds: float) -> None:
    """Sleep `seconds`, or less: raise `AmoStoppedError` as soon as `stopping` is set (the
    real clock waits on the event; an injected test clock sleeps, then checks it)."""
    if isinstance(clock, SystemClock):
        stopped = stopping.wait(seconds) if seconds > 0 else stopping.is_set()
    else:
        clock.sleep(seconds)
        stopped = stopping.is_set()
    if stopped:
        reason = getattr(stopping, "reason", "stopping")
        raise AmoStoppedError(f"{reason}: a request waiting to be retried was given up, unsent")
