"""The account's rate budget as a value: an evenly spaced schedule of request starts, the
allowed rate (AIMD on 429), pauses and the 429 breaker. Pure: no I/O, no clock of its own.

One `BudgetState` exists per account. Without a database it lives in the process's rate
limiter; with one, every process of the account reads and writes the same state in a
`sync_state` row under a row lock (`sync.db.budget.BudgetRow`), so threads and processes take
their starts from one schedule and slow down together. Times are seconds on one clock: the
process's monotonic clock locally, PostgreSQL's `clock_timestamp()` when shared.

The numbers, and why (amoCRM publishes no block threshold; `docs/operations.md` has the story):
- **Schedule**: at most `limit = floor(max_rps)` starts in any `window = 1 s + margin` (80 ms
  by default, doubled after a 429 at `max_rps`: `sync.amo.ratelimit`), none closer than `PACE`
  (80 %) of `window / limit` to the one before (the last starts granted are kept to check it;
  above 16 rps, the emulator only, starts are evenly spaced). Any 1 s at the server then holds
  at most `max_rps` starts even when a start reaches it up to the margin late; after a quiet
  spell the schedule can catch up (7 starts within a window, 123 ms apart), so a bursty caller
  loses no throughput. Below
  `max_rps` (after a 429) starts are evenly spaced at `window / limit * max_rps / rate`: no
  catch-up bursts towards a budget that just said no. A caller takes `count` starts at once (a
  batch keeps database round trips off the hot path); starts nobody used still count.
- **Multiplicative decrease**: a 429 for a request sent after the last cut halves the allowed
  rate (never below `MIN_RPS`); 429s for requests already under way when the rate was cut belong
  to the same episode and do not cut again.
- **Increase in two steps**: within `FAST_S` (10 s) the rate climbs back to `KNEE` (85 %) of the
  rate that drew the 429, then on by `RECOVER_RPS_PER_S` (one request/s every 50 s). Against a
  budget B below `max_rps` the rate then spends most of its time between 0.85 B and B (about
  0.9 B on average, where plain halving-and-climbing averages 0.75 B), and the slow last stretch
  makes the 429 that ends each round rare: one every 10 + 7.5 B s, 2.4 a minute at 2 rps, 1.9 at
  3 rps. A single 429 at full speed (a late request bunched with the next ones) costs little:
  back to 6 rps within 10 s.
- **Pause**: every 429 pauses every start for `retry_after` when amoCRM gives one, else for the
  back-off delay; nobody sends while a pause lasts.
- **Breaker**: the `MAX_429_PER_MINUTE`-th 429 within a minute pauses everything for
  `COOL_DOWN_S`. amoCRM blocks clients that keep hammering after 429s; AIMD alone answers a
  budget down to 2 rps with at most 2.4 429s a minute, plus two or three while it first comes
  down from `max_rps`, so six mean something else is using the account hard (or its budget is
  below 2 rps), and a full minute of silence is cheaper than a block only support can lift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

DECREASE = 0.5
MIN_RPS = 0.5
FAST_S = 10.0
PACE = 0.8
LOG_MAX = 16  # starts kept for the window check; above this `max_rps` (emulator only) pace only
KNEE = 0.85
RECOVER_RPS_PER_S = 0.02
MAX_429_PER_MINUTE = 6
COOL_DOWN_S = 60.0
MINUTE_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """Starts granted by one claim, on the budget's clock."""

    starts: tuple[float, ...]
    step: float  # window / limit at the allowed rate: how late a start may still be taken
    rate: float  # the allowed rate when granted (requests/s)
    now: float  # the budget clock when granted
    blocked_at: float | None  # when some process of the account got the 403 block, if ever


@dataclass(frozen=True)
class Throttle:
    """What one 429 did to the budget."""

    rate: float  # allowed rate after it
    cut: bool  # True when this 429 cut the rate (the first of its episode)
    pause_s: float  # how long every start now waits
    recent: int  # 429s in the last minute, this one included
    cooling: bool  # the breaker fired: everything waits `COOL_DOWN_S`


@dataclass
class BudgetState:
    """The shared schedule and AIMD state (see the module docstring for the rules)."""

    granted: list[float] = field(default_factory=list)  # the last `LOG_MAX` starts granted
    floor_rps: float | None = None  # allowed rate right after the last cut; None = never cut
    peak_rps: float = 0.0  # the allowed rate that drew the last cut's 429
    cut_at: float = -math.inf
    paused_until: float = 0.0
    recent: list[float] = field(default_factory=list)  # 429 times within the last minute
    blocked_at: float | None = None

    def allowed(self, now: float, max_rps: float) -> float:
        """The allowed rate now: `max_rps`, or climbing back from the last cut."""
        if self.floor_rps is None:
            return max_rps
        elapsed = max(0.0, now - self.cut_at)
        knee = max(self.floor_rps, KNEE * self.peak_rps)
        if elapsed < FAST_S:
            rate = self.floor_rps + (knee - self.floor_rps) * elapsed / FAST_S
        else:
            rate = knee + RECOVER_RPS_PER_S * (elapsed - FAST_S)
        return min(max_rps, rate)

    def claim(self, now: float, count: int, max_rps: float, interval_at_max: float) -> Claim:
        """Take the next `count` starts of the schedule (none before `now`). `interval_at_max`
        is `window / limit` at `max_rps`."""
        rate = self.allowed(now, max_rps)
        step = interval_at_max * max_rps / rate
        limit = max(1, math.floor(max_rps))
        kept = min(limit, LOG_MAX)
        catch_up = rate >= max_rps and limit <= LOG_MAX
        starts = tuple(self._next(now, step * (PACE if catch_up else 1.0), step, kept)
                       for _ in range(count))  # fmt: skip
        return Claim(starts, step, rate, now, self.blocked_at)

    def _next(self, now: float, gap: float, step: float, limit: int) -> float:
        at = max(now, self.paused_until)
        if self.granted:
            at = max(at, self.granted[-1] + gap)
        if len(self.granted) >= limit:
            at = max(at, self.granted[-limit] + limit * step)
        self.granted = [*self.granted[-(LOG_MAX - 1) :], at]
        return at

    def throttled(
        self, now: float, sent_at: float, max_rps: float, pause_s: float, cool_down_s: float
    ) -> Throttle:
        """A request sent at `sent_at` got a 429 at `now`: cut (once per episode), pause."""
        self.recent = [t for t in self.recent if t > now - MINUTE_S] + [now]
        cut = sent_at >= self.cut_at
        if cut:
            self.peak_rps = self.allowed(now, max_rps)
            self.floor_rps = max(MIN_RPS, self.peak_rps * DECREASE)
            self.cut_at = now
        cooling = len(self.recent) >= MAX_429_PER_MINUTE
        pause = max(pause_s, cool_down_s if cooling else 0.0)
        self.paused_until = max(self.paused_until, now + pause)
        if cooling:
            self.recent = []  # a fresh minute after the cool-down
        rate = self.allowed(now, max_rps)
        return Throttle(rate, cut, self.paused_until - now, len(self.recent) or 1, cooling)

    def pause(self, now: float, seconds: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)

    def block(self, now: float) -> None:
        if self.blocked_at is None:
            self.blocked_at = now

    # --- storage as JSON (the `sync_state` row) ----------------------------------------------

    def to_value(self) -> dict[str, Any]:
        return {
            "granted": list(self.granted),
            "floor_rps": self.floor_rps,
            "peak_rps": self.peak_rps,
            "cut_at": None if math.isinf(self.cut_at) else self.cut_at,
            "paused_until": self.paused_until,
            "recent": list(self.recent),
            "blocked_at": self.blocked_at,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> BudgetState:
        """The stored state; anything unreadable starts afresh (it only delays or speeds up)."""
        if not value:
            return cls()
        try:
            return cls(
                granted=[float(t) for t in value.get("granted") or []],
                floor_rps=_optional(value.get("floor_rps")),
                peak_rps=float(value.get("peak_rps") or 0.0),
                cut_at=_optional(value.get("cut_at")) or -math.inf,
                paused_until=float(value.get("paused_until") or 0.0),
                recent=[float(t) for t in value.get("recent") or []],
                blocked_at=_optional(value.get("blocked_at")),
            )
        except (TypeError, ValueError):
            return cls()


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


Value = Mapping[str, Any]


class BudgetStore(Protocol):
    """Where the account's `BudgetState` lives when several processes share it (as its
    `to_value` JSON; `sync.db.budget.BudgetRow` keeps it in PostgreSQL).

    `update(change)` reads the value under a lock, calls `change(value, now)` with the store's
    clock (the same for every process), writes the value it returns back and returns
    `(result, now, local)`: `local` is this process's `time.monotonic()` at the moment `now`
    was read, so the caller can turn the store's times into its own.
    """

    name: str

    def update(
        self, change: Callable[[Value | None, float], tuple[T, Value]]
    ) -> tuple[T, float, float]: ...

    def close(self) -> None: ...


def shared_change(
    change: Callable[[BudgetState, float], T],
) -> Callable[[Value | None, float], tuple[T, Value]]:
    """`change` on a state, as a change of the stored value."""

    def on_value(value: Value | None, now: float) -> tuple[T, Value]:
        state = BudgetState.from_value(value)
        result = change(state, now)
        return result, state.to_value()

    return on_value
