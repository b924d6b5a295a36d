"""The limiter's safety margin widens itself: a 429 for a request started at `max_rps` (which our
own schedule should have prevented) doubles it, up to `MAX_MARGIN_S`, for the rest of the
process; a 429 while the rate is already cut does not. AIMD and the pause work as before."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from sync.amo.gate import RequestWatch, TokenGate
from sync.amo.ratelimit import MAX_MARGIN_S, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter_at(margin_s: float, clock: FakeClock | None = None) -> RateLimiter:
    return RateLimiter(7, margin_s=margin_s, monotonic=clock or FakeClock())


def test_a_429_at_max_rps_doubles_the_margin() -> None:
    limiter = limiter_at(0.035)
    with capture_logs() as logs:
        throttle = limiter.throttled(limiter.acquire(), pause_s=0.0)
    assert limiter.margin_s == pytest.approx(0.07)
    assert limiter.window == pytest.approx(1.07)
    assert limiter.step == pytest.approx(1.07 / 7)
    assert throttle.cut  # and the rate is cut, deep: the first 429 of a burst
    assert limiter.allowed_rps == pytest.approx(0.5, abs=0.01)
    widened = [e for e in logs if e["event"] == "amo_rate_margin_widened"]
    assert widened == [
        {"event": "amo_rate_margin_widened", "log_level": "warning", "margin_ms": 70, "was_ms": 35}
    ]


def test_the_margin_stops_at_its_cap() -> None:
    clock = FakeClock()
    limiter = limiter_at(0.2, clock)
    limiter.throttled(limiter.acquire(), pause_s=0.0)
    assert limiter.margin_s == pytest.approx(MAX_MARGIN_S)
    clock.now += 1000.0  # the rate is back at max_rps long since
    assert limiter.allowed_rps == 7
    with capture_logs() as logs:
        limiter.throttled(limiter.acquire(), pause_s=0.0)
    assert limiter.margin_s == pytest.approx(MAX_MARGIN_S)
    assert not [e for e in logs if e["event"] == "amo_rate_margin_widened"]


def test_a_429_below_max_rps_leaves_the_margin() -> None:
    clock = FakeClock()
    limiter = limiter_at(0.035, clock)
    limiter.throttled(limiter.acquire(), pause_s=0.0)
    clock.now += 3.0  # climbing back: the next start goes out below max_rps
    slot = limiter.acquire()
    assert slot.rate < 7
    limiter.throttled(slot, pause_s=0.0)  # the budget is lower than ours: AIMD's business
    assert limiter.margin_s == pytest.approx(0.07)


def test_a_429_in_flight_before_the_cut_widens_once() -> None:
    clock = FakeClock()
    limiter = limiter_at(0.035, clock)
    first = limiter.acquire()
    clock.now += 0.2
    second = limiter.acquire()  # both started at max_rps, both get a 429
    limiter.throttled(first, pause_s=0.0)
    limiter.throttled(second, pause_s=0.0)
    assert limiter.margin_s == pytest.approx(0.07)


class TickingClock(FakeClock):
    """Moves on by half a millisecond at every look, so a wait for a start ends."""

    def __call__(self) -> float:
        self.now += 0.0005
        return self.now


def test_later_starts_keep_the_wider_spacing() -> None:
    clock = TickingClock()
    limiter = limiter_at(0.035, clock)
    first = limiter.acquire()
    limiter.throttled(first, pause_s=0.0)  # the rate is cut too: 0.584 rps 1.8 s later
    clock.now = first.started + 1.8
    second = limiter.acquire()
    # at the old margin the start was due (1.035 s / 0.584 = 1.772 s): it would leave now
    assert second.started - first.started >= 1.07 / 0.585


def test_a_request_counts_from_when_its_headers_are_out() -> None:
    """The window counts a request from when its headers were written, not when writing began:
    a thread held up in between would otherwise eat the margin."""
    clock = FakeClock()
    limiter = limiter_at(0.035, clock)
    slot = limiter.acquire()
    watch = RequestWatch(TokenGate(), None, lambda: limiter.sent(slot), lambda: limiter.sent(slot))
    watch.trace("http11.send_request_headers.started", {})
    clock.now += 0.03  # e.g. the writing thread waited for the GIL
    watch.trace("http11.send_request_headers.complete", {})
    assert slot.at == clock.now
