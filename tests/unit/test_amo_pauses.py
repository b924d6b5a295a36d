"""A 429's `retry_after` buys a bounded pause, and a stopping process cuts every wait short."""

from __future__ import annotations

import threading
import time

import pytest
from structlog.testing import capture_logs

from sync.amo.backoff import MAX_PAUSE_S, pause
from sync.amo.ratelimit import RateLimiter
from sync.amo.responses import MAX_RETRY_AFTER_S
from sync.clock import SystemClock
from sync.errors import AmoStoppedError, AmoTransientError
from tests.unit.amo_helpers import FakeClock, Script, reply, session

OK = reply(200, {"_page": 1})
DOCUMENTED_429 = reply(  # the body of amoCRM's documentation (amocrm-api.md §1)
    429,
    {"title": "Too Many Requests", "type": "https://httpstatus.es/429", "status": 429,
     "detail": "You have sent too many requests in a given amount of time.", "retry_after": 300},
)  # fmt: skip


def test_the_documented_retry_after_300_fails_a_command_with_one_line() -> None:
    """amocrm-api.md §1: honour `retry_after`. A one-shot command does not sit for 5 minutes:
    it says amoCRM asked for 300 s (exit 1), and sends nothing more."""
    clock = FakeClock()
    script = Script(DOCUMENTED_429, OK)
    amo = session(script, clock=clock)
    with pytest.raises(AmoTransientError, match=r"asked to wait 300 s .* run it again later"):
        amo.send("GET", "/api/v4/contacts")
    assert clock.sleeps == []
    assert len(script.requests) == 1


def test_the_daemon_waits_out_the_documented_retry_after_300() -> None:
    clock = FakeClock()
    amo = session(Script(DOCUMENTED_429, OK), clock=clock)
    amo.backoff.max_pause_s = MAX_RETRY_AFTER_S  # as `amosync run` sets it
    with capture_logs() as logs:
        assert amo.send("GET", "/api/v4/contacts").data == {"_page": 1}
    assert len(clock.sleeps) == 1
    assert 300 <= clock.sleeps[0] <= 301
    (limited,) = [e for e in logs if e["event"] == "amo_rate_limited"]
    assert (limited["retry_after"], round(limited["pause_s"])) == (300, 300)


def test_a_retry_after_up_to_the_command_cap_is_waited_by_a_command() -> None:
    clock = FakeClock()
    body = {"title": "Too Many Requests", "status": 429, "retry_after": MAX_PAUSE_S}
    session(Script(reply(429, body), OK), clock=clock).send("GET", "/x")
    assert MAX_PAUSE_S <= clock.sleeps[0] <= MAX_PAUSE_S + 1


def test_a_short_retry_after_is_honoured_as_given() -> None:
    clock = FakeClock()
    body = {"title": "Too Many Requests", "status": 429, "retry_after": 4}
    session(Script(reply(429, body), OK), clock=clock).send("GET", "/x")
    assert 4 <= clock.sleeps[0] <= 5


def test_stop_ends_a_429_pause_and_the_waits_behind_it_at_once() -> None:
    limiter = RateLimiter(100, margin_s=0.0)
    amo = session(Script(DOCUMENTED_429, OK), limiter=limiter)
    amo.backoff.max_pause_s = MAX_RETRY_AFTER_S  # the daemon's: it waits 300 s
    amo.clock = SystemClock()  # a real pause of 300 s
    errors: list[BaseException] = []

    def call() -> None:
        try:
            amo.send("GET", "/api/v4/contacts")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    deadline = time.monotonic() + 5
    while limiter.paused_for() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert limiter.paused_for() > 10
    second = threading.Thread(target=call)  # waits for a start behind the pause
    second.start()
    time.sleep(0.2)
    started = time.monotonic()
    amo.stop()
    first.join(5)
    second.join(5)
    assert time.monotonic() - started < 2
    assert [type(e) for e in errors] == [AmoStoppedError, AmoStoppedError]


def test_pause_on_an_injected_clock_sleeps_then_checks() -> None:
    stopping = threading.Event()
    clock = FakeClock()
    pause(clock, stopping, 2.0)
    assert clock.sleeps == [2.0]
    stopping.set()
    with pytest.raises(AmoStoppedError):
        pause(clock, stopping, 1.0)


def test_a_final_stop_refuses_every_new_request_and_names_its_reason() -> None:
    """The daemon's stop lets a request that waits for nothing go out (its job may finish);
    a one-shot command's SIGTERM (`final`) sends nothing more, and says why."""
    script = Script(OK, OK)
    amo = session(script)
    amo.stop()
    assert amo.send("GET", "/api/v4/contacts").data == {"_page": 1}
    amo.stop("stopped by SIGTERM", final=True)
    with pytest.raises(AmoStoppedError, match=r"^stopped by SIGTERM: no request is sent"):
        amo.send("POST", "/api/v4/contacts", json=[{}], write=True)
    assert len(script.requests) == 1
    assert amo.writes_tried == 0  # a write refused before it began: not "maybe sent"


def test_a_final_stop_ends_a_wait_for_an_ordinary_start() -> None:
    limiter = RateLimiter(0.5, margin_s=0.0)  # one start, then the next one 2 s later
    amo = session(Script(OK, OK), limiter=limiter)
    amo.send("GET", "/api/v4/contacts")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            amo.send("GET", "/api/v4/contacts")
        except AmoStoppedError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=call)
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    amo.stop("stopped by SIGINT", final=True)
    waiting.join(5)
    assert time.monotonic() - started < 1
    assert [str(e) for e in errors] == ["stopped by SIGINT: no request is sent to amoCRM any more"]


def test_a_command_failing_on_a_long_retry_after_still_holds_the_budget_back() -> None:
    """The command exits rather than wait, but the 429 is the account's: the budget every
    process of the schema shares is cut and paused (the daemon or another command sending on
    at 7 rps meanwhile is how an IP gets blocked), as long as a command waits: the next
    command does not sit for the 300 s either."""
    clock = FakeClock()
    limiter = RateLimiter(7, margin_s=0.0, monotonic=clock.monotonic)
    amo = session(Script(DOCUMENTED_429, OK), clock=clock, limiter=limiter)
    with pytest.raises(AmoTransientError, match="asked to wait 300 s"):
        amo.send("GET", "/api/v4/contacts")
    assert limiter.throttles == 1
    assert limiter.allowed_rps < 7
    assert MAX_PAUSE_S - 1 <= limiter.paused_for() <= MAX_PAUSE_S + 1
