"""What an idle poll asks amoCRM (issue 15): the daemon's polls that find nothing new send one
request, and a deletion is still found within `sync.events_interval_s` (+ one poll).

The daemon's pulls share a `PollMemo`; here its clock is a number the test moves, so "300 s
later" needs no sleeping. The emulator's request log is the count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.engine import Engine

from sync.config import Config, DatabaseConfig
from sync.emulator import Emulator
from sync.pull import PullReport
from sync.pull.memo import EARLY_FRACTION, PollMemo
from tests.integration.pull_helpers import assert_converged, count, emulated, make_config, pull

EVENTS_EVERY_S = 300.0


class Ticks:
    """The memo's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _asked(emulator: Emulator) -> Counter[str]:
    return Counter(f"{r['method']} {r['path']}" for r in emulator.requests())


def _poll(
    config: Config, engine: Engine, emulator: Emulator, memo: PollMemo | None
) -> tuple[PullReport, Counter[str]]:
    emulator.clear_requests()
    report = pull(config, engine, emulator, memo=memo)
    return report, _asked(emulator)


def _setup(db_config: DatabaseConfig, url: str, emulator: Emulator, **sync: Any) -> Config:
    return make_config(db_config, url, emulator.long_lived_token, **sync)


CONTACTS = "GET /api/v4/contacts"
ACCOUNT = "GET /api/v4/account"
EVENTS = "GET /api/v4/events"
CHATS = "GET /api/v4/contacts/chats"


def test_an_idle_poll_of_the_daemon_sends_one_request(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = _setup(db_config, url, emulator)
        pull(config, engine, emulator)  # the first pull is full: the cursor is set
        ticks = Ticks()
        memo = PollMemo(EVENTS_EVERY_S, clock=ticks)
        _report, first = _poll(config, engine, emulator, memo)
        # the daemon's first poll reads the account flag and the events; the overlap re-reads the
        # newest contact, a version already stored, so no chat links are asked for
        assert first == Counter({ACCOUNT: 1, CONTACTS: 1, EVENTS: 1})
        for _ in range(4):  # 4 polls a minute apart: the events are due only at 300 s
            ticks.now += 60
            report, asked = _poll(config, engine, emulator, memo)
            assert asked == Counter({CONTACTS: 1})
            assert (report.fetched > 0, report.upserted, report.events) == (True, 0, "skipped")
        # `amosync pull` (no memo) still reads the account flag and the events on every run
        _report, cli = _poll(config, engine, emulator, None)
        assert cli == Counter({ACCOUNT: 1, CONTACTS: 1, EVENTS: 1})
        assert_converged(engine, emulator)


def test_a_first_page_204_costs_the_daemon_nothing_and_the_cli_one_probe(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The daemon's poll that lists nothing keeps its cursor: its 204 needs no proof. Any other
    run proves it (sync/pull/empty.py): the newest page shows nothing at or after the window."""
    with emulated(contacts=100) as (emulator, url):
        config = _setup(db_config, url, emulator, overlap_s=0)  # nothing re-read: a 204
        pull(config, engine, emulator)
        ticks = Ticks()
        memo = PollMemo(EVENTS_EVERY_S, clock=ticks)
        _poll(config, engine, emulator, memo)
        ticks.now += 60
        _report, asked = _poll(config, engine, emulator, memo)
        assert asked == Counter({CONTACTS: 1})
        _report, cli = _poll(config, engine, emulator, None)
        assert cli[CONTACTS] == 2
        lists = [r["query"] for r in emulator.requests() if r["path"] == "/api/v4/contacts"]
        assert "filter" not in lists[1]  # the newest page, not the window again
        assert "desc" in lists[1]


def test_idle_polls_after_a_settled_bulk_second_ask_once_each_side_of_it(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """While a settled tie second U is within the overlap, a poll reads `[C - overlap_s, U)` and
    `[U + 1, ∞)` (docs/pull.md, "Never again"). What the first lists lies below the cursor and
    moves nothing, so the second's 204 still needs no proof: two requests, not three."""
    with emulated(contacts=400) as (emulator, url):
        config = _setup(db_config, url, emulator, page_size=25, overlap_s=60)
        pull(config, engine, emulator)
        with emulator.account.lock:
            ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
        emulator.clock.advance(30)
        emulator.update_contacts([{"id": i, "last_name": "Before"} for i in ids[300:305]])
        emulator.clock.advance(5)
        second = emulator.update_contacts([{"id": i, "last_name": "Bulk"} for i in ids[:200]])
        emulator.clock.advance(5)  # U is older than SETTLE_S when the next poll starts
        ticks = Ticks()
        memo = PollMemo(EVENTS_EVERY_S, clock=ticks)
        _poll(config, engine, emulator, memo)  # reads U by id and settles it
        for _ in range(3):
            ticks.now += 60
            report, asked = _poll(config, engine, emulator, memo)
            assert asked == Counter({CONTACTS: 2}), emulator.requests()
            assert (report.fetched, report.upserted, report.cursor) == (5, 0, second + 1)
        assert_converged(engine, emulator)


def test_a_deletion_is_found_once_events_interval_s_has_passed(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = _setup(db_config, url, emulator)
        pull(config, engine, emulator)
        ticks = Ticks()
        memo = PollMemo(EVENTS_EVERY_S, clock=ticks)
        _poll(config, engine, emulator, memo)  # events read at 1000
        victim = min(emulator.account.contacts)
        emulator.delete_contact(victim)  # changes no live contact's updated_at
        deleted = "SELECT count(*) FROM amocrm.contacts WHERE id = :i AND is_deleted"
        due_after = EVENTS_EVERY_S * (1 - EARLY_FRACTION)  # see PollMemo.events_due
        ticks.now += due_after - 1
        _report, asked = _poll(config, engine, emulator, memo)
        assert asked == Counter({CONTACTS: 1})
        assert count(engine, deleted, i=victim) == 0  # not yet: the events were not due
        ticks.now += 1
        report, asked = _poll(config, engine, emulator, memo)
        assert asked[EVENTS] == 1
        assert (report.events, report.deleted) == ("read", 1)
        assert count(engine, deleted, i=victim) == 1
        assert_converged(engine, emulator)


def test_a_poll_that_stores_a_change_reads_events_and_only_its_chat_links(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = _setup(db_config, url, emulator)
        pull(config, engine, emulator)
        ticks = Ticks()
        memo = PollMemo(EVENTS_EVERY_S, clock=ticks)
        _poll(config, engine, emulator, memo)
        changed = min(emulator.account.contacts)
        emulator.clock.advance(30)
        emulator.update_contacts([{"id": changed, "first_name": "Changed"}])
        emulator.link_chat(changed, "9a3c4f5e-0000-4000-8000-000000000001")
        ticks.now += 1  # long before the events would be due on an idle poll
        report, asked = _poll(config, engine, emulator, memo)
        assert report.upserted == 1
        assert asked == Counter({CONTACTS: 1, CHATS: 1, EVENTS: 1})
        chats = [r for r in emulator.requests() if r["path"] == "/api/v4/contacts/chats"]
        assert str(changed) in str(chats[0]["query"])
        assert_converged(engine, emulator)  # the new chat link is stored too
