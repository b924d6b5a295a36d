"""Change capture and write guards: what local SQL does to the outbox, against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.config import DatabaseConfig
from sync.db.capture import changes_channel, notify_channel
from sync.db.engine import database_url, sync_origin

UPDATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LINK = "INSERT INTO amocrm.contact_chats (contact_id, chat_id)"
CHAT = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"  # chat ids are UUIDs


def run(engine: Engine, sql: str, params: dict[str, Any] | None = None, *, origin: bool = False):
    with engine.begin() as conn:
        if origin:
            sync_origin(conn)
        return conn.execute(sa.text(sql), params or {})


def changes(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.text("SELECT * FROM amocrm.sync_changes ORDER BY id")).mappings()
    return [dict(row) for row in rows]


@pytest.fixture
def contact(engine: Engine) -> int:
    """A contact as pulled from amoCRM (written with the sync's origin, so not captured)."""
    run(
        engine,
        """INSERT INTO amocrm.contacts (id, name, first_name, responsible_user_id, updated_at,
               custom_fields_values)
           VALUES (42, 'Ann', 'Ann', 7, :u, '[{"field_id": 1, "values": [{"value": "x"}]}]')""",
        {"u": UPDATED},
        origin=True,
    )
    run(engine, "INSERT INTO amocrm.contact_tags VALUES (42, 5, 'vip')", origin=True)
    return 42


def status(engine: Engine, contact_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.scalar(
                sa.text("SELECT sync_status FROM amocrm.contacts WHERE id = :i"), {"i": contact_id}
            )
        )


def test_sync_origin_writes_are_not_captured(engine: Engine, contact: int) -> None:
    run(engine, "UPDATE amocrm.contacts SET name = 'Bob' WHERE id = 42", origin=True)
    with engine.connect() as conn:
        assert changes(conn) == []
    assert status(engine, contact) == "synced"


def test_local_update_is_captured_with_its_base(engine: Engine, contact: int) -> None:
    run(engine, "UPDATE amocrm.contacts SET name = 'Anna', last_name = 'Lee' WHERE id = 42")
    with engine.connect() as conn:
        [change] = changes(conn)
    assert change["contact_id"] == contact
    assert change["kind"] == "update"
    assert change["new_values"] == {"name": "Anna", "last_name": "Lee"}
    assert change["base_values"] == {"name": "Ann", "last_name": None}
    assert change["base_updated_at"] == UPDATED
    assert status(engine, contact) == "pending"


def test_custom_fields_edit_is_captured_but_an_unchanged_write_is_not(
    engine: Engine, contact: int
) -> None:
    run(engine, "UPDATE amocrm.contacts SET name = name, first_name = 'Ann' WHERE id = 42")
    run(
        engine,
        """UPDATE amocrm.contacts SET custom_fields_values = NULL WHERE id = 42""",
    )
    with engine.connect() as conn:
        [change] = changes(conn)
    assert change["new_values"] == {"custom_fields_values": None}
    assert change["base_values"]["custom_fields_values"][0]["field_id"] == 1


def test_editing_a_mirrored_column_is_refused(engine: Engine, contact: int) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=r"contacts.updated_at of contact 42 cannot be"):
        run(engine, "UPDATE amocrm.contacts SET updated_at = now() WHERE id = 42")
    with pytest.raises(sa.exc.DBAPIError, match=r"contacts.sync_status .* mirrors amoCRM"):
        run(engine, "UPDATE amocrm.contacts SET sync_status = 'error' WHERE id = 42")


def test_delete_is_refused_with_a_clear_message(engine: Engine, contact: int) -> None:
    with pytest.raises(sa.exc.DBAPIError) as caught:
        run(engine, "DELETE FROM amocrm.contacts WHERE id = 42")
    diag = caught.value.orig.diag  # type: ignore[union-attr]
    assert diag.message_primary == (
        "amosync: DELETE of contact 42 refused: the amoCRM API cannot delete contacts"
    )
    assert "Delete the contact in amoCRM" in diag.message_hint
    with pytest.raises(sa.exc.DBAPIError, match="TRUNCATE of contacts refused"):
        run(engine, "TRUNCATE amocrm.contacts CASCADE")
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM amocrm.contacts")) == 1


def test_local_insert_gets_a_temporary_negative_id(engine: Engine) -> None:
    first = run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('New') RETURNING id").scalar()
    second = run(
        engine,
        "INSERT INTO amocrm.contacts (name, responsible_user_id) VALUES ('Two', 3) RETURNING id",
    ).scalar()
    assert first == -1
    assert second == -2
    with engine.connect() as conn:
        created = changes(conn)
    assert [(c["contact_id"], c["kind"], c["new_values"]) for c in created] == [
        (-1, "create", {"name": "New"}),
        (-2, "create", {"name": "Two", "responsible_user_id": 3}),
    ]
    assert status(engine, -1) == "pending"


def test_insert_with_an_amocrm_id_or_mirrored_column_is_refused(engine: Engine) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="insert without an id"):
        run(engine, "INSERT INTO amocrm.contacts (id, name) VALUES (5, 'x')")
    with pytest.raises(sa.exc.DBAPIError, match=r"contacts\.created_at is set by amoCRM"):
        run(engine, "INSERT INTO amocrm.contacts (name, created_at) VALUES ('x', now())")


def test_insert_with_an_id_of_its_own_is_refused_even_a_negative_one(engine: Engine) -> None:
    """An integrator's own temporary id would collide with the one the sequence hands out later
    (someone else's INSERT failing on a duplicate key): refused at once, whether this session
    drew a temporary id before or not."""
    for given in (-1, 0, -7):
        with pytest.raises(sa.exc.DBAPIError, match=rf"insert without an id \(got {given}\)"):
            run(engine, "INSERT INTO amocrm.contacts (id, name) VALUES (:i, 'x')", {"i": given})
        drawn = run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('y') RETURNING id")
        assert drawn.scalar() < 0
    with engine.begin() as conn:  # several rows at once, each with the id its default drew
        conn.execute(sa.text("INSERT INTO amocrm.contacts (name) VALUES ('a'), ('b')"))
        series = "SELECT 'g' || g FROM generate_series(1, 3) g"
        conn.execute(sa.text(f"INSERT INTO amocrm.contacts (name) {series}"))
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy("COPY amocrm.contacts (name) FROM STDIN") as copy:
            copy.write_row(("copied",))
    with engine.connect() as conn:
        ids = conn.scalars(sa.text("SELECT contact_id FROM amocrm.sync_changes ORDER BY id")).all()
    assert ids == list(range(-1, -10, -1))


def test_a_chat_link_with_an_id_of_its_own_is_refused(engine: Engine, contact: int) -> None:
    with pytest.raises(sa.exc.DBAPIError, match=r"insert without an id \(got -3\)"):
        run(engine, f"{LINK.replace('(contact_id', '(id, contact_id')} VALUES (-3, 42, :c)",
            {"c": CHAT})  # fmt: skip
    assert run(engine, f"{LINK} VALUES (42, :c) RETURNING id", {"c": CHAT}).scalar() == -1


def test_a_contact_never_pushed_may_be_deleted(engine: Engine) -> None:
    new_id = run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('x') RETURNING id").scalar()
    run(engine, "DELETE FROM amocrm.contacts WHERE id = :i", {"i": new_id})
    with engine.connect() as conn:
        assert changes(conn) == []


def test_chat_link_insert_is_captured(engine: Engine, contact: int) -> None:
    link = run(engine, f"{LINK} VALUES (42, :c) RETURNING id", {"c": CHAT}).scalar()
    assert link is not None
    assert link < 0
    with engine.connect() as conn:
        [change] = changes(conn)
    assert (change["kind"], change["chat_link_id"], change["new_values"]) == (
        "chat_link",
        link,
        {"chat_id": CHAT},
    )


@pytest.mark.parametrize("chat_id", ["", "   "])
def test_a_new_chat_link_needs_a_chat_id(engine: Engine, contact: int, chat_id: str) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="chat_id must be an amoCRM chat id") as caught:
        run(engine, f"{LINK} VALUES (42, :c)", {"c": chat_id})
    assert caught.value.orig.sqlstate == "23514"  # type: ignore[union-attr]
    assert "new chat link of contact 42" in str(caught.value)
    with engine.connect() as conn:
        assert changes(conn) == []
    run(engine, f"{LINK} VALUES (42, :c)", {"c": "chat-x"})  # its form is amoCRM's to judge


def test_a_chat_link_of_a_contact_deleted_in_amocrm_is_refused(
    engine: Engine, contact: int
) -> None:
    """Like an UPDATE of it: the push would fail with "Contact not found" and put the deleted
    contact's row in error."""
    run(engine, "UPDATE amocrm.contacts SET is_deleted = true WHERE id = 42", origin=True)
    with pytest.raises(sa.exc.DBAPIError, match="contact 42 was deleted in amoCRM") as caught:
        run(engine, f"{LINK} VALUES (42, :c)", {"c": CHAT})
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)
    with engine.connect() as conn:
        assert changes(conn) == []
    run(engine, "UPDATE amocrm.contacts SET is_deleted = false WHERE id = 42", origin=True)
    run(engine, f"{LINK} VALUES (42, :c)", {"c": CHAT})  # restored: linked as before


def test_a_chat_already_linked_is_refused_with_a_clear_line(engine: Engine, contact: int) -> None:
    """A chat belongs to one contact: not PostgreSQL's raw unique violation, but which contact
    has it and how to move it."""
    run(
        engine,
        "INSERT INTO amocrm.contact_chats (id, contact_id, chat_id) VALUES (7, 42, :c)",
        {"c": CHAT},
        origin=True,
    )  # a pulled link
    other = run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('x') RETURNING id").scalar()
    for owner in (other, 42):
        with pytest.raises(sa.exc.DBAPIError) as caught:
            run(engine, f"{LINK} VALUES (:o, :c)", {"o": owner, "c": CHAT})
        assert f"chat {CHAT} is already linked to contact 42" in str(caught.value)
        assert "link it to the other contact in amoCRM" in str(caught.value)
        assert isinstance(caught.value.orig, psycopg.errors.UniqueViolation)
    with engine.connect() as conn:
        assert [c["kind"] for c in changes(conn)] == ["create"]  # the new contact only


def test_a_pending_chat_link_is_corrected_by_delete_and_insert_not_update(
    engine: Engine, contact: int
) -> None:
    link = run(engine, f"{LINK} VALUES (42, :c) RETURNING id", {"c": CHAT}).scalar()
    fixed = "00000000-0000-4000-8000-000000000042"
    with pytest.raises(sa.exc.DBAPIError, match="a link is made, never edited") as caught:
        run(engine, "UPDATE amocrm.contact_chats SET chat_id = :c WHERE id = :i",
            {"c": fixed, "i": link})  # fmt: skip
    assert f"DELETE FROM contact_chats WHERE id = {link}" in str(caught.value)
    run(engine, "DELETE FROM amocrm.contact_chats WHERE id = :i", {"i": link})
    new = run(engine, f"{LINK} VALUES (42, :c) RETURNING id", {"c": fixed}).scalar()
    with engine.connect() as conn:
        links = conn.execute(sa.text("SELECT id, chat_id FROM amocrm.contact_chats"))
        assert [tuple(r) for r in links] == [(new, fixed)]
        captured = {c["chat_link_id"]: c["new_values"] for c in changes(conn)}
    assert captured[new] == {"chat_id": fixed}  # the deleted link's row is dropped by push


def test_relation_tables_refuse_local_writes(engine: Engine, contact: int) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="INSERT on contact_leads refused"):
        run(engine, "INSERT INTO amocrm.contact_leads VALUES (42, 1)")
    with pytest.raises(sa.exc.DBAPIError, match="DELETE on contact_tags refused"):
        run(engine, "DELETE FROM amocrm.contact_tags WHERE contact_id = 42")


def test_id_assigned_by_amocrm_replaces_the_temporary_one_everywhere(engine: Engine) -> None:
    temp = run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('x') RETURNING id").scalar()
    run(engine, f"{LINK} VALUES (:i, :c)", {"i": temp, "c": CHAT})
    run(engine, "UPDATE amocrm.contacts SET id = 900 WHERE id = :i", {"i": temp}, origin=True)
    with engine.connect() as conn:
        assert {c["contact_id"] for c in changes(conn)} == {900}
        assert conn.scalar(sa.text("SELECT contact_id FROM amocrm.contact_chats")) == 900


def test_deleted_contact_cannot_be_edited(engine: Engine, contact: int) -> None:
    run(engine, "UPDATE amocrm.contacts SET is_deleted = true WHERE id = 42", origin=True)
    with pytest.raises(sa.exc.DBAPIError, match="contact 42 was deleted in amoCRM"):
        run(engine, "UPDATE amocrm.contacts SET name = 'x' WHERE id = 42")


def test_sync_request_is_announced(db_config: DatabaseConfig, engine: Engine) -> None:
    dsn = database_url(db_config).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {notify_channel('amocrm')}")
        run(engine, "INSERT INTO amocrm.sync_requests (kind) VALUES ('full')")
        notice = next(listener.notifies(timeout=5, stop_after=1))
    assert notice.channel == notify_channel("amocrm")


def _announced_before_fence(listener: psycopg.Connection[Any], engine: Engine) -> list[str]:
    """The notifications delivered before a sync_requests insert made now: PostgreSQL delivers
    notifications in commit order, so the fence's comes after everything committed before it."""
    run(engine, "INSERT INTO amocrm.sync_requests (kind) VALUES ('full')")
    got: list[str] = []
    for notice in listener.notifies(timeout=10):
        if notice.channel == notify_channel("amocrm"):
            return got
        got.append(notice.channel)
    raise AssertionError("the fence notification never arrived")


def test_local_writes_announce_themselves_once_per_transaction(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    run(
        engine,
        "INSERT INTO amocrm.contacts (id, name, updated_at) "
        "SELECT g, 'C' || g, :u FROM generate_series(1, 500) g",
        {"u": UPDATED},
        origin=True,
    )
    dsn = database_url(db_config).set(drivername="postgresql").render_as_string(False)
    changed = changes_channel("amocrm")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {notify_channel('amocrm')}")
        listener.execute(f"LISTEN {changed}")
        assert _announced_before_fence(listener, engine) == []
        run(engine, "UPDATE amocrm.contacts SET name = 'Bulk ' || id")  # 500 rows captured
        assert _announced_before_fence(listener, engine) == [changed]
        run(engine, "UPDATE amocrm.contacts SET name = 'Pulled'", origin=True)
        run(engine, "UPDATE amocrm.contacts SET name = name WHERE id < 10")  # nothing changed
        with engine.connect() as conn:
            conn.execute(sa.text("UPDATE amocrm.contacts SET name = 'Gone' WHERE id = 1"))
            conn.rollback()  # rolled back: announces nothing
        assert _announced_before_fence(listener, engine) == []
        run(engine, f"{LINK} VALUES (1, :c)", {"c": CHAT})
        assert _announced_before_fence(listener, engine) == [changed]
        run(engine, "INSERT INTO amocrm.contacts (name) VALUES ('New one')")
        assert _announced_before_fence(listener, engine) == [changed]
        settle = "UPDATE amocrm.sync_conflicts SET winner = 'local'"
        run(engine, "INSERT INTO amocrm.sync_conflicts (contact_id, field, policy) "
                    "VALUES (2, 'name', 'manual')", origin=True)  # fmt: skip
        run(engine, settle, origin=True)  # push recording a policy's winner: not announced
        assert _announced_before_fence(listener, engine) == []
        run(engine, settle)  # a person settling the conflict: push it now
        assert _announced_before_fence(listener, engine) == [changed]


def test_a_settled_conflict_cannot_be_changed_by_a_person(engine: Engine, contact: int) -> None:
    """Setting `winner` settles a waiting conflict; once push applied it (`resolved_at`), a
    person's change of it would claim a winner that was never sent: refused (the sync's own
    writes and a person's DELETE still go through)."""
    applied = "(42, 'name', 'manual', 'local', now())"
    columns = "(contact_id, field, policy, winner, resolved_at)"
    run(engine, f"INSERT INTO amocrm.sync_conflicts {columns} VALUES {applied}", origin=True)
    run(engine, "INSERT INTO amocrm.sync_conflicts (contact_id, field, policy) "
                "VALUES (42, 'first_name', 'manual')", origin=True)  # fmt: skip
    with pytest.raises(sa.exc.DBAPIError, match=r"conflict \d+ was already resolved") as caught:
        run(engine, "UPDATE amocrm.sync_conflicts SET winner = 'remote' WHERE field = 'name'")
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)
    run(engine, "UPDATE amocrm.sync_conflicts SET winner = 'remote' WHERE field = 'first_name'")
    run(engine, "UPDATE amocrm.sync_conflicts SET resolved_at = now()", origin=True)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT field, winner FROM amocrm.sync_conflicts ORDER BY 1"))
        assert rows.all() == [("first_name", "remote"), ("name", "local")]
    run(engine, "DELETE FROM amocrm.sync_conflicts")
