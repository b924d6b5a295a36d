"""The contact's sync_status after a push that sent its field edit and a new chat link together
(issue 11, item 5): both went through, nothing of the contact is left, so it is `synced` —
whichever was captured first, and for a new contact with a link too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.integration.push_env import PushEnv, push_env

EDIT = "UPDATE contacts SET name = 'edited with a link' WHERE id = :id"
LINK = "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:id, :chat)"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=6) as env:
        env.mirror()
        env.emulator.clear_requests()
        yield env


def _chat(n: int) -> str:
    """A chat id (a UUID, as amoCRM makes them) of its own for `n`."""
    return f"00000000-0000-4000-8000-{abs(n):012d}"


def _settled(env: PushEnv, contact_id: int) -> None:
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("synced", None)
    assert row["synced_at"] is not None
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    assert env.emulator.account.chat_links[_chat(contact_id)].contact_id == contact_id


@pytest.mark.parametrize("link_first", [False, True])
def test_field_edit_and_chat_link_in_one_push_end_synced(env: PushEnv, link_first: bool) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    steps = [(LINK, {"chat": _chat(contact_id)}), (EDIT, {})]
    for statement, params in steps if link_first else reversed(steps):
        env.sql(statement, id=contact_id, **params)
    report = env.push()
    assert (report.updated, report.linked, report.errors) == (1, 1, 0)
    assert env.remote(contact_id)["name"] == "edited with a link"
    _settled(env, contact_id)


@pytest.mark.parametrize("edit_after_link", [False, True])
def test_new_contact_with_a_chat_link_ends_synced(env: PushEnv, edit_after_link: bool) -> None:
    (temp_id,) = env.sql("INSERT INTO contacts (name) VALUES ('new with a link') RETURNING id")[0]
    env.sql(LINK, id=temp_id, chat=_chat(0))
    if edit_after_link:
        env.sql("UPDATE contacts SET last_name = 'Later' WHERE id = :id", id=temp_id)
    report = env.push()
    assert (report.created, report.linked, report.errors) == (1, 1, 0)
    (new_id,) = env.sql("SELECT id FROM contacts WHERE name = 'new with a link'")[0]
    assert env.emulator.account.chat_links[_chat(0)].contact_id == new_id
    row = env.row(new_id)
    assert (row["sync_status"], row["sync_error"]) == ("synced", None)
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_chat_links_held_by_chats_false_are_named_not_silent(env: PushEnv) -> None:
    """With `sync.chats = false` a local chat link stayed pending forever without a word (push
    said "0 chat links", status "1 local change(s) to push"): push and status now name it."""
    from structlog.testing import capture_logs

    from sync.status import gather, render

    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql(LINK, id=contact_id, chat=_chat(contact_id))
    with capture_logs() as logs:
        report = env.push(chats=False)
    assert (report.linked, report.links_held) == (0, 1)
    assert "1 chat link held: sync.chats = false" in report.describe()
    assert [e["count"] for e in logs if e["event"] == "chat_links_held"] == [1]
    assert _chat(contact_id) not in env.emulator.account.chat_links
    config = replace(env.config, sync=replace(env.config.sync, chats=False))
    with env.engine.connect() as conn:
        text = render(gather(conn, config))
    assert "1 chat link(s) held because sync.chats = false" in text
    with env.engine.connect() as conn:  # chats on: nothing held, the next push sends it
        assert gather(conn, env.config)["held_chat_links"] == 0


def test_a_chat_link_deleted_before_its_push_is_not_held(env: PushEnv) -> None:
    """Deleting a link not pushed yet withdraws it: with `sync.chats = false` it was still
    counted as held (status and a warning on every push), its capture never forgotten."""
    from sync.status import gather

    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql(LINK, id=contact_id, chat=_chat(contact_id))
    env.sql("DELETE FROM contact_chats WHERE id < 0")
    config = replace(env.config, sync=replace(env.config.sync, chats=False))
    with env.engine.connect() as conn:
        assert gather(conn, config)["held_chat_links"] == 0
    assert env.push(chats=False).links_held == 0
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
