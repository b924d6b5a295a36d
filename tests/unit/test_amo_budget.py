"""The rate budget as a value: schedule spacing, the 429 policy (a deep first cut, halving,
the climb back), pauses, the 429 breaker, storage."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.amo.budget import (
    COOL_DOWN_S,
    DOUBLE_S,
    FAST_S,
    KNEE,
    MAX_429_PER_MINUTE,
    MIN_RPS,
    PACE,
    SLOW_SHARE,
    WIDE_HOLD_S,
    BudgetState,
    shared_change,
)
from sync.amo.margin import START_S
from tests.unit.test_amo_ratelimit import max_in_window

MAX_RPS = 7.0
INTERVAL = 1.08 / 7  # the limiter's step at 7 rps with an 80 ms margin


@given(
    st.lists(
        st.tuples(st.floats(0, 0.5), st.integers(1, 4), st.sampled_from([7.0, 3.5, 1.0])),
        min_size=1,
        max_size=60,
    )
)
def test_claims_by_any_mix_of_processes_never_put_more_than_max_rps_in_a_second(
    claims: list[tuple[float, int, float]],
) -> None:
    """Processes claim batches at arbitrary moments (each with its own max_rps, the account's
    never above 7): the starts of every claim together hold at most 7 in any second."""
    state = BudgetState()
    now, starts = 100.0, []
    for pause, count, max_rps in claims:
        now += pause
        claim = state.claim(now, count, max_rps, INTERVAL * MAX_RPS / max_rps)
        assert claim.starts[0] >= now
        starts.extend(claim.starts)
    assert starts == sorted(starts)
    assert max_in_window(starts, 1.0) <= MAX_RPS


def burst(state: BudgetState, at: float) -> None:
    """A first 429 (a deep cut) at `at`: what the tests of later cuts start from."""
    state.throttled(at, at, MAX_RPS, pause_s=0.0, cool_down_s=60)


def test_the_first_429_of_a_burst_cuts_deep_once_per_episode() -> None:
    state = BudgetState()
    state.claim(10.0, 4, MAX_RPS, INTERVAL)
    first = state.throttled(10.5, sent_at=10.2, max_rps=MAX_RPS, pause_s=1.0, cool_down_s=60)
    assert (first.cut, first.rate) == (True, MIN_RPS)  # 7 -> 0.5: under almost any budget
    # sent before that cut: the same congestion, no second cut
    same = state.throttled(10.6, sent_at=10.3, max_rps=MAX_RPS, pause_s=1.0, cool_down_s=60)
    assert not same.cut
    assert same.rate == pytest.approx(state.allowed(10.6, MAX_RPS))


def test_later_429s_of_a_burst_halve_the_rate_that_drew_them() -> None:
    state = BudgetState()
    burst(state, 0.0)
    climbed = state.allowed(20.0, MAX_RPS)
    assert climbed == pytest.approx(MIN_RPS * 2 ** (20.0 / DOUBLE_S))
    later = state.throttled(20.0, sent_at=19.8, max_rps=MAX_RPS, pause_s=1.0, cool_down_s=60)
    assert later.cut
    assert later.rate == pytest.approx(climbed / 2)
    # a minute later all is calm again: the next 429 starts a new burst, cut deep
    calm = state.throttled(90.0, sent_at=89.9, max_rps=MAX_RPS, pause_s=1.0, cool_down_s=60)
    assert calm.rate == MIN_RPS


def test_after_a_first_cut_the_rate_doubles_from_the_pauses_end() -> None:
    state = BudgetState()
    state.throttled(100.0, 100.0, MAX_RPS, pause_s=2.0, cool_down_s=60)
    assert state.allowed(101.0, MAX_RPS) == MIN_RPS  # paused: the climb waits for its end
    assert state.allowed(102.0 + DOUBLE_S, MAX_RPS) == pytest.approx(2 * MIN_RPS)
    # a second 429 within seconds needs a budget under ~1 rps
    assert state.allowed(102.0 + 5, MAX_RPS) < 1.0
    knee = KNEE * MAX_RPS
    to_knee = DOUBLE_S * math.log2(knee / MIN_RPS)
    assert state.allowed(102.0 + to_knee, MAX_RPS) == pytest.approx(knee)
    assert state.allowed(102.0 + to_knee + 10, MAX_RPS) == pytest.approx(
        knee + 10 * SLOW_SHARE * MAX_RPS
    )
    assert state.allowed(102.0 + to_knee + 45, MAX_RPS) == pytest.approx(MAX_RPS)


def test_after_a_later_cut_fast_to_the_knee_slowly_to_the_peak_then_doubling_past_it() -> None:
    state = BudgetState()
    burst(state, 0.0)
    peak = state.allowed(20.0, MAX_RPS)  # 2.8 rps: where this account's budget is
    state.throttled(20.0, 20.0, MAX_RPS, pause_s=0.0, cool_down_s=60)
    knee = KNEE * peak
    assert state.allowed(20.0, MAX_RPS) == pytest.approx(peak / 2)
    assert state.allowed(20.0 + FAST_S / 2, MAX_RPS) == pytest.approx((peak / 2 + knee) / 2)
    assert state.allowed(20.0 + FAST_S, MAX_RPS) == pytest.approx(knee)
    # knee to peak in 45 s whatever the peak: one 429 a minute at any budget below max_rps
    assert state.allowed(20.0 + FAST_S + 45, MAX_RPS) == pytest.approx(peak)
    # past it, the budget freed up: the rate doubles every DOUBLE_S
    assert state.allowed(20.0 + FAST_S + 45 + DOUBLE_S, MAX_RPS) == pytest.approx(2 * peak)
    assert state.allowed(20.0 + FAST_S + 45 + 3 * DOUBLE_S, MAX_RPS) == MAX_RPS


def test_the_rate_never_falls_below_the_floor() -> None:
    state = BudgetState()
    for moment in range(10):
        state.throttled(float(moment), float(moment), MAX_RPS, pause_s=0.0, cool_down_s=0.0)
    assert state.allowed(9.0, MAX_RPS) == MIN_RPS


def test_starts_follow_the_allowed_rate_and_wait_out_a_pause() -> None:
    state = BudgetState()
    state.throttled(50.0, 50.0, MAX_RPS, pause_s=2.0, cool_down_s=60)
    claim = state.claim(50.0, 3, MAX_RPS, INTERVAL)
    assert claim.starts[0] == 52.0  # nobody starts during the pause
    assert claim.step == pytest.approx(14 * INTERVAL)
    assert claim.starts[1] - claim.starts[0] >= 14 * INTERVAL - 1e-9  # 0.5 rps and climbing
    assert claim.rate == MIN_RPS  # below max_rps: evenly spaced, no catch-up


def test_the_breaker_stops_everything_for_a_minute_at_the_third_429_in_a_minute() -> None:
    state = BudgetState()
    verdicts = [
        state.throttled(float(t), float(t), MAX_RPS, pause_s=1.0, cool_down_s=COOL_DOWN_S)
        for t in range(0, 5 * MAX_429_PER_MINUTE, 5)  # one 429 every 5 s
    ]
    cooling = [v.cooling for v in verdicts]
    assert cooling == [False] * (MAX_429_PER_MINUTE - 1) + [True]
    fired = verdicts[MAX_429_PER_MINUTE - 1]
    assert fired.pause_s == COOL_DOWN_S
    at = 5.0 * (MAX_429_PER_MINUTE - 1)
    assert MAX_429_PER_MINUTE == 3  # a stand-in blocking at 4 in a minute blocked 6
    assert state.claim(at + 1, 1, MAX_RPS, INTERVAL).starts[0] == at + COOL_DOWN_S
    # the climb starts from the last cut's rate when the cool-down ends
    assert state.allowed(at + COOL_DOWN_S, MAX_RPS) == state.floor_rps
    # spread out (two a minute, the policy's rounds at any budget), 429s never trip it
    calm = BudgetState()
    spread = [calm.throttled(t * 31.0, t * 31.0, MAX_RPS, 1.0, COOL_DOWN_S) for t in range(20)]
    assert not any(v.cooling for v in spread)


def test_state_round_trips_through_its_stored_value_and_garbage_starts_afresh() -> None:
    state = BudgetState()
    state.claim(5.0, 2, MAX_RPS, INTERVAL)
    state.throttled(5.2, 5.1, MAX_RPS, 1.0, 60)
    state.block(6.0)
    assert BudgetState.from_value(state.to_value()) == state
    assert BudgetState.from_value(BudgetState().to_value()) == BudgetState()
    assert BudgetState.from_value({"next_at": "soon"}) == BudgetState()
    assert BudgetState.from_value(None).cut_at == -math.inf


def test_shared_change_edits_the_stored_value() -> None:
    change = shared_change(lambda state, now: state.claim(now, 2, MAX_RPS, INTERVAL))
    claim, value = change({}, 7.0)
    assert claim.starts == pytest.approx((7.0, 7.0 + PACE * INTERVAL))
    assert value["granted"] == list(claim.starts)
    again, _ = change(value, 7.0)
    assert again.starts[0] == pytest.approx(7.0 + 2 * PACE * INTERVAL)


def test_after_a_quiet_spell_the_schedule_catches_up_but_never_beyond_the_window() -> None:
    state = BudgetState()
    burst = state.claim(10.0, 9, MAX_RPS, INTERVAL).starts
    assert burst[6] == pytest.approx(10.0 + 6 * PACE * INTERVAL)  # 7 at the paced gap
    assert burst[7] == pytest.approx(10.0 + 7 * INTERVAL)  # the 8th waits for the window
    assert max_in_window(list(burst), 1.0) <= MAX_RPS


def test_a_process_with_a_wider_margin_binds_the_shared_schedule_while_it_claims() -> None:
    """Two processes' starts reach amoCRM as one stream: one whose margin a 429 widened to
    350 ms must not be undercut by one still at 80 ms (7 per 1.08 s)."""
    wide = 1.35 / 7
    state = BudgetState()
    starts = [*state.claim(10.0, 4, MAX_RPS, wide).starts]
    for moment in (10.1, 10.2, 10.3, 10.4):
        starts += state.claim(moment, 1, MAX_RPS, INTERVAL).starts
    assert max_in_window(starts, 1.349) <= 7  # 1.35 s apart (11.08 s, the 8th, without)
    assert BudgetState.from_value(state.to_value()) == state  # other processes see it
    later = state.claim(10.0 + WIDE_HOLD_S + 5, 8, MAX_RPS, INTERVAL)  # the wide one left
    assert later.starts[7] - later.starts[0] == pytest.approx(7 * INTERVAL)


def test_a_new_processs_start_margin_binds_no_other_process() -> None:
    """A process's first claims at `START_S` (150 ms: it has learnt nothing yet) are ignorance,
    not evidence: held as the row's widest for a minute they pinned every process, itself
    included, at 150 ms (a full resync's ratio 1.17 → 1.21). Only a learned width binds."""
    fresh = (1 + START_S) / 7
    state = BudgetState()
    state.claim(10.0, 4, MAX_RPS, fresh)
    narrow = state.claim(12.0, 8, MAX_RPS, INTERVAL)  # the same or another process, narrowed
    assert narrow.starts[7] - narrow.starts[0] == pytest.approx(7 * INTERVAL)
    learned = (1 + 2 * START_S) / 7  # a 429 widened it beyond any start
    state.claim(20.0, 1, MAX_RPS, learned)
    bound = state.claim(22.0, 8, MAX_RPS, INTERVAL)
    assert bound.starts[7] - bound.starts[0] == pytest.approx(7 * learned)
