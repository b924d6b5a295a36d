"""The pull's fetch stage (`sync.pull.fetch.Fetcher`) walking the in-process emulator: no socket,
no PostgreSQL. The sink is replaced by a list and the stored versions by a dict, so these tests
pin the walk itself — every live contact handed on with its newest version and its chat links,
the read spans joined without a gap, an incremental walk reading what changed (ties included)
and not the rest — under the emulator's vanish, revive and drift faults. The same walk against
real HTTP and PostgreSQL is `tests/integration/test_pull_engine.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from sync.amo.backoff import Backoff
from sync.amo.client import AmoClient
from sync.amo.pages import Page
from sync.amo.ratelimit import RateLimiter
from sync.amo.turns import Withdrawn
from sync.config import AmoCrmConfig, Secret
from sync.emulator import Emulator, EmulatorSettings, EmulatorTransport, FaultRule
from sync.pull.events import Events
from sync.pull.fetch import Fetcher, FetchSetup
from sync.pull.pipeline import once_per_theta
from sync.pull.sink import CompletePage
from sync.pull.stage import CHATS_BEHIND, Tie, Waiting
from sync.pull.windows import Plan, Span, Window, normalize

PAGE = 40
WITH = ("leads", "customers", "catalog_elements")


@dataclass
class Stored:
    """What the sink would have stored: the newest version seen of each contact, its chats."""

    versions: dict[int, int] = field(default_factory=dict)
    chats: dict[int, set[str]] = field(default_factory=dict)
    covers: list[Span] = field(default_factory=list)
    handed: int = 0  # contacts handed on, repeats included
    truth: dict[int, int] = field(default_factory=dict)  # amoCRM's versions, when they hold still
    claimed_early: set[int] = field(default_factory=set)

    def offer(self, page: CompletePage) -> bool:
        self.handed += len(page.items)
        for item in page.items:
            cid, version = int(item["id"]), int(item["updated_at"])
            self.versions[cid] = max(version, self.versions.get(cid, 0))
        if page.covers is not None:
            self.covers.append(page.covers)
        self._check_claims()
        if page.chats is not None:  # the sink replaces the links of exactly these contacts
            for cid in page.chats.ids:
                self.chats.pop(cid, None)
            for row in page.chats.rows:
                self.chats.setdefault(int(row["contact_id"]), set()).add(str(row["chat_id"]))
        return True

    def _check_claims(self) -> None:
        """The state stored with a page covers the spans of every page handed on so far: each
        contact in them must be in a page handed on by now, or a run killed here loses it."""
        spans = normalize(self.covers)
        for cid, version in self.truth.items():
            inside = any(lo <= version and (hi is None or version < hi) for lo, hi in spans)
            if inside and self.versions.get(cid, 0) < version:
                self.claimed_early.add(cid)


@contextmanager
def amo(**settings: Any) -> Iterator[tuple[Emulator, AmoClient]]:
    values: dict[str, Any] = {
        "contacts": 600,
        "seed": 11,
        "rate_limit": None,
        "tie_break": "shuffle",
        "clock_start": time.time() - 600,  # amoCRM's changes are in the past when a walk starts
    }
    values.update(settings)
    emulator = Emulator(EmulatorSettings(**values))
    config = AmoCrmConfig(
        base_url="http://emulator.test",
        access_token=Secret(emulator.long_lived_token),
        max_rps=1000.0,
        page_size=PAGE,
        timeout_s=2.0,
        max_retries=4,
    )
    client = AmoClient.connect(
        config,
        limiter=RateLimiter(config.max_rps, margin_s=0.0),
        backoff=Backoff(base_s=0.02, throttle_base_s=0.05, cap_s=0.5),
        transport=EmulatorTransport(emulator),
        workers=4,
    )
    with client:
        yield emulator, client


def walk(client: AmoClient, stored: Stored, spans: list[Span], *, full: bool) -> Fetcher:
    """One run's fetch stage over `spans`, as `sync.pull.pipeline` runs it, into `stored`."""
    fetcher = fetch_stage(client, stored, spans, full=full)
    first = min(fetcher.plan.windows, key=lambda w: w.pos)
    if first.pos > 0:
        fetcher.unproven_start(first)
    fetcher.run()
    return fetcher


def fetch_stage(client: AmoClient, stored: Stored, spans: list[Span], *, full: bool) -> Fetcher:
    ceiling = int(time.time())
    setup = FetchSetup(
        with_=WITH,
        page_size=PAGE,
        workers=4,
        ceiling=ceiling,
        chats=True,
        new_chats_only=not full,
        lazy_empty=False,
        bounds=None,
        top_at_start=full,
        top_allowed=True,
        final_pass=full,
        settle_until=0.0,  # the in-process emulator's lists do not lag: no wait before the pass
        now=time.time,
    )
    known = dict(stored.versions)
    events, marker = Events(client), []  # deletions during a tie's read, as the runs ask
    fetcher = Fetcher(
        client,
        setup,
        Plan.of(spans, ceiling, PAGE),
        {},
        stamp=lambda page: page,
        offer=stored.offer,
        stored_versions=lambda ids: {i: known[i] for i in ids if i in known},
        baseline=lambda: marker.append(events.marker()),
        deleted_since=once_per_theta(lambda theta: events.new_deletion(marker[0], theta)),
        stop=threading.Event(),
        filters_off=lambda: False,
        answered=lambda: None,
    )
    return fetcher


def live(emulator: Emulator) -> dict[int, int]:
    with emulator.account.lock:
        return {c.id: c.updated_at for c in emulator.account.contacts.values() if not c.is_deleted}


def chat_links(emulator: Emulator, ids: set[int]) -> dict[int, set[str]]:
    links: dict[int, set[str]] = {}
    with emulator.account.lock:
        for link in emulator.account.chat_links.values():
            if link.contact_id in ids:
                links.setdefault(link.contact_id, set()).add(link.chat_id)
    return links


def bulk_edit(emulator: Emulator, ids: list[int], label: str) -> None:
    """Many contacts into one second, as amoCRM's bulk edits and imports do."""
    emulator.update_contacts([{"id": i, "last_name": f"{label} {i}"} for i in ids])


FAULTS = {
    "none": [],
    "vanish": [FaultRule(kind="vanish", path="/api/v4/contacts", times=None, rate=0.5, touch=1)],
    "revive": [FaultRule(kind="revive", path="/api/v4/contacts", times=None, rate=0.5, touch=1)],
    "drift": [FaultRule(kind="drift", path="/api/v4/contacts", times=None, rate=0.5, touch=3)],
}


def test_a_first_walk_hands_on_every_live_contact_with_its_chats_and_no_gap() -> None:
    with amo() as (emulator, client):
        bulk_edit(emulator, sorted(live(emulator))[:130], "Bulk")  # a second of 130 > a page
        emulator.clock.advance(5)
        stored = Stored(truth=live(emulator))
        fetcher = walk(client, stored, [(0, None)], full=False)
        expected = live(emulator)
    assert not stored.claimed_early
    assert stored.versions == expected
    assert stored.chats == chat_links(emulator, set(expected))
    assert any(len(t.ids) > PAGE for t in fetcher.ties)  # the bulk second was read as a tie
    # the spans the pages prove read join up from the start to where the walk ended
    joined = normalize(stored.covers)
    assert len(joined) == 1, joined
    assert joined[0][0] == 0
    assert stored.handed <= len(expected) * 1.3  # about one read: no "until two passes agree"


def test_no_page_claims_a_span_before_the_pages_holding_its_contacts_are_handed_on() -> None:
    """Chat links answer out of order (the first page's slowly): pages are still handed on in
    the order they were read, so no stored cursor ever passes a contact not yet stored."""
    with amo() as (emulator, client):
        bulk_edit(emulator, sorted(live(emulator))[:130], "Bulk")  # a tie: its span closes last
        emulator.clock.advance(5)
        for delay_ms in (400, 150):  # the first two chat reads answer late, others at once
            emulator.add_fault(
                FaultRule(kind="slow", path="/api/v4/contacts/chats", times=1, delay_ms=delay_ms)
            )
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=True)
        fired = sum(int(f["fired"]) for f in emulator.faults())
    assert fired == 2
    assert stored.versions == stored.truth
    assert not stored.claimed_early, f"{len(stored.claimed_early)} contacts claimed before stored"


@pytest.mark.parametrize("faults", sorted(FAULTS))
def test_an_incremental_walk_reads_what_changed_and_little_else(faults: str) -> None:
    with amo() as (emulator, client):
        stored = Stored()
        walk(client, stored, [(0, None)], full=False)
        before = dict(stored.versions)
        cursor = max(before.values())
        emulator.clock.advance(30)
        ids = sorted(live(emulator))
        for i in ids[::25]:  # edits spread over seconds
            emulator.update_contacts([{"id": i, "first_name": f"Edited {i}"}])
            emulator.clock.advance(1)
        bulk_edit(emulator, ids[1::4], "Bulk")  # 150 contacts in one second
        created = emulator.create_contacts([{"name": f"New {n}"} for n in range(30)])
        emulator.clock.advance(5)
        changed = {cid: v for cid, v in live(emulator).items() if before.get(cid) != v}
        for rule in FAULTS[faults]:
            emulator.add_fault(rule)
        stored.covers.clear()
        handed_before = stored.handed
        fetcher = walk(client, stored, [(max(0, cursor - 5), None)], full=False)
        fired = sum(int(f["fired"]) for f in emulator.faults())
        emulator.clear_faults()
        now = live(emulator)
    assert len(created) == 30
    if faults != "none":
        assert fired >= 2  # the knob really hit the walk
    # where the run's cursor goes: below it, every live contact is at amoCRM's version; what
    # changed during the walk at or after it is the next run's (as `CursorKeeper.end` says)
    assert fetcher.newest is not None
    end = min(fetcher.newest + 1, fetcher.amo_start())
    stale = {cid for cid, v in now.items() if v < end and stored.versions.get(cid) != v}
    assert not stale, f"{len(stale)} live contacts below the cursor not at amoCRM's version"
    assert all(v < end for cid, v in changed.items() if now.get(cid) == v)  # all before the walk
    # and the rest was not read again: the changes, one page of overlap, a tie's spare pages
    assert stored.handed - handed_before <= len(changed) * 1.3 + 4 * PAGE


def test_a_tie_page_without_next_withdraws_the_pages_past_it_still_waiting() -> None:
    """amoCRM's last page of a list has no `next` (amocrm-api.md §2): pages asked beyond it
    (speculatively, several in flight) would answer 204. Those not sent yet are given up."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=False)
        second = 1_700_000_000
        tie = Tie(second, Window(second, second + 1), known=set())
        fetcher.ties.append(tie)
        waiting = {n: threading.Event() for n in (2, 3, 4)}
        tie.unsent.update(waiting)
        page = Page(2, [{"id": 7, "updated_at": second}], has_next=False)
        fetcher._on_tie(tie, 2, page)
        assert tie.last == 2
        assert waiting[3].is_set()
        assert waiting[4].is_set()
        assert not waiting[2].is_set()
        fetcher._on_tie(tie, 3, Withdrawn())  # its answer: never sent, nothing read
        assert 3 in tie.empty
        assert not tie.finished
        page_1 = Page(1, [{"id": 5, "updated_at": second}], has_next=True)
        fetcher._on_tie(tie, 1, page_1)
        assert tie.finished  # pages 1 and 2 read: the tie is whole without pages 3 and 4


def test_a_chat_batch_waits_behind_list_reads_only_while_few_pages_wait() -> None:
    """Pages are handed on in the order they were read: a chat batch put off holds back every
    page read after it, so it lets list reads go first only while few pages wait."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=True)
        turns = client.session.limiter.turns
        places: list[object] = []

        def chats(ids: list[int]) -> list[dict[str, Any]]:
            places.append(turns.enter())  # as the limiter sees the batch's request
            return []

        fetcher._chats = chats  # type: ignore[method-assign]
        with ThreadPoolExecutor(1) as pool:
            fetcher._pool = pool
            fetcher._collect([{"id": 1, "updated_at": 5}], (0, 6))
            fetcher._send_chats()
        page = turns.enter()  # a list read waiting beside it
        assert turns.yields(places[0], 0.0, 0.15) > 0  # the list read goes first
        fetcher.waiting.extend(Waiting([{"id": i}], None) for i in range(CHATS_BEHIND))
        assert turns.yields(places[0], 0.0, 0.15) == 0  # too many pages wait: its turn
        turns.leave(page)


def test_a_windows_next_page_goes_before_a_ties_speculative_pages() -> None:
    """Pages known to exist go first: a window's continuation waiting behind a tie's pages
    that may not exist delayed the walk's end, and the final pass after it."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=False)
        fetcher.bounds = "inclusive"
        second = 1_700_000_000
        tie = Tie(second, Window(second, second + 1), known=set(), speculative=3)
        tie.waiting, tie.frontier, tie.issued = False, 2, 1
        fetcher.ties.append(tie)
        asked: list[object] = []
        fetcher._ask_tie = lambda t, n: asked.append(("tie", n))  # type: ignore[method-assign]
        fetcher._ask_window = lambda w: asked.append(("window", w.pos))  # type: ignore[method-assign]
        window = fetcher.plan.windows[0]
        assert fetcher._start_one()  # page 2 of the tie is known to exist (page 1 said next)
        assert fetcher._start_one()  # the window's page, not the tie's speculative page 3
        window.busy = True
        assert fetcher._start_one()  # nothing certain left: the speculative page
        assert asked == [("tie", 2), ("window", window.pos), ("tie", 3)]


def test_a_ties_pages_past_its_end_hold_back_nothing() -> None:
    """Pages past a tie's last page that were sent before it answered only answer 204: once the
    last page is known they no longer count as requests that may list contacts, so the last
    part-full chat batch and the final pass do not wait a round trip for them."""
    with amo(contacts=50) as (_, client):
        fetcher = fetch_stage(client, Stored(), [(0, None)], full=False)
        second = 1_700_000_000
        tie = Tie(second, Window(second, second + 1), known=set())
        fetcher.ties.append(tie)
        answer = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            fetcher._pool = pool
            fetcher._list = lambda *_: answer.wait(5) and None  # type: ignore[method-assign]
            fetcher._ask_tie(tie, 3)  # in flight until `answer`
            assert fetcher.producers
            fetcher._on_tie(tie, 2, Page(2, [{"id": 7, "updated_at": second}], has_next=False))
            assert tie.last == 2
            assert not fetcher.producers
            answer.set()


@pytest.mark.parametrize("drift", [0, 1])
def test_the_final_pass_is_the_newest_page_when_that_lists_all_of_it(drift: int) -> None:
    """A full resync's final pass (everything from amoCRM's start of the run on) lists a few
    contacts or none: the newest page, asked first, holds all of them when its lowest contact
    is older than the pass's start, and then the keyset read is not sent (one request less)."""
    with amo() as (emulator, client):
        if drift:  # a user saves contacts while the walk reads: the final pass has some
            rule = FaultRule(kind="drift", path="/api/v4/contacts", times=2, touch=3)
            emulator.add_fault(rule)
        stored = Stored()
        fetcher = walk(client, stored, [(0, None)], full=True)
        expected = live(emulator)
        start = fetcher.amo_start() - 2
        asked = [r for r in emulator.requests() if r["path"] == "/api/v4/contacts"]
    assert stored.versions == expected
    assert max(expected.values()) >= start if drift else max(expected.values()) < start
    tops = [r for r in asked if "desc" in str(r["query"])]
    assert len(tops) == 2  # at the start, and the final pass
    late = [r for r in asked if "desc" not in str(r["query"]) and _from(r) >= start - 2]
    assert not late, late  # the keyset final pass: from about the start, no upper bound


def _from(request: dict[str, Any]) -> int:
    query = str(request["query"])
    if "[to]" in query or "[from]=" not in query:
        return -1
    return int(query.split("[from]=", maxsplit=1)[1].split("&", maxsplit=1)[0])


@pytest.mark.parametrize("seed", range(6))
def test_spurious_204s_on_any_list_page_lose_nothing(seed: int) -> None:
    """15% of list requests answer 204 (amoCRM's spurious 204s, any page, any window): the walk
    still hands on every contact, its spans join up, and each 204 is probed, not believed
    (sync/pull/empty.py; before, a split window's or the final pass's first 204 was believed:
    seeds 1-3 and 5 lost 900-2,900 of 3,000 contacts)."""
    with amo(contacts=3000, seed=seed) as (emulator, client):
        rule = FaultRule(kind="empty_page", path="/api/v4/contacts", times=None, rate=0.15)
        emulator.add_fault(rule)
        stored = Stored(truth=live(emulator))
        walk(client, stored, [(0, None)], full=True)
        expected = live(emulator)
    assert stored.versions == expected
    assert not stored.claimed_early
    assert normalize(stored.covers)[0][0] == 0
