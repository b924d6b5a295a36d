"""Answers a faithful amoCRM stand-in other than our emulator may give, which the vendor documents
do not rule out: `_links.next` on an exactly full last page, and an empty list as 200 with
`_embedded.<key>: []` rather than 204. The emulator gives them under `next_on_full_page` and
`empty_list_as_200`; these tests pin those switches and what the client makes of them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sync.amo.client import AmoClient
from sync.amo.pages import Page
from sync.amo.ratelimit import RateLimiter
from sync.config import AmoCrmConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, EmulatorTransport, FaultRule
from sync.errors import InvariantError
from sync.pull.filters_off import by_id
from sync.pull.stage import Tie
from sync.pull.windows import Window

PAGE = 40


@contextmanager
def amo(contacts: int, **controls: Any) -> Iterator[tuple[Emulator, AmoClient]]:
    emulator = Emulator(
        EmulatorSettings(contacts=contacts, seed=3, rate_limit=None, trashed_fraction=0.0)
    )
    emulator.set_controls(**controls)
    config = AmoCrmConfig(
        base_url="http://emulator.test",
        access_token=Secret(emulator.long_lived_token),
        max_rps=1000.0,
        page_size=PAGE,
        timeout_s=2.0,
        max_retries=2,
    )
    client = AmoClient.connect(
        config, limiter=RateLimiter(1000.0, margin_s=0.0), transport=EmulatorTransport(emulator)
    )
    with client:
        yield emulator, client


def live_ids(emulator: Emulator) -> list[int]:
    return [int(c["id"]) for c in emulator.contacts(deleted=False)]


def test_next_on_full_page_announces_more_on_an_exactly_full_last_page() -> None:
    with amo(2 * PAGE, next_on_full_page=True) as (_, client):
        pages = list(client.iter_contacts(order=("id", "asc")))
    assert [(len(p.items), p.has_next) for p in pages] == [(PAGE, True), (PAGE, True)]


def test_empty_list_as_200_answers_an_empty_list_not_204() -> None:
    with amo(PAGE, empty_list_as_200=True) as (_, client):
        reply = client.get("/api/v4/contacts", {"page": 2, "limit": PAGE})
        events = client.get("/api/v4/events", {"page": 99, "limit": PAGE})
    assert reply.status == 200
    assert reply.data["_embedded"] == {"contacts": []}
    assert "next" not in reply.data["_links"]
    assert events.data["_embedded"] == {"events": []}


@pytest.mark.parametrize("contacts", [2 * PAGE, 2 * PAGE - 1])
def test_the_filters_off_full_walk_ends_on_a_204_after_a_full_last_page(contacts: int) -> None:
    """An account of an exact multiple of pages, `next` on its full last page: the 204 after it
    is the end (no contact above the last id), not a failed resync."""
    with amo(contacts, next_on_full_page=True, api_filter_enabled=False) as (emulator, client):
        listed = [int(i["id"]) for items in by_id(client, (), PAGE, 1) for i in items]
        assert listed == live_ids(emulator)


def test_the_filters_off_full_walk_still_fails_on_a_204_with_contacts_beyond() -> None:
    """A 204 that hides contacts (amoCRM's spurious mid-scan 204, persisting) still fails."""
    with amo(3 * PAGE, api_filter_enabled=False) as (emulator, client):
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", min_page=2, times=None)
        )
        with pytest.raises(InvariantError, match="204 in the middle of the full resync"):
            for _ in by_id(client, (), PAGE, 1):
                pass


# --- the pull's walk (windows, ties, the newest page) under the same answers


def test_a_tie_of_exactly_two_full_pages_with_next_on_its_last_page_is_read() -> None:
    from tests.unit.test_pull_walk import PAGE as WALK_PAGE
    from tests.unit.test_pull_walk import Stored, bulk_edit, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo() as (emulator, client):
        emulator.set_controls(next_on_full_page=True)
        bulk_edit(emulator, sorted(live(emulator))[: 2 * WALK_PAGE], "Bulk")
        emulator.clock.advance(5)
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=True)
        assert stored.versions == live(emulator)


def test_a_walk_reads_every_contact_when_empty_lists_come_as_200() -> None:
    from tests.unit.test_pull_walk import Stored, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo() as (emulator, client):
        emulator.set_controls(empty_list_as_200=True)
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=True)
        assert stored.versions == live(emulator)


def list_requests(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests() if r["path"] == "/api/v4/contacts")


@pytest.mark.parametrize("contacts", [2 * PAGE, 2 * PAGE + 1])
def test_a_list_read_follows_full_pages_when_no_page_has_next(contacts: int) -> None:
    """A stand-in that never sends `next`: a full page is not the end, the 204 after it is."""
    with amo(contacts, never_next=True) as (emulator, client):
        listed = [int(i["id"]) for p in client.iter_contacts(order=("id", "asc")) for i in p.items]
        assert listed == live_ids(emulator)
        assert list_requests(emulator) == 3  # the last page, full or not, and no 204 re-read


def test_an_exactly_full_last_page_without_next_is_read_past_even_after_next_was_sent() -> None:
    """amoCRM's own answers (no `next` on an exactly full last page, `next` before it): one more
    request, answered 204, ends the read. "`next` was sent before" is no proof of the end: a
    server may send it on some pages only (`next_gaps`)."""
    with amo(2 * PAGE) as (emulator, client):
        pages = list(client.iter_contacts(order=("id", "asc")))
        assert [len(p.items) for p in pages] == [PAGE, PAGE]
        assert list_requests(emulator) == 3


@pytest.mark.parametrize("contacts", [4 * PAGE, 5 * PAGE - 1])
def test_a_list_read_goes_on_past_a_full_page_without_next_after_pages_with_it(
    contacts: int,
) -> None:
    """`next_gaps`: page 1 announces more, page 2 (full) does not, page 3 does again. Before the
    fix the read ended after page 2 (80 of 160 contacts listed, no error)."""
    with amo(contacts, next_gaps=True) as (emulator, client):
        pages = list(client.iter_contacts(order=("id", "asc")))
        assert [p.has_next for p in pages][:2] == [True, False]
        assert [int(i["id"]) for p in pages for i in p.items] == live_ids(emulator)


@pytest.mark.parametrize("contacts", [2 * PAGE, 2 * PAGE - 1])
def test_the_filters_off_full_walk_reads_every_page_when_no_page_has_next(contacts: int) -> None:
    with amo(contacts, never_next=True, api_filter_enabled=False) as (emulator, client):
        listed = [int(i["id"]) for items in by_id(client, (), PAGE, 1) for i in items]
        assert listed == live_ids(emulator)


@pytest.mark.parametrize(
    "controls", ["never_next", "next_on_full_page", "empty_list_as_200", "next_gaps"]
)
@pytest.mark.parametrize("full", [True, False])
def test_a_walk_with_a_tie_reads_every_contact_under_each_stand_in(
    controls: str, full: bool
) -> None:
    """Windows, the newest page, a tie of three full pages and the final pass, under each
    answer: every live contact stored (never-`next`: before the fix, 40 of 600 and exit 0)."""
    from tests.unit.test_pull_walk import PAGE as WALK_PAGE
    from tests.unit.test_pull_walk import Stored, bulk_edit, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo() as (emulator, client):
        emulator.set_controls(**{controls: True})
        bulk_edit(emulator, sorted(live(emulator))[: 3 * WALK_PAGE], "Bulk")
        emulator.clock.advance(5)
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=full)
        assert stored.versions == live(emulator)
        assert not stored.claimed_early


@pytest.mark.parametrize("size", [1, 2])
def test_a_window_whose_exactly_full_last_page_announces_next_ends_without_a_204(size: int) -> None:
    """A window (no tie) whose last page is exactly full under `next_on_full_page`: the page
    that announced more is read on from its last second (keyset: the boundary second is listed
    again), so no 204 follows a promise; every contact is stored, nothing fails."""
    from tests.unit.test_pull_walk import PAGE as WALK_PAGE
    from tests.unit.test_pull_walk import Stored, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo(contacts=size * WALK_PAGE) as (emulator, client):
        emulator.set_controls(next_on_full_page=True)
        stored = Stored(truth=live(emulator))
        fetcher = walk(client, stored, [(0, None)], full=False)
        assert stored.versions == live(emulator)
        assert not fetcher.ties


def test_a_tie_whose_204_hides_contacts_beyond_its_last_id_still_fails() -> None:
    """The end check is no licence to cut a tie short: page 3 of a three-page tie answering 204
    every time (amoCRM's spurious 204, persisting) after page 2 announced more fails the run."""
    from tests.unit.test_pull_walk import PAGE as WALK_PAGE
    from tests.unit.test_pull_walk import Stored, bulk_edit, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo() as (emulator, client):
        bulk_edit(emulator, sorted(live(emulator))[: 3 * WALK_PAGE], "Bulk")
        emulator.clock.advance(5)
        emulator.add_fault(
            FaultRule(kind="empty_page", path="/api/v4/contacts", min_page=3, times=None)
        )
        with pytest.raises(InvariantError, match="keeps answering 204"):
            walk(client, Stored(), [(0, None)], full=True)


def test_a_full_tie_page_without_next_withdraws_nothing_until_the_page_after_it_answers() -> None:
    """From a server not seen to send `next`, a full tie page without it is not the last: the
    page after it still goes out (only pages past the end are withdrawn), and its 204 ends."""
    from tests.unit.test_pull_walk import PAGE as WALK_PAGE
    from tests.unit.test_pull_walk import Stored, fetch_stage
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=False)
        second = 1_700_000_000
        tie = Tie(second, Window(second, second + 1), known=set())
        fetcher.ties.append(tie)
        waiting = {n: threading.Event() for n in (2, 3, 4)}
        tie.unsent.update(waiting)
        full = [{"id": n, "updated_at": second} for n in range(1, WALK_PAGE + 1)]
        fetcher._on_tie(tie, 1, Page(1, full, has_next=False))
        assert tie.last is None
        assert not any(event.is_set() for event in waiting.values())
        fetcher._on_tie(tie, 2, None)  # the 204 after a page that promised nothing: the end
        assert tie.last == 1
        assert waiting[3].is_set()
        assert waiting[4].is_set()
        assert tie.finished
