"""The rate budget as threads meet it: `acquire` blocks until a request may start.

amoCRM allows 7 requests/s per integration (and 50 per account, shared by every integration)
and answers 429, then a 403 block, beyond it. The server counts requests when they *arrive*;
the client only knows when it *sends*. So starts follow a schedule (`sync.amo.budget`): at most
`limit` starts in any `window` (`limit / max_rps` plus a safety margin), paced apart; below
`max_rps` (after a 429) evenly spaced at the allowed rate. A start not taken within
`LATE_SHARE` of a step after its moment is given up rather than taken late. Only starts are
spaced, so 600 ms of latency does not cost throughput (~6.5 rps at 7 with an 80 ms margin).

The schedule lives in this process without a store (its clients share one limiter:
`shared_limiter`), or with a `BudgetStore` (PostgreSQL) in one row for every process of the
account: a thread that finds no start granted claims the next few for its process in one short
transaction, so processes together stay within `max_rps`. If the store fails, the process goes
on at half of `max_rps` on its own schedule and retries the store after `STORE_RETRY_S`.

A shared start must also *leave* on time: one held up before its headers (the GIL, a process
not scheduled: 100-300 ms on a loaded host; a new connection's TCP and TLS) reaches amoCRM in
the next starts' second, unseen by the other process. So a request whose headers begin more
than `LATE_SHARE` of a step (≥ `LATE_MIN_S`) after its start's moment gives it up and waits, on
its open connection, for the next (`leaving`); after `MAX_LATE` in a row one goes anyway.

A second check counts when requests really left (`sent`: once their headers are out): at most
`limit` in any `window` of this process. The margin is left for what no check sees: a thread
held up between its check and its write, the network path, the server's own scheduling. It is
a `SafetyMargin` (`sync.amo.margin`): fixed as given (tests, benchmarks), or, for the process's
shared limiter (`shared_limiter`), learned from the answers' times to first byte, windows of
full-rate starts without a 429 and a 429 for a request started at `max_rps`, which widens it
(`amo_rate_margin_widened`); with a store, from the margin the last process left and the
other processes' widenings too (`SafetyMargin.shared`, via the claims: no extra round trip).

The limiter is also the gate to amoCRM:
- `throttled(slot, pause_s)` after a 429: the allowed rate is cut (AIMD) and every start of the
  account waits out the pause (see `sync.amo.budget` for the numbers);
- `halt(error)` makes every later `acquire` raise `error` (a 403 IP block stops all work) and,
  with a store, every other process of the account that was running when it happened.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from threading import Event

from sync.amo.backoff import stop_error
from sync.amo.budget import (
    COOL_DOWN_S,
    PACE,
    BudgetState,
    BudgetStore,
    Claim,
    Throttle,
    shared_change,
)
from sync.amo.margin import FLOOR_S, MAX_S, SafetyMargin
from sync.amo.turns import Turns
from sync.errors import AmoBlockedError, AmoError, StoreError
from sync.logs import get_logger

log = get_logger("sync.amo.ratelimit")

DEFAULT_MARGIN_S = FLOOR_S  # measured: docs/operations.md, "The safety margin"
MAX_MARGIN_S = MAX_S  # a 429 at `max_rps` widens the margin up to this (see `throttled`)
MAX_CLAIM = 4  # starts claimed from the store at once (at most: the threads waiting)
CLAIM_AHEAD_S = 0.02  # above ~50 rps (the emulator only) claim this much schedule at once
LATE_SHARE = 0.3  # a granted start not taken within this share of a step is given up
LATE_MIN_S, MAX_LATE = 0.04, 3  # a shared start leaves this late at most; given up ≤ 3 in a row
STORE_RETRY_S = 5.0
PEER_BLOCKED = (
    "amoCRM blocked this IP (403 page) for another amosync process of this account; "
    "stopping all requests — contact amoCRM support"
)


class Slot:
    """One request's place in the window; `at` moves to when its bytes really left."""

    __slots__ = ("at", "deadline", "rate", "started")

    def __init__(self, at: float, rate: float = 0.0, deadline: float = math.inf) -> None:
        self.started = at  # when the limiter let it go
        self.at = at  # when it left (at least): counts in the window
        self.rate = rate  # the allowed rate it started at
        self.deadline = deadline  # its headers must start by then (a shared schedule's start)


class RateLimiter:
    """Request starts on the account's schedule at the allowed rate, across every thread using
    it (and, with a store, every process of the account)."""

    def __init__(
        self,
        max_rps: float,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
        monotonic: Callable[[], float] = time.monotonic,
        store: BudgetStore | None = None,
        cool_down_s: float = COOL_DOWN_S,
        adaptive_margin: bool = False,
    ) -> None:
        if max_rps <= 0:
            raise ValueError("max_rps must be positive")
        self.max_rps = float(max_rps)
        self.limit = max(1, math.floor(max_rps))
        self.margin = SafetyMargin(margin_s, adaptive=adaptive_margin, monotonic=monotonic)
        self._set_margin(self.margin.value)
        self.cool_down_s = cool_down_s
        self.store = store
        self.throttles = 0  # 429s this process got
        self.claims = self.dropped = 0  # claims made; granted starts given up unused
        self.late = self._late_run = 0  # starts given up as their headers were late (shared)
        self._monotonic = monotonic
        self._sends: deque[Slot] = deque(maxlen=2 * self.limit)
        self._starts: deque[tuple[float, float]] = deque()  # granted (moment, deadline), ours
        self._step = self.step
        self._rate = self.max_rps
        self._local = BudgetState()  # the schedule without a store (or while it is down)
        self._offset = 0.0  # this process's clock minus the store's
        self._joined_at: float | None = None  # the store's clock at our first claim
        self._store_failed_at: float | None = None
        self._claiming = False
        self._paused_until = 0.0
        self._widened_at = -math.inf  # 429s for requests started before it do not widen again
        self._halted: AmoError | None = None
        self._cond = threading.Condition()
        self.turns = Turns()  # which waiting request takes a start, and which gives up

    def _set_margin(self, margin_s: float) -> None:
        self.margin_s = margin_s
        self.window = self.limit / self.max_rps + margin_s
        self.step = self.window / self.limit  # window / limit at max_rps
        # the least time between two starts: PACE steps apart, each taken ≤ LATE_SHARE late
        self.gap = (PACE - LATE_SHARE) * self.step

    def __repr__(self) -> str:
        shared = f", store={self.store.name}" if self.store else ""
        return f"RateLimiter(limit={self.limit}, window={self.window:.3f}s{shared})"

    def acquire(self, stopping: threading.Event | None = None) -> Slot:
        """Block until a request may start; record its start and return its slot. Raises
        `Withdrawn` if it was given up (`turns`), `AmoStoppedError` if stopping (`stop_error`)."""
        return self._acquire(stopping, None)

    def _acquire(self, stopping: threading.Event | None, slot: Slot | None) -> Slot:
        with self._cond:
            place = self.turns.enter()
            try:
                return self._acquire_locked(place, stopping, slot)
            finally:
                self.turns.leave(place)

    def wake(self) -> None:
        """Let every waiting thread look again now (a session is stopping)."""
        with self._cond:
            self._cond.notify_all()

    def _acquire_locked(self, place: object, stopping: Event | None, slot: Slot | None) -> Slot:
        while True:
            if self._halted is not None:
                raise self._halted
            self.turns.check()
            now = self._monotonic()
            hold = self._hold(now)
            if (stopped := stop_error(stopping, paused=self._paused_until > now)) is not None:
                raise stopped  # in a 429 pause, or any request at a final stop
            if hold > 0:  # claim nothing that could not be used now
                self._cond.wait(timeout=hold)
                continue
            self._drop_late(now)
            if self._starts:
                wait = self._starts[0][0] - now
                if wait <= 0:
                    wait = self.turns.yields(place, -wait, self._step)
                if wait <= 0:
                    return self._start(now, slot)
                self._cond.wait(timeout=wait)
            elif self._claiming:
                self._cond.wait(timeout=1.0)
            else:
                self._claim_locked()

    def _start(self, now: float, slot: Slot | None) -> Slot:
        _, deadline = self._starts.popleft()
        slot = slot or Slot(now)  # a request that gave up its start takes this one in its slot
        slot.started = slot.at = now
        slot.rate, slot.deadline = self._rate, deadline
        self._sends.append(slot)
        if slot.rate >= self.max_rps and self.margin.started_at_full_rate(self.limit):
            self._set_margin(self.margin.value)
        return slot

    def _drop_late(self, now: float) -> None:
        """Starts whose moment passed unused are lost: taking them late would bunch starts."""
        late = now - LATE_SHARE * self._step
        while self._starts and self._starts[0][0] < late:
            self._starts.popleft()
            self.dropped += 1

    def _hold(self, now: float) -> float:
        """How long this process must wait whatever the schedule says (its pause; at most
        `limit` requests really sent in any `window`)."""
        hold = self._paused_until - now
        if len(self._sends) >= self.limit:
            times = sorted((s.at for s in self._sends), reverse=True)
            hold = max(hold, times[self.limit - 1] + self.window - now)
        return hold

    def leaving(self, slot: Slot, stopping: threading.Event | None = None) -> None:
        """The request's headers start now: count it from now. If its shared start's moment
        passed more than `LATE_SHARE` ago (its thread held up, its connection just opened: to
        amoCRM it arrives late either way), wait for the next start (`slot` takes it)."""
        while True:
            with self._cond:
                now = self._monotonic()
                if now <= slot.deadline or self._late_run >= MAX_LATE:
                    slot.at, self._late_run = max(slot.at, now), 0
                    return
                self.late, self._late_run = self.late + 1, self._late_run + 1
                if slot in self._sends:
                    self._sends.remove(slot)  # it never left: nothing of it is in the window
                self._cond.notify_all()
            self._acquire(stopping, slot)

    def sent(self, slot: Slot) -> None:
        """The request's bytes are leaving now: count it from now if that is later."""
        with self._cond:
            slot.at = max(slot.at, self._monotonic())

    def answered(self, slot: Slot, kind: str) -> None:
        """The answer to `slot`'s request (`margin.request_kind`) is in: its TTFB bounds the
        margin."""
        with self._cond:
            if self.margin.answered(kind, self._monotonic() - slot.at):
                self._set_margin(self.margin.value)

    def _claim_locked(self) -> None:
        self.claims += 1
        count = self._claim_size()
        if self.store is None:
            self._grant(self._local.claim(self._monotonic(), count, self.max_rps, self.step))
            return
        self._claiming = True
        self._cond.release()  # the store's round trip must not hold up `sent` and friends
        try:
            claim, offset = self._claim_shared(count)
        finally:
            self._cond.acquire()
            self._claiming = False
            self._cond.notify_all()
        self._grant(claim, offset)

    def _claim_size(self) -> int:
        ahead = math.ceil(self._rate * CLAIM_AHEAD_S)
        if self.store is None:
            return max(1, ahead)
        return max(1, min(max(MAX_CLAIM, ahead), max(len(self.turns), ahead)))

    def _claim_shared(self, count: int) -> tuple[Claim, float | None]:
        """Starts from the store, with the offset of its clock; or, while the store is down,
        half the budget on our own schedule (offset None), so two such processes still fit."""
        assert self.store is not None
        if self._store_usable():
            try:
                claim, now, local = self.store.update(
                    shared_change(lambda state, at: state.claim(
                        at, count, self.max_rps, self.step, self.margin.to_share())))  # fmt: skip
            except StoreError as exc:
                self._store_down(exc)
            else:
                self._store_failed_at = None
                return claim, local - now
        return self._local.claim(self._monotonic(), count, self.max_rps / 2, 2 * self.step), None

    def _store_usable(self) -> bool:
        failed = self._store_failed_at
        return failed is None or self._monotonic() - failed >= STORE_RETRY_S

    def _store_down(self, exc: StoreError) -> None:
        if self._store_failed_at is None:
            log.warning("amo_rate_budget_unshared", error=str(exc), share=0.5)
        self._store_failed_at = self._monotonic()

    def _grant(self, claim: Claim, offset: float | None = None) -> None:
        """Queue the claim's starts on our clock (`offset`: ours minus the store's, None for a
        claim on our own schedule); stop if another process was blocked since we joined."""
        if offset is not None:
            self._offset = offset
            if self.margin.shared(claim.margin, claim.widened, claim.widened_at):
                self._set_margin(self.margin.value)  # what another process learned
            if self._joined_at is None:
                self._joined_at = claim.now
            elif claim.blocked_at is not None and claim.blocked_at >= self._joined_at:
                self._halt_locked(AmoBlockedError(PEER_BLOCKED))
                return
        self._rate = claim.rate
        self._step = claim.step
        late = math.inf if offset is None else max(LATE_MIN_S, LATE_SHARE * claim.step)
        self._starts.extend((at + (offset or 0.0), at + (offset or 0.0) + late)
                            for at in claim.starts)  # fmt: skip

    def throttled(self, slot: Slot, pause_s: float) -> Throttle:
        """A request that started at `slot` got a 429: cut the rate (once per episode), hold
        every start back for `pause_s` (longer when the breaker fires), give up the starts
        granted to this process, and widen the margin if it started at `max_rps`."""
        widened_s = None  # shared with every process of the account (`SafetyMargin.shared`)
        with self._cond:
            self.throttles += 1
            self._starts.clear()
            if slot.rate >= self.max_rps and slot.started > self._widened_at:
                self._widen_locked()
                widened_s = self.margin.value
        result = self._throttle_shared(slot.at, pause_s, widened_s) if self.store else None
        with self._cond:
            if result is None:
                now = self._monotonic()
                result = self._local.throttled(now, slot.at, self.max_rps, pause_s,
                                               self.cool_down_s)  # fmt: skip
            self._rate = result.rate
            self._paused_until = max(self._paused_until, self._monotonic() + result.pause_s)
            self._cond.notify_all()
        return result

    def _throttle_shared(self, sent_at: float, pause_s: float,
                         widened_s: float | None) -> Throttle | None:  # fmt: skip
        assert self.store is not None
        if not self._store_usable():
            return None
        since = sent_at - self._offset  # on the store's clock
        try:
            result, _, _ = self.store.update(shared_change(lambda state, now: state.throttled(
                now, since, self.max_rps, pause_s, self.cool_down_s,
                widened_s=widened_s)))  # fmt: skip
        except StoreError as exc:
            self._store_down(exc)
            return None
        return result

    def _widen_locked(self) -> None:
        """A 429 our schedule should have prevented (a request started at `max_rps`): widen
        the margin for a while (`SafetyMargin.throttled`), once per episode."""
        was = self.margin.value
        if self.margin.throttled():  # none stays none (tests ask for it)
            log.warning("amo_rate_margin_widened", margin_ms=round(self.margin.value * 1000),
                        was_ms=round(was * 1000))  # fmt: skip
            self._set_margin(self.margin.value)
            self._widened_at = self._monotonic()

    def pause(self, seconds: float) -> None:
        """Hold every thread of this process back for `seconds`; never shortens a longer pause."""
        with self._cond:
            self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    def halt(self, error: AmoError) -> bool:
        """Refuse every later request with `error` (the IP is blocked); wakes waiting threads.
        With a store, other processes of the account stop at their next claim. True for the
        first halt (whoever reports the block says it once)."""
        with self._cond:
            first = self._halted is None
            self._halt_locked(error)
        if self.store is not None and isinstance(error, AmoBlockedError):
            try:
                self.store.update(shared_change(lambda state, now: state.block(now)))
            except StoreError as exc:
                log.warning("amo_rate_budget_block_unshared", error=str(exc))
        return first

    def _halt_locked(self, error: AmoError) -> None:
        self._halted = error
        self._cond.notify_all()

    def paused_for(self) -> float:
        """Seconds left of this process's current pause (0 when none)."""
        with self._cond:
            return max(0.0, self._paused_until - self._monotonic())

    @property
    def allowed_rps(self) -> float:
        """The rate starts are currently allowed at (requests/s)."""
        with self._cond:
            if self.store is None:
                return self._local.allowed(self._monotonic(), self.max_rps)
            return self._rate

    @property
    def waiting(self) -> int:
        """Threads waiting for a start now: 0 means the budget has room for another request."""
        return len(self.turns)

    @property
    def halted(self) -> AmoError | None:
        return self._halted

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
