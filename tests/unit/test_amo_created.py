"""`sync.amo.created`: the look-up of a lost create by `filter[created_at]` (amoCRM ignores
`order[id]`) is trusted only when the answer shows the filter honoured and amoCRM's clock near
ours; anything else is an `InvariantError` (the caller resends nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sync.amo.auth import StaticToken
from sync.amo.client import AmoClient
from sync.amo.created import ASKS, SLACK_S, EmptyAnswerError, Sent, created_between
from sync.amo.ratelimit import RateLimiter
from sync.errors import InvariantError
from tests.unit.amo_helpers import FakeClock, Script, config, reply

WINDOW_S = 10.0


@contextmanager
def _client(script: Script, clock: FakeClock) -> Iterator[AmoClient]:
    cfg = config()
    client = AmoClient(
        cfg,
        StaticToken(cfg.access_token),
        limiter=RateLimiter(1000.0, margin_s=0.0),
        clock=clock,
        transport=script.transport,
    )
    with client:
        yield client


def _date(clock: FakeClock, ahead_s: float = 0.0) -> dict[str, str]:
    return {"Date": formatdate(clock.now().timestamp() + ahead_s, usegmt=True)}


def _page(*created: int, clock: FakeClock, ahead_s: float = 0.0) -> httpx.Response:
    contacts = [{"id": 100 + n, "name": f"c{n}", "created_at": at} for n, at in enumerate(created)]
    return reply(200, {"_page": 1, "_embedded": {"contacts": contacts}}, _date(clock, ahead_s))


def _range(request: httpx.Request) -> tuple[int, int]:
    query = parse_qs(urlsplit(str(request.url)).query)
    return int(query["filter[created_at][from]"][0]), int(query["filter[created_at][to]"][0])


def _look(script: Script, clock: FakeClock, sent: Sent) -> list[dict[str, Any]]:
    with _client(script, clock) as client:
        return created_between(client, sent, WINDOW_S)


def test_a_read_that_honours_the_range_is_trusted() -> None:
    clock = FakeClock()
    sent = clock.now()
    clock.sleep(5)
    now = int(clock.now().timestamp())
    script = Script(lambda request: _page(now - 3, now, clock=clock))
    found = _look(script, clock, Sent(sent))
    assert [c["id"] for c in found] == [100, 101]
    assert _range(script.requests[0]) == (int(sent.timestamp()) - SLACK_S, now + SLACK_S)


def test_a_dead_runs_range_ends_a_window_after_its_last_send() -> None:
    clock = FakeClock()
    first = clock.now()
    last = first + timedelta(seconds=4)
    clock.sleep(3600)  # the next push, an hour later
    script = Script(lambda request: _page(int(first.timestamp()), clock=clock))
    assert len(_look(script, clock, Sent(first, last))) == 1
    low, high = _range(script.requests[0])
    assert (low, high) == (
        int(first.timestamp()) - SLACK_S,
        int(last.timestamp()) + int(WINDOW_S) + SLACK_S,
    )


def test_a_contact_outside_the_range_shows_the_filter_ignored() -> None:
    clock = FakeClock()
    old = int(clock.now().timestamp()) - 86_400
    script = Script(lambda request: _page(old, int(clock.now().timestamp()), clock=clock))
    with pytest.raises(InvariantError, match=r"ignores order\[id\] and filter\[created_at\]"):
        _look(script, clock, Sent(clock.now()))


@pytest.mark.parametrize("ahead_s", [-(SLACK_S + 60), SLACK_S + 60])
def test_amocrms_clock_far_from_ours_is_not_trusted(ahead_s: float) -> None:
    clock = FakeClock()
    now = int(clock.now().timestamp())
    script = Script(lambda request: _page(now, clock=clock, ahead_s=ahead_s))
    with pytest.raises(InvariantError, match="clock"):
        _look(script, clock, Sent(clock.now()))


def test_an_answer_without_a_date_is_not_trusted() -> None:
    clock = FakeClock()
    now = int(clock.now().timestamp())
    script = Script(reply(200, {"_embedded": {"contacts": [{"id": 1, "created_at": now}]}}))
    with pytest.raises(InvariantError, match="clock"):
        _look(script, clock, Sent(clock.now()))


def test_a_clock_within_the_slack_is_trusted() -> None:
    clock = FakeClock()
    now = int(clock.now().timestamp())
    script = Script(lambda request: _page(now, clock=clock, ahead_s=-(SLACK_S - 5)))
    assert len(_look(script, clock, Sent(clock.now()))) == 1


def test_a_204_is_asked_again_and_the_contacts_of_the_next_answer_count() -> None:
    """amoCRM's spurious 204 for a list that is not empty (amocrm-api.md §2): believed, it would
    make a create amoCRM did make look "not made", and the caller would send it twice."""
    clock = FakeClock()
    now = int(clock.now().timestamp())
    answers = iter([reply(204, headers=_date(clock)), _page(now, clock=clock)])
    script = Script(lambda request: next(answers))
    assert [c["id"] for c in _look(script, clock, Sent(clock.now()))] == [100]
    assert len(script.requests) == 2
    assert clock.sleeps == [1.0]  # `reconcile_settle_s` before asking again


def test_a_204_that_persists_is_never_taken_for_nothing_made() -> None:
    clock = FakeClock()
    script = Script(lambda request: reply(204, headers=_date(clock)))
    with pytest.raises(EmptyAnswerError, match="not resent"):
        _look(script, clock, Sent(clock.now()))
    assert len(script.requests) == ASKS
