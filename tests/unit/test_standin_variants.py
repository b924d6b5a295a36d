"""Answers a faithful amoCRM stand-in other than our emulator may give, which the vendor documents
do not rule out: `_links.next` on an exactly full last page, and an empty list as 200 with
`_embedded.<key>: []` rather than 204. The emulator gives them under `next_on_full_page` and
`empty_list_as_200`; these tests pin those switches and what the client makes of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sync.amo.client import AmoClient
from sync.amo.ratelimit import RateLimiter
from sync.config import AmoCrmConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, EmulatorTransport, FaultRule
from sync.errors import InvariantError
from sync.pull.filters_off import by_id

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


# --- known breaks in files other helpers own (sync/pull/ties.py, stage.py/fetch.py): these pin
# --- them until fixed; the fix removes the marker (strict: a fixed break fails here until then)


@pytest.mark.xfail(strict=True, raises=InvariantError, reason="ties.py: persisting 204 raises")
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


@pytest.mark.xfail(strict=True, raises=IndexError, reason="fetch.py: an empty 200 page crashes")
def test_a_walk_reads_every_contact_when_empty_lists_come_as_200() -> None:
    from tests.unit.test_pull_walk import Stored, live, walk
    from tests.unit.test_pull_walk import amo as walk_amo

    with walk_amo() as (emulator, client):
        emulator.set_controls(empty_list_as_200=True)
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=True)
        assert stored.versions == live(emulator)
