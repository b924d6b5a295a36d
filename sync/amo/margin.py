"""The rate window's safety margin: how much later than we sent it a request may reach amoCRM's
counter, learned from what the client sees.

amoCRM counts a request when it arrives; the limiter spaces starts so that any `limit + 1` of
them span at least 1 s + margin. Two requests sent that far apart reach the server less than
1 s apart only if the first was delayed on its way by more than the margin beyond the later
one: the margin must cover the *spread* of one-way delays (and a thread held up between its
check and its write). The client cannot see one-way delays, but each answer bounds one: a
request cannot have taken longer to reach amoCRM than its time to the answer's first byte
(TTFB, from its headers being written to the answer's headers being read). Requests of one kind
(method and path) cost the server about the same, so the spread of their TTFBs (the slowest
less the fastest of the last `SAMPLES`) bounds the spread of their one-way delays from above;
the path is the same for every kind, so the kind with the least spread gives the tightest
bound (`bound`). Only answers of the last `SAMPLE_AGE_S` count: a kind answered rarely (the
account, a daemon's events) kept 16 answers of a calm path for hours, and as the least spread
it held the bound at that while the path grew jittery; with none fresh the margin is back at
`START_S` until there are.

- Until some kind has `MIN_SAMPLES` answers, a new process uses `START_S` (150 ms).
- Then, while `SAFETY` (1.25) times the bound is at most `BOUNDED_S` (250 ms), the margin is
  that, never under `FLOOR_S` (80 ms, what this host's own scheduling needed: docs/operations.md,
  "The safety margin"). The range of a few dozen answers falls short of the real spread by a
  few per cent, hence `SAFETY`. A path with 0-100 ms of jitter gets about 125 ms and no 429 (it
  had 80 ms and 8 requests in one second at the server: the hostile audit, s20).
- A larger bound cannot tell a jittery path from a server that takes longer over some answers
  (the benchmarks' emulator adds 400-800 ms after it counted the request). Then the margin
  starts at `START_S` and narrows by `NARROW_S` for every window of full-rate starts without a
  429 (150 ms to 80 ms in 7 windows, ~8 s at full rate), down to `FLOOR_S`.
- A 429 for a request started at `max_rps` (the schedule should have prevented it) widens the
  margin to twice what it was or to `SAFETY` times the bound, whichever is more, at most
  `MAX_S`, and holds there for `HOLD_WINDOWS` windows of full-rate starts without a 429 (~5
  min at full rate; idle time does not count); then what the 429 taught narrows by `NARROW_S`
  a window, down to what the bound or the floor says. A 429 cannot tell our margin from
  another integration spending the account's budget: held for good, one such 429 left a
  daemon at 350 ms (~5.2 rps at most) for its whole life. A path that does need the width draws
  another 429 once it narrows, and each one doubles the hold (up to `MAX_HOLD_WINDOWS`, ~40
  min at full rate): one such 429 per hold, the budget's pause and cut after each.

With a shared budget (`sync.amo.budget`), what a process learned outlives it, per account: each
claim leaves its margin in the row, and a new process starts from the last one left within 24 h
instead of `START_S` (`shared`): a CLI run of ~50 requests spent all of them narrowing from
150 ms (the catch-up bench, issue 12). A 429's widening reaches every process at its next
claim, which takes the larger of its own and that; otherwise each learns on its own (the
row's schedule also keeps to the widest margin claimed lately: `BudgetState.claim`).
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable

FLOOR_S = 0.08  # measured on this host: docs/operations.md, "The safety margin"
START_S = 0.15  # a new process, until its answers bound the spread
BOUNDED_S = 0.25  # the most margin a bound sets by itself (a bound above: narrow by trying)
SAFETY = 1.25  # the bound is a range of a few dozen answers: a little short of the spread
MAX_S = 0.35  # a 429 at `max_rps` widens the margin up to this
NARROW_S = 0.01  # per window of full-rate starts without a 429, while the bound says nothing
HOLD_WINDOWS = 300  # full-rate windows a 429's width holds before it narrows again
MAX_HOLD_WINDOWS = 8 * HOLD_WINDOWS  # each 429 at full rate doubles the hold up to this
SAMPLE_AGE_S = 600.0  # an answer older than this says nothing of the path now
SAMPLES = 64  # answers kept per kind
MIN_SAMPLES = 16  # a kind's spread bounds the path's once it has this many (~0.88 of a range)
_DIGITS = re.compile(r"/\d+")


def request_kind(method: str, url: str) -> str:
    """`GET /api/v4/contacts` for `/api/v4/contacts?page=2` and `/api/v4/contacts/17`
    alike: what costs the server about the same."""
    path = url.split("?", 1)[0]
    return f"{method} {_DIGITS.sub('/{id}', path)}"


class SafetyMargin:
    """The margin in effect (`value`), moved by answers' TTFBs, full-rate windows and 429s.
    `adaptive=False` keeps `floor_s` as given until a 429 widens it (tests, benchmarks with a
    chosen margin)."""

    def __init__(
        self,
        floor_s: float = FLOOR_S,
        *,
        adaptive: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.floor_s = floor_s
        self.adaptive = adaptive
        self.value = max(floor_s, START_S) if adaptive else floor_s
        self.learned = floor_s  # no narrower than this: set by a 429 at full rate, held a while
        self._monotonic = monotonic
        self._ttfb: dict[str, deque[tuple[float, float]]] = {}  # (answered at, TTFB)
        self._bound: float | None = None
        self._full_starts = 0  # starts at `max_rps` since the last window counted or 429
        self._hold = HOLD_WINDOWS // 2  # doubled by every 429 at full rate
        self._calm_windows = 0  # full-rate windows since the last 429 at full rate
        self._seen_widened_at: float | None = (
            None  # the shared row's last widening (None: not read)
        )

    @property
    def bound(self) -> float | None:
        """`SAFETY` times the least TTFB spread of any kind with enough answers (None: none
        has)."""
        return self._bound

    def answered(self, kind: str, ttfb: float) -> bool:
        """One answer's TTFB; True when the margin changed."""
        if not self.adaptive or not (0.0 <= ttfb < math.inf):
            return False
        now = self._monotonic()
        self._ttfb.setdefault(kind, deque(maxlen=SAMPLES)).append((now, ttfb))
        had_bound, self._bound = self._bound is not None, self._least_spread(now)
        if self._bound is None and had_bound:  # every kind's answers grew old: start again
            return self._set(max(self.value, self.floor_s, self.learned, START_S))
        if self._bounded():
            return self._set(max(self.floor_s, self.learned, self._bound or 0.0))
        return False

    def _least_spread(self, now: float) -> float | None:
        """`SAFETY` times the least spread of a kind's answers of the last `SAMPLE_AGE_S`,
        of the kinds with `MIN_SAMPLES` of them; None when none has."""
        spreads = []
        for samples in self._ttfb.values():
            while samples and samples[0][0] < now - SAMPLE_AGE_S:
                samples.popleft()
            if len(samples) >= MIN_SAMPLES:
                ttfbs = [ttfb for _, ttfb in samples]
                spreads.append(max(ttfbs) - min(ttfbs))
        return SAFETY * min(spreads) if spreads else None

    def _bounded(self) -> bool:
        return self._bound is not None and self._bound <= BOUNDED_S

    def started_at_full_rate(self, limit: int) -> bool:
        """A start went out at `max_rps`; after `limit` of them without a 429 the margin narrows
        while the bound cannot say how much is enough. True when the margin changed."""
        self._full_starts += 1
        if self._full_starts < limit:
            return False
        self._full_starts = 0
        if not self.adaptive:
            return False
        self._calm_windows += 1
        if self.learned > self.floor_s and self._calm_windows > self._hold:
            self.learned = max(self.floor_s, self.learned - NARROW_S)  # the 429 is old news
        if self._bound is None:  # no bound yet: `START_S` holds, or what a 429 taught
            return self._set(min(self.value, max(self.floor_s, self.learned, START_S)))
        if self._bounded():
            return self._set(max(self.floor_s, self.learned, self._bound))
        return self._set(max(self.floor_s, self.learned, self.value - NARROW_S))

    def throttled(self) -> bool:
        """A 429 for a request started at `max_rps`: widen (see the module docstring); True
        when the margin changed."""
        self._full_starts = 0
        if self.adaptive:
            self._calm_windows = 0
            self._hold = min(MAX_HOLD_WINDOWS, 2 * self._hold)
        widened = max(2 * self.value, self._bound or 0.0) if self.adaptive else 2 * self.value
        widened = min(MAX_S, widened)
        if widened <= self.value:
            return False
        self.learned = widened
        return self._set(widened)

    def to_share(self) -> tuple[float | None, bool]:
        """What to leave in the shared row for the next process: the margin once this one read
        what the last left (its first claim must not overwrite that with `START_S`); and
        whether this claim is the first, to be made with what the last left."""
        joined = self._seen_widened_at is not None
        return (self.value if self.adaptive and joined else None), self.adaptive and not joined

    def shared(self, start: float | None, widened: float, widened_at: float) -> bool:
        """What the shared row says at a claim (`sync.amo.budget.Claim`): at the first, the
        margin the last process left (`start`, None when none is recent) unless our answers
        already bound it; later, a 429's widening newer than the last seen, when it is wider.
        True when the margin changed."""
        seen, self._seen_widened_at = self._seen_widened_at, widened_at
        if not self.adaptive:
            return False
        if seen is None:
            if start is None or self._bound is not None:
                return False
            # not `learned`: a 429's width left behind holds one window, not a hold (it may
            # have come from another integration; the next 429 teaches it again)
            return self._set(min(MAX_S, max(self.floor_s, start)))
        if widened_at <= seen or widened <= self.value:
            return False
        self.learned, self._calm_windows = min(MAX_S, widened), 0
        return self._set(self.learned)

    def _set(self, value: float) -> bool:
        changed = abs(value - self.value) > 1e-9
        self.value = value
        return changed
