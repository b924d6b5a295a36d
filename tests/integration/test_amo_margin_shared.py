"""The learned safety margin outlives its process, per account, in the shared budget's row
(real PostgreSQL): a new process starts from the margin the last one left if it is recent, and a
429's widening reaches the other processes at their next claim."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from sync.amo.budget import MARGIN_KEEP_S, BudgetState
from sync.amo.margin import FLOOR_S, START_S
from sync.amo.ratelimit import RateLimiter
from sync.db.budget import BudgetRow

KIND = "GET /api/v4/contacts"


def process(engine: Engine) -> RateLimiter:
    """A limiter as a new CLI process builds it: its own store object, an adaptive margin."""
    return RateLimiter(7.0, store=BudgetRow(engine), adaptive_margin=True)


def test_a_new_process_starts_from_the_margin_the_last_one_learned(engine: Engine) -> None:
    first = process(engine)
    first.acquire()  # joins: reads what the row holds (nothing yet)
    for i in range(16):  # calm answers: the margin narrows to the floor
        first.margin.answered(KIND, 0.1 + i * 0.001)
    assert first.margin.value == FLOOR_S
    first.acquire()  # its next claim leaves the margin in the row
    second = process(engine)
    assert second.margin.value == START_S
    second.acquire()
    assert second.margin.value == FLOOR_S
    assert second.margin_s == FLOOR_S  # its window uses it


def test_a_margin_left_more_than_a_day_ago_is_ignored(engine: Engine) -> None:
    first = process(engine)
    first.acquire()
    for i in range(16):
        first.margin.answered(KIND, 0.1 + i * 0.001)
    first.acquire()
    BudgetRow(engine).update(  # as if a day and a bit passed since
        lambda value, now: (None, {**(value or {}), "margin_at": now - MARGIN_KEEP_S - 60})
    )
    second = process(engine)
    second.acquire()
    assert second.margin.value == START_S


def test_a_row_of_before_without_a_margin_starts_at_start_s(engine: Engine) -> None:
    old_row = {"granted": [], "paused_until": 0.0, "wide_step": 0.0, "wide_until": 0.0}
    BudgetRow(engine).update(lambda value, now: (None, old_row))
    limiter = process(engine)
    limiter.acquire()
    limiter.acquire()
    assert limiter.margin.value == START_S


def test_a_429_widening_reaches_another_process_at_its_next_claim(engine: Engine) -> None:
    one, other = process(engine), process(engine)
    other.acquire()
    slot = one.acquire()
    one.throttled(slot, 0.0)  # a 429 for a request started at max_rps: widens to 2 x 150 ms
    assert one.margin.value == 2 * START_S
    assert other.margin.value == START_S  # not yet: it reads the row at its next claim
    other.acquire()
    assert other.margin.value == 2 * START_S
    assert other.margin_s == 2 * START_S


def test_a_joining_process_claims_with_the_margin_left_not_start_s() -> None:
    """Its first claim at `START_S` would bind its own schedule for `WIDE_HOLD_S` (the row keeps
    to the widest interval claimed lately), whatever it learned after."""
    state = BudgetState(margin=FLOOR_S, margin_at=1000.0)
    at_start = 1 / 7 + START_S / 7
    joining = state.claim(1000.5, 1, 7.0, at_start, (None, True))
    assert joining.step == pytest.approx(1 / 7 + FLOOR_S / 7)
    assert joining.margin == FLOOR_S
    stale = BudgetState(margin=FLOOR_S, margin_at=1000.0)
    late = stale.claim(1000.0 + MARGIN_KEEP_S + 1, 1, 7.0, at_start, (None, True))
    assert late.step == pytest.approx(at_start)
    assert late.margin is None
