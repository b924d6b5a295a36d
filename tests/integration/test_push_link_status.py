"""A contact whose only unsent item is a chat link does not stay `pending` for good (review MED).

A link rejected because its contact is gone from amoCRM leaves the contact in `error`
"not found"; a pull that saw the contact again made it `pending`, and pushing (or withdrawing)
the link consumed the link's outbox row without working out the contact's status again: nothing
moved it off `pending`, and `amosync status` counted it as unsent work forever. Now the pull
makes it `pending` only when an edit is held for it (a pending link does not make a contact
pending), and the link step settles the contacts it consumes rows of."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync.core.models import NOT_FOUND
from sync.db.engine import sync_origin
from sync.db.status import count_contacts_by_status
from sync.pull import run_pull
from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

env = mirrored_env_fixture(contacts=6)

CHAT = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"
LINK = "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :g)"


def _link_left_not_found(env: PushEnv) -> int:
    """A local chat link of a contact deleted in amoCRM since the last pull, pushed."""
    contact_id = contact_ids(env)[-1]
    env.sql(LINK, c=contact_id, g=CHAT)
    env.emulator.delete_contact(contact_id)
    env.push()
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("error", NOT_FOUND)
    return contact_id


def _found_again(env: PushEnv, contact_id: int) -> None:
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(contact_id)
    run_pull(env.config, env.engine, env.client, full=False)


def _synced(env: PushEnv, contact_id: int) -> None:
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("synced", None)
    assert row["synced_at"] is not None
    with env.engine.connect() as conn:
        assert set(count_contacts_by_status(conn)) == {"synced"}


def _outbox(env: PushEnv, contact_id: int) -> list[str]:
    rows = env.sql("SELECT kind FROM sync_changes WHERE contact_id = :c", c=contact_id)
    return [r[0] for r in rows]


def test_a_contact_found_again_with_only_a_link_to_send_is_synced_and_stays_so(
    env: PushEnv,
) -> None:
    contact_id = _link_left_not_found(env)
    _found_again(env, contact_id)
    _synced(env, contact_id)  # the link still to send does not make the contact pending
    assert _outbox(env, contact_id) == ["chat_link"]
    report = env.push()
    assert (report.linked, report.errors) == (1, 0)
    assert env.emulator.account.chat_links[CHAT].contact_id == contact_id
    _synced(env, contact_id)
    assert _outbox(env, contact_id) == []


@pytest.mark.parametrize("chats", [True, False], ids=["chats", "chats_false"])
def test_a_link_withdrawn_while_not_found_leaves_nothing_pending_once_found(
    env: PushEnv, chats: bool
) -> None:
    contact_id = _link_left_not_found(env)
    env.sql("DELETE FROM contact_chats WHERE id < 0")  # withdrawn before it was sent
    report = env.push(chats=chats)
    assert (report.linked, report.links_held) == (0, 0)
    assert _outbox(env, contact_id) == []
    _found_again(env, contact_id)
    _synced(env, contact_id)
    assert CHAT not in env.emulator.account.chat_links


def _left_pending(env: PushEnv, contact_id: int) -> None:
    """A row an earlier version left `pending` with only its link to send."""
    with env.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
        sync_origin(conn)
        conn.execute(
            sa.text("UPDATE contacts SET sync_status = 'pending' WHERE id = :c"), {"c": contact_id}
        )


@pytest.mark.parametrize("withdrawn", [False, True], ids=["pushed", "withdrawn"])
def test_the_link_step_settles_a_contact_left_pending_with_only_its_link(
    env: PushEnv, withdrawn: bool
) -> None:
    contact_id = contact_ids(env)[0]
    env.sql(LINK, c=contact_id, g=CHAT)
    if withdrawn:
        env.sql("DELETE FROM contact_chats WHERE id < 0")
    _left_pending(env, contact_id)
    report = env.push(chats=not withdrawn)
    assert (report.linked, report.updated, report.errors) == (int(not withdrawn), 0, 0)
    _synced(env, contact_id)
    assert _outbox(env, contact_id) == []


def test_a_pushed_link_leaves_a_contact_in_conflict_as_it_is(env: PushEnv) -> None:
    contact_id = contact_ids(env)[0]
    env.sql("UPDATE contacts SET name = 'local name' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(5)
    env.emulator.update_contacts([{"id": contact_id, "name": "remote name"}])
    assert env.push(conflict_policy="manual").waiting == 1
    env.sql(LINK, c=contact_id, g=CHAT)
    assert env.push(conflict_policy="manual").linked == 1
    row = env.row(contact_id)
    assert (row["sync_status"], row["name"]) == ("conflict", "local name")
    assert _outbox(env, contact_id) == ["update"]


def test_a_link_only_contact_stored_deleted_then_restored_is_synced(env: PushEnv) -> None:
    contact_id = _link_left_not_found(env)
    env.emulator.clock.advance(2)
    run_pull(env.config, env.engine, env.client, full=False)  # the delete: a tombstone
    assert env.row(contact_id)["is_deleted"] is True
    _found_again(env, contact_id)  # the restore takes the tombstone back
    assert env.row(contact_id)["is_deleted"] is False
    _synced(env, contact_id)
    assert env.push().linked == 1
    _synced(env, contact_id)
