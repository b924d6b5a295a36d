"""The process limiter's margin learns the arrival spread (`sync.amo.margin`): 150 ms until
answers bound it, then the bound (times 1.25) when that is small, narrowing by trying when it
is not, and a 429 at full rate widens it for a while of full-rate starts."""

from __future__ import annotations

import random

import pytest

from sync.amo.margin import (
    BOUNDED_S,
    FLOOR_S,
    HOLD_WINDOWS,
    MAX_HOLD_WINDOWS,
    MAX_S,
    MIN_SAMPLES,
    NARROW_S,
    SAFETY,
    SAMPLE_AGE_S,
    START_S,
    SafetyMargin,
    request_kind,
)
from sync.amo.ratelimit import RateLimiter

KIND = "GET /api/v4/contacts"


def answers(margin: SafetyMargin, kind: str, ttfbs: list[float]) -> None:
    for ttfb in ttfbs:
        margin.answered(kind, ttfb)


def test_a_new_process_starts_at_150_ms_until_answers_bound_the_spread() -> None:
    margin = SafetyMargin()
    assert margin.value == START_S
    answers(margin, KIND, [0.3] * (MIN_SAMPLES - 1))
    for _ in range(20):  # full-rate windows say nothing without a bound
        margin.started_at_full_rate(1)
    assert (margin.value, margin.bound) == (START_S, None)


def test_a_tight_path_bounds_the_margin_down_to_the_floor() -> None:
    margin = SafetyMargin()
    answers(margin, KIND, [0.300 + 0.001 * (i % 10) for i in range(MIN_SAMPLES)])
    assert margin.bound == pytest.approx(SAFETY * 0.009)
    assert margin.value == FLOOR_S


def test_a_jittery_path_gets_a_margin_above_its_spread() -> None:
    """0-120 ms of one-way jitter shows in every answer's time to first byte."""
    rng = random.Random(5)
    margin = SafetyMargin()
    answers(margin, KIND, [0.05 + rng.uniform(0, 0.12) for _ in range(64)])
    assert margin.bound is not None
    assert margin.bound <= BOUNDED_S
    assert 0.12 < margin.value == pytest.approx(margin.bound)


def test_the_kind_with_the_least_spread_bounds_the_path() -> None:
    """A slow kind's own spread is the server's work, not the path's: the tightest kind wins."""
    margin = SafetyMargin()
    answers(margin, "PATCH /api/v4/contacts", [0.1 + 0.05 * (i % 9) for i in range(MIN_SAMPLES)])
    assert margin.bound == pytest.approx(SAFETY * 0.4)
    answers(margin, KIND, [0.2 + 0.012 * (i % 7) for i in range(MIN_SAMPLES)])
    assert margin.bound == pytest.approx(SAFETY * 0.072)
    assert margin.value == pytest.approx(SAFETY * 0.072)  # 90 ms: above the floor


def test_an_unbounded_path_narrows_by_trying_to_the_floor() -> None:
    """400-800 ms answers (the benchmarks' emulator): the spread says nothing about the path,
    so the margin narrows one step per window of full-rate starts without a 429."""
    margin = SafetyMargin()
    answers(margin, KIND, [0.4 + 0.4 * (i % 2) for i in range(MIN_SAMPLES)])
    assert margin.value == START_S
    assert margin.started_at_full_rate(7) is False  # not a whole window yet
    for _ in range(5):
        margin.started_at_full_rate(7)
    assert margin.started_at_full_rate(7) is True
    assert margin.value == pytest.approx(START_S - NARROW_S)
    for _ in range(7 * 20):
        margin.started_at_full_rate(7)
    assert margin.value == FLOOR_S


def test_a_429_at_full_rate_widens_to_the_bound_and_stops_the_narrowing() -> None:
    margin = SafetyMargin()
    answers(margin, KIND, [0.1 + 0.3 * (i % 2) for i in range(MIN_SAMPLES)])  # bound 375 ms
    for _ in range(7 * 7):
        margin.started_at_full_rate(7)
    assert margin.value == FLOOR_S
    assert margin.throttled() is True
    assert margin.value == MAX_S  # the bound, 375 ms, capped
    for _ in range(7 * 20):
        margin.started_at_full_rate(7)
    assert margin.value == MAX_S
    answers(margin, KIND, [0.2] * 64)  # a calm path later: never below what the 429 taught
    assert margin.value == MAX_S


def test_a_rare_kinds_old_calm_answers_do_not_hide_a_path_grown_jittery() -> None:
    """The account was answered 16 times in a calm hour; an hour later contacts answers spread
    0-150 ms: the margin follows them, not the old least spread."""
    now = [0.0]
    margin = SafetyMargin(monotonic=lambda: now[0])
    answers(margin, "GET /api/v4/account", [0.2 + 0.001 * (i % 10) for i in range(MIN_SAMPLES)])
    assert margin.value == FLOOR_S
    now[0] += SAMPLE_AGE_S + 1
    answers(margin, KIND, [0.3])
    assert (margin.bound, margin.value) == (None, START_S)  # nothing fresh: as a new process
    answers(margin, KIND, [0.3 + 0.01 * (i % 16) for i in range(MIN_SAMPLES)])
    assert margin.bound == pytest.approx(SAFETY * 0.15)
    assert margin.value == pytest.approx(SAFETY * 0.15)


def full_rate_windows(margin: SafetyMargin, windows: int, limit: int = 7) -> None:
    for _ in range(windows * limit):
        margin.started_at_full_rate(limit)


def test_a_429_from_another_integration_does_not_keep_a_daemon_wide_for_life() -> None:
    """A 429 at full rate may be another integration spending the account's budget: after
    `HOLD_WINDOWS` windows at full rate without one, the width narrows back to the bound."""
    margin = SafetyMargin()
    answers(margin, KIND, [0.300 + 0.001 * (i % 10) for i in range(MIN_SAMPLES)])
    assert margin.value == FLOOR_S
    margin.throttled()  # 80 -> 160 ms
    assert margin.value == pytest.approx(0.16)
    full_rate_windows(margin, HOLD_WINDOWS - 2)
    assert margin.value == pytest.approx(0.16)  # held: the next 429 would come too soon
    full_rate_windows(margin, 40)
    assert margin.value == FLOOR_S
    answers(margin, KIND, [0.3])
    assert margin.value == FLOOR_S


def test_each_429_at_full_rate_holds_the_width_twice_as_long_up_to_a_cap() -> None:
    """A path that does need the width draws a 429 each time it narrows: one per hold, each
    hold twice the last."""
    margin = SafetyMargin()
    answers(margin, KIND, [0.4 + 0.4 * (i % 2) for i in range(MIN_SAMPLES)])  # unbounded
    holds = []
    for _ in range(6):
        margin.throttled()
        wide, windows = margin.value, 0
        while margin.value >= wide:
            full_rate_windows(margin, 1)
            windows += 1
        holds.append(windows)
    assert holds[:4] == [HOLD_WINDOWS + 1, 2 * HOLD_WINDOWS + 1, 4 * HOLD_WINDOWS + 1,
                         8 * HOLD_WINDOWS + 1]  # fmt: skip
    assert holds[4:] == [MAX_HOLD_WINDOWS + 1] * 2


def test_without_a_bound_the_width_narrows_back_to_150_ms() -> None:
    margin = SafetyMargin()
    margin.throttled()
    assert margin.value == pytest.approx(0.3)
    full_rate_windows(margin, HOLD_WINDOWS + 40)
    assert margin.value == START_S


def test_a_fixed_margin_stays_as_given() -> None:
    margin = SafetyMargin(0.0, adaptive=False)
    answers(margin, KIND, [0.5 * (i % 2) for i in range(64)])
    for _ in range(70):
        margin.started_at_full_rate(7)
    assert margin.value == 0.0
    assert margin.throttled() is False  # none stays none


def test_the_limiter_takes_the_margin_from_its_answers() -> None:
    now = [100.0]
    limiter = RateLimiter(7, monotonic=lambda: now[0], adaptive_margin=True)
    assert limiter.window == pytest.approx(1 + START_S)
    for i in range(MIN_SAMPLES):
        slot = limiter.acquire()
        now[0] += 0.3 + 0.001 * (i % 3)  # answered 300-302 ms after it left
        limiter.answered(slot, KIND)
        now[0] += 1.0
    assert limiter.margin_s == FLOOR_S
    assert limiter.window == pytest.approx(1 + FLOOR_S)


def test_request_kinds_ignore_query_and_ids() -> None:
    assert request_kind("GET", "/api/v4/contacts?page=2&limit=250") == KIND
    assert request_kind("GET", "/api/v4/contacts/17") == "GET /api/v4/contacts/{id}"
    assert request_kind("PATCH", "/api/v4/contacts") == "PATCH /api/v4/contacts"
