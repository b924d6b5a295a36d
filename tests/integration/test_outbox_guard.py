"""TRUNCATE and the outbox's rows go through the same guards as a row DELETE (integrator audit
s04, s04b, s17, s17b): no local statement drops a pending edit, a chat link or a waiting
conflict silently, or empties a mirrored table; the sync's own sessions pass."""

from __future__ import annotations

import subprocess

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.capture import READ_ONLY_RELATIONS
from tests.integration.push_env import push_env
from tests.integration.test_capture import CHAT, LINK, contact, run, status
from tests.integration.test_db_safety import libpq_url

__all__ = ["contact"]  # the fixture, imported for its use here
CONFLICT = (
    "INSERT INTO amocrm.sync_conflicts (contact_id, field, policy, local_value, remote_value, "
    "resolved_at, winner) VALUES (42, 'name', 'manual', '\"Ann L\"', '\"Ann R\"', :at, :winner) "
    "RETURNING id"
)


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(f"SELECT count(*) FROM amocrm.{table}")) or 0)


def a_waiting_conflict(engine: Engine) -> int:
    run(engine, "UPDATE amocrm.contacts SET sync_status = 'conflict' WHERE id = 42", origin=True)
    return int(run(engine, CONFLICT, {"at": None, "winner": None}, origin=True).scalar_one())


@pytest.fixture
def busy(engine: Engine, contact: int) -> int:
    """Contact 42 with a row in every guarded table: a pending edit, a pending chat link, a
    waiting conflict and a pulled row in each mirrored relation table."""
    run(engine, "UPDATE amocrm.contacts SET name = 'Ann local' WHERE id = 42")
    run(engine, f"{LINK} VALUES (42, :chat)", {"chat": CHAT})
    a_waiting_conflict(engine)
    for table, row in {
        "contact_custom_field_values (contact_id, field_id, position, value)": "(42, 1, 0, 'x')",
        "contact_leads (contact_id, lead_id)": "(42, 8)",
        "contact_customers (contact_id, customer_id)": "(42, 9)",
        "contact_companies (contact_id, company_id)": "(42, 10)",
        "contact_catalog_elements (contact_id, catalog_id, element_id)": "(42, 11, 12)",
    }.items():
        run(engine, f"INSERT INTO amocrm.{table} VALUES {row}", origin=True)
    return contact


GUARDED = [*READ_ONLY_RELATIONS, "contact_chats", "sync_changes", "sync_conflicts"]


@pytest.mark.parametrize("table", GUARDED)
def test_truncate_is_refused_where_a_row_delete_is(engine: Engine, busy: int, table: str) -> None:
    before = count(engine, table)
    assert before > 0
    with pytest.raises(sa.exc.DBAPIError, match=f"amosync: TRUNCATE (of|on) {table} refused"):
        run(engine, f"TRUNCATE amocrm.{table}")
    assert count(engine, table) == before


def test_truncate_cascade_of_contacts_is_refused_and_keeps_every_table(
    engine: Engine, busy: int
) -> None:
    before = {table: count(engine, table) for table in GUARDED}
    with pytest.raises(sa.exc.DBAPIError, match="amosync: TRUNCATE of contacts refused"):
        run(engine, "TRUNCATE amocrm.contacts CASCADE")
    assert {table: count(engine, table) for table in GUARDED} == before


def test_the_sync_itself_may_truncate(engine: Engine, busy: int) -> None:
    run(engine, "TRUNCATE amocrm.contact_tags, amocrm.sync_conflicts", origin=True)
    assert count(engine, "contact_tags") == count(engine, "sync_conflicts") == 0


def test_truncate_that_loses_nothing_is_allowed(engine: Engine, contact: int) -> None:
    """An empty outbox, and conflicts that are all settled (history), may be truncated."""
    run(engine, CONFLICT, {"at": "2026-01-01T00:00:00Z", "winner": "local"}, origin=True)
    run(engine, "TRUNCATE amocrm.sync_changes")
    run(engine, "TRUNCATE amocrm.sync_conflicts")
    assert count(engine, "sync_conflicts") == 0


def test_deleting_a_change_not_pushed_is_refused_and_keeps_the_edit(
    engine: Engine, busy: int
) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=r"amosync: DELETE of change \d+ \(contact 42\) "):
        run(engine, "DELETE FROM amocrm.sync_changes WHERE contact_id = 42")
    assert count(engine, "sync_changes") == 2  # the edit and the chat link
    assert status(engine, 42) == "conflict"


def test_deleting_a_never_pushed_contact_still_takes_its_changes(engine: Engine) -> None:
    run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('New')")
    run(engine, "DELETE FROM amocrm.contacts WHERE name = 'New'")
    assert count(engine, "sync_changes") == 0


def test_a_waiting_conflict_cannot_be_deleted_a_settled_one_can(
    engine: Engine, contact: int
) -> None:
    waiting = a_waiting_conflict(engine)
    with pytest.raises(sa.exc.DBAPIError, match=f"DELETE of conflict {waiting} refused") as err:
        run(engine, "DELETE FROM amocrm.sync_conflicts WHERE id = :id", {"id": waiting})
    assert f"amosync conflicts resolve {waiting} --keep local|remote" in str(err.value)
    assert status(engine, 42) == "conflict"
    run(engine, "UPDATE amocrm.sync_conflicts SET resolved_at = now(), winner = 'remote'",
        origin=True)  # fmt: skip
    run(engine, "DELETE FROM amocrm.sync_conflicts WHERE id = :id", {"id": waiting})
    assert count(engine, "sync_conflicts") == 0


def test_psql_shows_one_line_and_a_hint(db_config: DatabaseConfig, busy: int) -> None:
    url = libpq_url(db_config)
    done = subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "TRUNCATE amocrm.contact_chats"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        "ERROR:  amosync: TRUNCATE of contact_chats refused: chat links are made and removed "
        "in amoCRM"
    )
    assert lines[1].startswith("HINT:  A link not pushed yet (negative id) may be deleted")


def test_the_refusals_way_undoes_an_edit_setting_the_field_back_sends_nothing(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """What the refusal's HINT says to do instead of deleting the outbox row works."""
    with push_env(db_config, engine, contacts=2) as env:
        contact_id = env.mirror()[0]
        name = env.row(contact_id)["name"]
        env.sql("UPDATE contacts SET name = 'Oops' WHERE id = :id", id=contact_id)
        with pytest.raises(sa.exc.DBAPIError, match="To undo a local edit, set the fields back"):
            env.sql("DELETE FROM sync_changes WHERE contact_id = :id", id=contact_id)
        env.sql("UPDATE contacts SET name = :n WHERE id = :id", id=contact_id, n=name)
        env.emulator.clear_requests()
        env.push()
        assert env.row(contact_id)["sync_status"] == "synced"
        assert env.api("PATCH") == []
        assert env.remote(contact_id)["name"] == name
