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
- **Decrease, deep at the start of a burst**: the first 429 after a calm minute (none in the
  60 s before it) cuts the allowed rate to `FIRST_DECREASE` of the rate that drew it (0.5 rps
  from 7), never below `MIN_RPS`: amoCRM says nothing of how much of the account's 50 rps other
  integrations leave us, and a halving from 7 (3.5, then 1.75) drew a second, third and fourth
  429 within 9 s on an account another integration kept at 49 rps (the hostile audit, s06).
  Later 429s of the burst halve (`DECREASE`) the rate that drew them: by then the rate that
  drew the last one says where the budget is. A 429 for a request sent before the last cut
  belongs to that episode and cuts nothing.
- **Increase**: the climb starts when the 429's pause ends. After a first cut it doubles every
  `DOUBLE_S` (8 s: 1 rps after 8 s, 3 after 21 s, 6 after 29 s), so a second 429 within
  seconds needs a budget under about 1 rps; after a later cut it climbs linearly to `KNEE`
  (85 %) of the rate that drew the 429 within `FAST_S` (10 s). Then slowly, by `SLOW_SHARE`
  of that rate per second (from 85 % to 100 % in 45 s whatever the rate), and past it doubling
  every `DOUBLE_S` again: a budget that freed up is found within half a minute. Against a
  budget B below `max_rps` one round (cut, climb to B, 429) takes about a minute plus the pause
  at any B (it was 10 + 7.5 B s: 3.4 a minute at 1 rps), and the rate averages about 0.85 B.
- **Pause**: every 429 pauses every start for `retry_after` when amoCRM gives one, else for the
  back-off delay; nobody sends while a pause lasts.
- **Breaker**: the `MAX_429_PER_MINUTE`-th (3rd) 429 within a minute pauses everything for
  `COOL_DOWN_S` (60 s), and the climb starts again from the last cut's rate when it ends.
  amoCRM blocks an IP that keeps getting 429s (403, lifted only by its support) at a threshold
  it does not publish (amocrm-api.md §1, §16); a stand-in blocking at 4 in a minute blocked the
  old policy (breaker at 6). With one round a minute, three in a minute mean the policy is not
  finding the budget, and a minute of silence is cheaper than a block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sync.amo.margin import START_S

FIRST_DECREASE = 1 / 14  # the first 429 of a burst: 7 rps -> 0.5
DECREASE = 0.5  # every later cut of the burst
MIN_RPS = 0.5
DOUBLE_S = 8.0  # slow start after a first cut, and past the rate that drew the last 429
FAST_S = 10.0
PACE = 0.8
LOG_MAX = 16  # starts kept for the window check; above this `max_rps` (emulator only) pace only
KNEE = 0.85
SLOW_SHARE = (1 - KNEE) / 45  # per second, of the rate that drew the 429: knee to it in 45 s
MAX_429_PER_MINUTE = 3
COOL_DOWN_S = 60.0
MINUTE_S = 60.0
WIDE_HOLD_S = 60.0  # a process's wider window binds every process this long after its claim
MARGIN_KEEP_S = 24 * 3600.0  # a new process starts from the margin a process left this recently

T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """Starts granted by one claim, on the budget's clock."""

    starts: tuple[float, ...]
    step: float  # window / limit at the allowed rate: how late a start may still be taken
    rate: float  # the allowed rate when granted (requests/s)
    now: float  # the budget clock when granted
    blocked_at: float | None  # when some process of the account got the 403 block, if ever
    margin: float | None = None  # the margin a process last claimed with, if in `MARGIN_KEEP_S`
    widened: float = 0.0  # the margin the account's last 429 at `max_rps` widened to
    widened_at: float = 0.0  # when (0: never)


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
    climb_at: float = -math.inf  # when the climb from `floor_rps` starts (the pause's end)
    slow_start: bool = False  # the last cut was a burst's first: the climb doubles
    paused_until: float = 0.0
    recent: list[float] = field(default_factory=list)  # 429 times within the last minute
    blocked_at: float | None = None
    # the widest `interval_at_max` (window / limit: its safety margin) a process claimed with
    # within `WIDE_HOLD_S`: every process's starts keep to it (see `claim`)
    wide_step: float = 0.0
    wide_until: float = 0.0
    # what `sync.amo.margin` learned, so the next process starts from it and a 429's widening
    # reaches every process at its next claim
    margin: float | None = None
    margin_at: float = 0.0
    widened: float = 0.0
    widened_at: float = 0.0

    def allowed(self, now: float, max_rps: float) -> float:
        """The allowed rate now: `max_rps`, or climbing back from the last cut."""
        if self.floor_rps is None:
            return max_rps
        peak, floor = self.peak_rps, self.floor_rps
        elapsed = max(0.0, now - self.climb_at)
        knee = max(floor, KNEE * peak)
        if self.slow_start:
            doubling = DOUBLE_S * math.log2(knee / floor)
            if elapsed < doubling:
                return min(max_rps, floor * 2 ** (elapsed / DOUBLE_S))
            elapsed -= doubling
        elif elapsed < FAST_S:
            return min(max_rps, floor + (knee - floor) * elapsed / FAST_S)
        else:
            elapsed -= FAST_S
        slow = (peak - knee) / (SLOW_SHARE * peak)
        if elapsed < slow:
            return min(max_rps, knee + SLOW_SHARE * peak * elapsed)
        return min(max_rps, peak * 2 ** ((elapsed - slow) / DOUBLE_S))

    def claim(
        self, now: float, count: int, max_rps: float, interval_at_max: float,
        share: tuple[float | None, bool] = (None, False),
    ) -> Claim:  # fmt: skip
        """Take the next `count` starts of the schedule (none before `now`). `interval_at_max`
        is `window / limit` at `max_rps`; the widest learned one (above `START_S`) any process
        claimed with lately binds every claim: the row's starts reach amoCRM as one stream, and
        a process whose margin a 429 widened (`sync.amo.margin`) was undercut by one still at
        80 ms, 7 per 1.08 s.
        `share` is `SafetyMargin.to_share`: the claimer's learned margin is kept for the next
        process; a process joining (its first claim) claims with the one left here: at
        `START_S` its first claim would bind its own schedule for `WIDE_HOLD_S` too."""
        margin_s, joining = share
        margin = self.margin if self.margin_at >= now - MARGIN_KEEP_S else None
        if joining and margin is not None:
            interval_at_max = 1 / max_rps + margin / max(1, math.floor(max_rps))
        if margin_s is not None:
            self.margin, self.margin_at = margin_s, now
        limit = max(1, math.floor(max_rps))
        # only a width learned (a 429, a jittery path) binds the others, not a new process's
        # `START_S`, which would pin its own and every other schedule at 150 ms for a minute
        learned = (interval_at_max - 1 / max_rps) * limit > START_S + 1e-6
        if learned and (interval_at_max >= self.wide_step or now >= self.wide_until):
            self.wide_step, self.wide_until = interval_at_max, now + WIDE_HOLD_S
        if now >= self.wide_until:
            self.wide_step = 0.0
        interval_at_max = max(interval_at_max, self.wide_step)
        rate = self.allowed(now, max_rps)
        step = interval_at_max * max_rps / rate
        kept = min(limit, LOG_MAX)
        catch_up = rate >= max_rps and limit <= LOG_MAX
        starts = tuple(self._next(now, step * (PACE if catch_up else 1.0), step, kept)
                       for _ in range(count))  # fmt: skip
        return Claim(starts, step, rate, now, self.blocked_at, margin, self.widened,
                     self.widened_at)  # fmt: skip

    def _next(self, now: float, gap: float, step: float, limit: int) -> float:
        at = max(now, self.paused_until)
        if self.granted:
            at = max(at, self.granted[-1] + gap)
        if len(self.granted) >= limit:
            at = max(at, self.granted[-limit] + limit * step)
        self.granted = [*self.granted[-(LOG_MAX - 1) :], at]
        return at

    def throttled(
        self, now: float, sent_at: float, max_rps: float, pause_s: float, cool_down_s: float,
        *, widened_s: float | None = None,
    ) -> Throttle:  # fmt: skip
        """A request sent at `sent_at` got a 429 at `now`: cut (once per episode; deep if it
        starts a burst), pause; the breaker at the `MAX_429_PER_MINUTE`-th in a minute.
        `widened_s`: the margin the 429 widened the claimer's to, for every process."""
        if widened_s is not None:
            self.widened, self.widened_at = widened_s, now
            self.margin, self.margin_at = max(widened_s, self.margin or 0.0), now
        calm = not [t for t in self.recent if t > now - MINUTE_S]
        self.recent = [t for t in self.recent if t > now - MINUTE_S] + [now]
        cut = sent_at >= self.cut_at
        if cut:
            self.peak_rps = self.allowed(now, max_rps)
            self.slow_start = calm
            share = FIRST_DECREASE if calm else DECREASE
            self.floor_rps = max(MIN_RPS, self.peak_rps * share)
            self.cut_at = now
        cooling = len(self.recent) >= MAX_429_PER_MINUTE
        pause = max(pause_s, cool_down_s if cooling else 0.0)
        self.paused_until = max(self.paused_until, now + pause)
        if cut or cooling:
            self.climb_at = self.paused_until  # nobody starts before: the climb starts then
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
            "climb_at": None if math.isinf(self.climb_at) else self.climb_at,
            "slow_start": self.slow_start,
            "paused_until": self.paused_until,
            "recent": list(self.recent),
            "blocked_at": self.blocked_at,
            "wide_step": self.wide_step,
            "wide_until": self.wide_until,
            "margin": self.margin,
            "margin_at": self.margin_at,
            "widened": self.widened,
            "widened_at": self.widened_at,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> BudgetState:
        """The stored state; anything unreadable starts afresh (it only delays or speeds up)."""
        if not value:
            return cls()
        try:
            cut_at = _optional(value.get("cut_at")) or -math.inf
            return cls(
                granted=[float(t) for t in value.get("granted") or []],
                floor_rps=_optional(value.get("floor_rps")),
                peak_rps=float(value.get("peak_rps") or 0.0),
                cut_at=cut_at,
                climb_at=_optional(value.get("climb_at")) or cut_at,  # a row of before
                slow_start=bool(value.get("slow_start")),
                paused_until=float(value.get("paused_until") or 0.0),
                recent=[float(t) for t in value.get("recent") or []],
                blocked_at=_optional(value.get("blocked_at")),
                wide_step=float(value.get("wide_step") or 0.0),  # a row of before: none
                wide_until=float(value.get("wide_until") or 0.0),
                margin=_optional(value.get("margin")),  # a row of before: none learned
                margin_at=float(value.get("margin_at") or 0.0),
                widened=float(value.get("widened") or 0.0),
                widened_at=float(value.get("widened_at") or 0.0),
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
