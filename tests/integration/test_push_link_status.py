"""A contact whose only unsent item is a chat link does not stay `pending` for good (review MED).

A link rejected because its contact is gone from amoCRM leaves the contact in `error`
"not found"; a pull that sees the contact again makes it `pending`. Pushing the link (or
withdrawing it) consumed the link's outbox row but never worked out the contact's status again:
nothing moved it off `pending`, and `amosync status` counted it as unsent work forever."""

from __future__ import annotations

import pytest

from sync.core.models import NOT_FOUND
from sync.db.status import count_contacts_by_status
from sync.pull import run_pull
from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

env = mirrored_env_fixture(contacts=6)

CHAT = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"


def _link_left_not_found_then_found(env: PushEnv) -> int:
    """A local chat link of a contact deleted in amoCRM since the last pull, then restored."""
    contact_id = contact_ids(env)[-1]
    env.sql("INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :g)", c=contact_id, g=CHAT)
    env.emulator.delete_contact(contact_id)
    env.push()
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("error", NOT_FOUND)
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(contact_id)
    run_pull(env.config, env.engine, env.client, full=False)
    assert env.row(contact_id)["sync_status"] == "pending"
    return contact_id


def _nothing_unsent(env: PushEnv, contact_id: int) -> None:
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("synced", None)
    assert row["synced_at"] is not None
    assert env.sql("SELECT id FROM sync_changes WHERE contact_id = :c", c=contact_id) == []
    with env.engine.connect() as conn:
        assert set(count_contacts_by_status(conn)) == {"synced"}


def test_a_link_pushed_for_a_contact_found_again_leaves_it_synced(env: PushEnv) -> None:
    contact_id = _link_left_not_found_then_found(env)
    report = env.push()
    assert (report.linked, report.errors) == (1, 0)
    assert env.emulator.account.chat_links[CHAT].contact_id == contact_id
    _nothing_unsent(env, contact_id)


@pytest.mark.parametrize("chats", [True, False], ids=["chats", "chats_false"])
def test_a_link_withdrawn_for_a_contact_found_again_leaves_it_synced(
    env: PushEnv, chats: bool
) -> None:
    contact_id = _link_left_not_found_then_found(env)
    env.sql("DELETE FROM contact_chats WHERE id < 0")  # withdrawn before its push
    report = env.push(chats=chats)
    assert (report.linked, report.links_held, report.errors) == (0, 0, 0)
    assert CHAT not in env.emulator.account.chat_links
    _nothing_unsent(env, contact_id)
