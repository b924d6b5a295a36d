"""A lost create's look-up never takes amoCRM's spurious 204 (an empty answer for a list that is
not empty: amocrm-api.md §2) for "not made": believed, it made a create amoCRM did make look
absent, and the caller sent it again (a duplicate contact). The review's repro, both paths:
by id down to the floor, and by `filter[created_at]` when there is no floor."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sync.amo.client import AmoClient
from sync.amo.created import ASKS, EmptyAnswerError, Sent
from sync.emulator import Emulator, FaultRule
from sync.errors import AmoWriteUnknownError
from tests.integration.amo_emulator import client_for, running
from tests.integration.test_amo_writes import person, posts
from tests.unit.amo_helpers import EmulatorTime

CONTACTS = "/api/v4/contacts"


def _empty(times: int | None, min_page: int = 1) -> FaultRule:
    return FaultRule(kind="empty_page", method="GET", path=CONTACTS, times=times,
                     min_page=min_page)  # fmt: skip


def _sent(client: AmoClient, n: int = 2) -> list[dict[str, Any]]:
    """`n` creates POSTed (amoCRM made them) by a process that died before storing the answer."""
    payloads = [{**person(k, "dead"), "request_id": str(-k)} for k in range(1, n + 1)]
    client.create_contacts(payloads)
    return payloads


def _recover(client: AmoClient, sent: list[dict[str, Any]], floor: int | None) -> set[str]:
    when = client.session.clock.now()
    span = None if floor is not None else Sent(when - timedelta(seconds=1), when)
    return set(client.recover_creates(sent, floor, (), span))


@pytest.mark.parametrize("by", ["floor", "created_at"])
def test_one_spurious_204_does_not_hide_made_creates(by: str) -> None:
    with running(contacts=3) as (emulator, url), client_for(emulator, url) as client:
        floor = client.newest_contact_id() if by == "floor" else None
        sent = _sent(client)
        emulator.add_fault(_empty(times=ASKS - 1))
        assert _recover(client, sent, floor) == {"-1", "-2"}


@pytest.mark.parametrize("by", ["floor", "created_at"])
def test_a_204_that_persists_is_an_error_not_nothing_made(by: str) -> None:
    with running(contacts=3) as (emulator, url), client_for(emulator, url) as client:
        floor = client.newest_contact_id() if by == "floor" else None
        sent = _sent(client)
        emulator.add_fault(_empty(times=None))
        with pytest.raises(EmptyAnswerError):
            _recover(client, sent, floor)


def test_a_204_before_the_floor_is_reached_is_not_the_end() -> None:
    """Page 2 answers 204 although the floor lies beyond it: not the end of the contacts above
    the floor (the scan used to stop there, and the creates on later pages looked not made)."""
    with (
        running(contacts=3) as (emulator, url),
        client_for(emulator, url, page_size=2) as client,
    ):
        floor = client.newest_contact_id()
        sent = _sent(client, 5)  # 3 pages above the floor
        emulator.add_fault(_empty(times=None, min_page=2))
        with pytest.raises(EmptyAnswerError, match="page 2"):
            _recover(client, sent, floor)
        emulator.clear_faults()
        emulator.add_fault(_empty(times=ASKS, min_page=2))  # iter_pages' own re-read + ours
        assert _recover(client, sent, floor) == {str(-k) for k in range(1, 6)}


LOST_504 = FaultRule(kind="error", status=504, method="POST", path=CONTACTS, apply_write=True)


def test_in_run_the_last_look_before_a_resend_is_not_a_spurious_204() -> None:
    """Lists lag 7 s: only the last look (at 10 s) can show the creates, and its page 1 answers
    204 once. Believed, the creates were sent again."""
    with (
        running(contacts=5) as (emulator, url),
        client_for(emulator, url, reconcile_settle_s=1.0) as client,
    ):
        _clock(emulator, client)
        emulator.set_controls(list_lag_s=7)
        emulator.add_fault(LOST_504)
        # let the floor read and the looks at 0, 1, 3 and 6 s through; the look at 10 s: a 204
        emulator.add_fault(FaultRule(kind="empty_page", method="GET", path=CONTACTS, skip=5))
        created = client.create_contacts([person(1, "lost"), person(2, "lost")])
        assert [r.reconciled for r in created] == [True, True]
        assert len(posts(emulator)) == 1


def test_in_run_looks_that_only_answer_204_resend_nothing() -> None:
    with running(contacts=5) as (emulator, url), client_for(emulator, url) as client:
        _clock(emulator, client)
        emulator.add_fault(LOST_504)
        emulator.add_fault(_skip_floor(_empty(times=None)))
        with pytest.raises(AmoWriteUnknownError):
            client.create_contacts([person(1, "lost")])
        assert len(posts(emulator)) == 1


def _skip_floor(rule: FaultRule) -> FaultRule:
    return replace(rule, skip=1)  # the floor read before the POST goes through


def _clock(emulator: Emulator, client: AmoClient) -> EmulatorTime:
    time = EmulatorTime(emulator)
    client.session.clock = time
    return time


def test_the_floor_read_asks_a_204_again_and_never_takes_it_for_0() -> None:
    """The newest id before a POST (everything above it was made after) read from a spurious
    204 was 0: every contact of the account became a candidate for a lost create."""
    with running(contacts=3) as (emulator, url), client_for(emulator, url) as client:
        newest = max(c["id"] for c in emulator.contacts())
        emulator.add_fault(_empty(times=ASKS - 1))
        assert client.newest_contact_id() == newest
        emulator.add_fault(_empty(times=None))  # persists (or the account is empty): no floor
        assert client.newest_contact_id() is None


def test_a_204_on_the_floor_read_does_not_match_a_lost_create_to_an_older_look_alike() -> None:
    """A person inserts a contact again just as before; the POST's answer is lost. With the
    floor read from a spurious 204 as 0, the look-up took the older contact for the lost create."""
    with running(contacts=3) as (emulator, url), client_for(emulator, url) as client:
        [older] = client.create_contacts([person(1, "again")])
        emulator.add_fault(_empty(times=1))  # the floor read before the POST
        emulator.add_fault(LOST_504)
        [made] = client.create_contacts([person(1, "again")])
        assert made.reconciled
        assert made.id != older.id
        assert made.id == max(c["id"] for c in emulator.contacts())
