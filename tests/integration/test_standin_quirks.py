"""Pull and push against the emulator over HTTP and a real PostgreSQL, under the answers another
faithful stand-in may give (`sync.emulator.quirks`): events in any order, `next` on some pages
only, write answers with fewer or more entries than sent, integers as numeric strings."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.errors import InvariantError
from tests.integration.pull_helpers import assert_converged, count, emulated, make_config, pull
from tests.integration.push_env import PushEnv, push_env


def _live_ids(emulator: Any, n: int) -> list[int]:
    return [int(c["id"]) for c in emulator.contacts(deleted=False)][:n]


def _deleted(engine: Engine, ids: list[int]) -> set[int]:
    found = set()
    for cid in ids:
        sql = "SELECT count(*) FROM amocrm.contacts WHERE is_deleted AND id = :i"
        if count(engine, sql, i=cid):
            found.add(cid)
    return found


# --- pull ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["asc", "shuffle", "desc"])
@pytest.mark.parametrize("filters", [True, False], ids=["filters-on", "filters-off"])
def test_deletions_and_restores_resolve_by_time_whatever_the_events_order(
    db_config: DatabaseConfig, engine: Engine, order: str, filters: bool
) -> None:
    """a: deleted; b: deleted then restored; c: restored... then deleted again; d: deleted,
    restored, deleted in three seconds. Oldest first with filters off, before the fix: no event
    seen at all (the first page, all before the start, ended the read), nothing tombstoned."""
    with emulated(contacts=200, trashed_fraction=0.0) as (emulator, url):
        for cid in _live_ids(emulator, 40)[10:]:  # 60 events before the first pull: 2 pages
            emulator.delete_contact(cid)
            emulator.restore_contact(cid)
            emulator.clock.advance(1)
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        emulator.set_controls(api_filter_enabled=filters, events_order=order)
        a, b, c, d = _live_ids(emulator, 4)
        emulator.clock.advance(5)
        for cid in (a, b, c, d):
            emulator.delete_contact(cid)
        emulator.clock.advance(2)
        for cid in (b, c, d):
            emulator.restore_contact(cid)
        emulator.clock.advance(2)
        for cid in (c, d):
            emulator.delete_contact(cid)
        emulator.clock.advance(2)
        emulator.restore_contact(d)
        emulator.clock.advance(2)
        emulator.delete_contact(d)
        emulator.clock.advance(2)
        report = pull(config, engine, emulator)
        assert _deleted(engine, [a, b, c, d]) == {a, c, d}
        assert report.deleted == 3
        assert_converged(engine, emulator)


@pytest.mark.parametrize("quirk", ["next_gaps", "string_numbers"])
def test_full_and_incremental_pulls_store_every_contact(
    db_config: DatabaseConfig, engine: Engine, quirk: str
) -> None:
    """`next_gaps`: before the fix a full page without `next` after one with it ended the
    read; `string_numbers`: ids and times as "123"."""
    with emulated(contacts=700, trashed_fraction=0.02) as (emulator, url):
        emulator.set_controls(**{quirk: True})
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator, full=True)
        assert_converged(engine, emulator)
        emulator.clock.advance(5)
        ids = _live_ids(emulator, 300)
        emulator.update_contacts([{"id": i, "last_name": f"Bulk {i}"} for i in ids])
        emulator.delete_contact(ids[0])
        emulator.clock.advance(5)
        pull(config, engine, emulator)
        assert_converged(engine, emulator)


def test_a_garbage_integer_fails_the_pull_naming_the_contact_and_field(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=50) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        cid = _live_ids(emulator, 1)[0]
        with emulator.account.lock:
            emulator.account.contacts[cid].responsible_user_id = "ghost"  # type: ignore[assignment]
        with pytest.raises(InvariantError, match=f"contact {cid}: responsible_user_id is not"):
            pull(config, engine, emulator, full=True)


# --- push ----------------------------------------------------------------------------------------


def _insert(env: PushEnv, name: str) -> int:
    rows = env.sql("INSERT INTO contacts (name) VALUES (:n) RETURNING id", n=name)
    return int(rows[0][0])


def _names(env: PushEnv) -> Counter[str]:
    return Counter(c.name for c in env.emulator.account.contacts.values())


@pytest.mark.parametrize("answer", ["short", "extra"])
def test_a_push_under_write_answers_of_the_wrong_length_syncs_every_row_once(
    db_config: DatabaseConfig, engine: Engine, answer: str
) -> None:
    """Creates, updates and a chat link; before the fix the first POST raised InvariantError
    and the run failed with every row pending."""
    with push_env(db_config, engine, contacts=20) as env:
        env.mirror()
        env.emulator.set_controls(write_answer=answer)
        temps = [_insert(env, f"Short {n}") for n in range(4)]
        env.sql(
            "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :q)",
            c=temps[0],
            q="00000000-0000-4000-8000-0000000000a1",
        )
        edited = sorted(env.emulator.account.contacts)[:3]
        for cid in edited:
            env.sql("UPDATE contacts SET first_name = 'Q' WHERE id = :id", id=cid)
        report = env.push()
        assert (report.created, report.updated, report.linked) == (4, 3, 1)
        assert [_names(env)[f"Short {n}"] for n in range(4)] == [1] * 4
        assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0
        statuses = env.sql("SELECT DISTINCT sync_status FROM contacts")
        assert [r[0] for r in statuses] == ["synced"]
        assert all(env.remote(cid)["first_name"] == "Q" for cid in edited)
        assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_a_create_a_short_answer_leaves_out_and_lists_hide_for_3_s_is_found_not_resent(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The created contact the answer left out is invisible to lists for 3 s: the push looks
    again until it shows (well within the 10 s window), so one run creates each row once."""
    with push_env(db_config, engine, contacts=20) as env:
        env.mirror()
        env.client.reconcile_settle_s = 1.0
        env.emulator_time()
        env.emulator.set_controls(write_answer="short", list_lag_s=3.0)
        env.emulator.clear_requests()
        for n in range(3):
            _insert(env, f"Hidden {n}")
        report = env.push(push_workers=1)
        assert report.created == 3
        assert len(env.api("POST")) == 1
        assert [_names(env)[f"Hidden {n}"] for n in range(3)] == [1] * 3
        assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0
        remote = {c.id for c in env.emulator.account.contacts.values() if c.name.startswith("Hid")}
        assert {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE 'Hidden %'")} == (
            remote
        )


def test_push_plans_updates_from_contacts_with_string_numbers(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """Before the fix the remote `updated_at` "1700000000" broke planning: every row invalid."""
    with push_env(db_config, engine, contacts=12) as env:
        env.mirror()
        env.emulator.set_controls(string_numbers=True)
        ids = sorted(env.emulator.account.contacts)[:3]
        for cid in ids:
            env.sql("UPDATE contacts SET last_name = 'Str' WHERE id = :id", id=cid)
        cf = [{"field_code": "EMAIL", "values": [{"value": "s@x.test", "enum_code": "WORK"}]}]
        env.sql(
            "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = :id",
            cf=json.dumps(cf),
            id=ids[0],
        )
        report = env.push()
        assert report.updated == 3
        assert report.errors == 0
        assert all(env.remote(cid)["last_name"] == "Str" for cid in ids)
        rows = env.sql("SELECT sync_status, updated_at FROM contacts WHERE id = ANY(:ids)", ids=ids)
        assert {r[0] for r in rows} == {"synced"}
