"""The full resync's deletion guard: contacts absent from the walk and from the by-id read count
against `sync.max_delete_share` only when no `contact_deleted` event of amoCRM confirms them."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import Emulator
from sync.errors import InvariantError
from tests.integration.pull_helpers import assert_converged, count, emulated, make_config, pull

DELETED = "SELECT count(*) FROM amocrm.contacts WHERE is_deleted"


def _delete(emulator: Emulator, count_: int, *, skip: int = 0, event: bool = True) -> list[int]:
    with emulator.account.lock:
        live = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
    ids = live[skip : skip + count_]
    for cid in ids:
        emulator.delete_contact(cid, event=event)
    return ids


def _by_entity_id(emulator: Emulator) -> int:
    return sum(
        1
        for r in emulator.requests()
        if r["path"] == "/api/v4/events" and "entity_id" in str(r.get("query", ""))
    )


def test_deletions_that_events_confirm_pass_the_guard_whatever_their_share(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):  # 298 live: the guard allows 29
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        _delete(emulator, 40)
        emulator.clear_requests()
        report = pull(config, engine, emulator, full=True)
        assert report.deleted == 40
        assert count(engine, DELETED) == 40
        assert _by_entity_id(emulator) == 4  # ten ids a request
        assert_converged(engine, emulator)


def test_within_the_guard_no_events_are_read_by_id(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        _delete(emulator, 5, event=False)
        emulator.clear_requests()
        assert pull(config, engine, emulator, full=True).deleted == 5
        assert _by_entity_id(emulator) == 0
        assert_converged(engine, emulator)


def test_contacts_that_vanish_without_an_event_still_trip_the_guard(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        _delete(emulator, 40, event=False)
        with pytest.raises(
            InvariantError, match=r"refused to mark 40 of \d+ contacts deleted that no"
        ):
            pull(config, engine, emulator, full=True)
        assert count(engine, DELETED) == 0


def test_confirmed_ones_do_not_count_but_too_many_unconfirmed_still_trip(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        _delete(emulator, 40)
        _delete(emulator, 35, skip=40, event=False)  # more than the 29 allowed (of 298 live)
        with pytest.raises(InvariantError, match="refused"):
            pull(config, engine, emulator, full=True)
        assert count(engine, DELETED) == 0  # all or nothing: not even the confirmed ones


def test_confirmed_ones_and_a_few_unconfirmed_are_all_tombstoned(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        _delete(emulator, 40)
        _delete(emulator, 5, skip=40, event=False)
        assert pull(config, engine, emulator, full=True).deleted == 45
        assert_converged(engine, emulator)


def test_a_deletion_undone_by_a_later_restore_event_is_not_confirmed(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=300) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        ids = _delete(emulator, 40)
        for cid in ids:  # restored (events say live), then gone without a word
            emulator.clock.advance(1)
            emulator.restore_contact(cid)
            emulator.delete_contact(cid, event=False)
        with pytest.raises(InvariantError, match="refused to mark 40 of"):
            pull(config, engine, emulator, full=True)
