"""Push together with the real pull (`sync.pull.run_pull`): a pull before push keeps the local
edit, our own PATCH coming back is an echo (no write, no conflict, no second PATCH), and a remote
edit pulled in between is merged or becomes a conflict."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync import status
from sync.config import DatabaseConfig
from sync.db.engine import sync_origin
from sync.emulator.faults import FaultRule
from sync.pull import run_pull
from tests.integration.push_env import PushEnv, push_env


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=15) as env:
        run_pull(env.config, env.engine, env.client, full=True)
        env.emulator.clear_requests()
        yield env


def pull(env: PushEnv) -> Any:
    return run_pull(env.config, env.engine, env.client)


def _first(env: PushEnv) -> int:
    return sorted(env.emulator.account.contacts)[0]


def _other_user(env: PushEnv, contact_id: int) -> int:
    current = env.remote(contact_id)["responsible_user_id"]
    return next(u for u in sorted(env.emulator.account.users) if u != current)


def test_pull_before_push_keeps_the_local_edit(env: PushEnv) -> None:
    contact_id = _first(env)
    user = _other_user(env, contact_id)
    env.sql("UPDATE contacts SET name = 'local edit' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(2)
    env.emulator.update_contacts([{"id": contact_id, "responsible_user_id": user}])
    pull(env)
    row = env.row(contact_id)
    assert (row["name"], row["responsible_user_id"], row["sync_status"]) == (
        "local edit",
        user,
        "pending",
    )
    report = env.push()
    assert report.updated == 1
    assert report.conflicts == 0
    (patch,) = env.api("PATCH")
    entity = {"id": contact_id, "name": "local edit", "request_id": str(contact_id)}
    assert patch["body"] == [entity]
    remote = env.remote(contact_id)
    assert (remote["name"], remote["responsible_user_id"]) == ("local edit", user)
    assert env.row(contact_id)["sync_status"] == "synced"


def test_our_patch_coming_back_is_an_echo(env: PushEnv) -> None:
    contact_id = _first(env)
    env.sql("UPDATE contacts SET first_name = 'Echo' WHERE id = :id", id=contact_id)
    env.push()
    assert len(env.api("PATCH")) == 1
    before = env.row(contact_id)
    assert before["updated_at"].timestamp() == env.remote(contact_id)["updated_at"]
    env.emulator.clear_requests()
    env.emulator.clock.advance(2)
    pull(env)  # reads our own PATCH back (amoCRM also set updated_by and rebuilt the name)
    after = env.row(contact_id)
    assert (after["first_name"], after["sync_status"]) == ("Echo", "synced")
    assert after["updated_at"] == before["updated_at"]
    assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 0
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    again = env.push()
    assert again.pushed == 0
    assert [r for r in env.emulator.requests() if r["method"] == "PATCH"] == []
    env.sql("UPDATE contacts SET last_name = 'Next' WHERE id = :id", id=contact_id)
    env.emulator.clear_requests()
    third = env.push(conflict_policy="manual")
    assert (third.updated, third.conflicts) == (1, 0)
    (patch,) = env.api("PATCH")
    assert patch["body"] == [{"id": contact_id, "last_name": "Next", "request_id": str(contact_id)}]


def test_remote_edit_of_the_same_field_pulled_in_between_is_a_conflict(env: PushEnv) -> None:
    contact_id = _first(env)
    env.sql("UPDATE contacts SET name = 'mine' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(60)
    env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
    pull(env)
    assert env.row(contact_id)["name"] == "mine"
    report = env.push(conflict_policy="newest_wins")
    assert report.conflicts == 1
    assert env.api("PATCH") == []
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("theirs", "synced")
    assert env.remote(contact_id)["name"] == "theirs"
    pull(env)
    assert env.row(contact_id)["name"] == "theirs"


def test_merged_contact_is_refreshed_by_the_read_back(env: PushEnv) -> None:
    contact_id = _first(env)
    user = _other_user(env, contact_id)
    env.sql("UPDATE contacts SET first_name = 'Mine' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(2)
    env.emulator.update_contacts([{"id": contact_id, "responsible_user_id": user}])
    env.push()  # merged without a pull first: the read-back brings amoCRM's new user in
    row = env.row(contact_id)
    assert (row["first_name"], row["responsible_user_id"]) == ("Mine", user)
    pull(env)
    row = env.row(contact_id)
    assert (row["first_name"], row["responsible_user_id"], row["sync_status"]) == (
        "Mine",
        user,
        "synced",
    )
    assert row["updated_at"].timestamp() == env.remote(contact_id)["updated_at"]
    env.emulator.clear_requests()
    env.push()
    assert env.api("PATCH") == []


def test_a_restore_in_amocrm_sends_the_edit_held_back_by_not_found_again(env: PushEnv) -> None:
    """A local edit push could not send because amoCRM had deleted the contact (`error`, "not
    found") goes back to `pending` when a pull brings the contact back, and the next push
    sends it, merged with amoCRM's state as ever."""
    contact_id = _first(env)
    env.sql("UPDATE contacts SET name = 'kept locally' WHERE id = :id", id=contact_id)
    env.emulator.delete_contact(contact_id)
    env.push()
    assert env.row(contact_id)["sync_status"] == "error"
    pull(env)
    assert env.row(contact_id)["is_deleted"] is True
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(contact_id)
    pull(env)
    row = env.row(contact_id)
    assert (row["is_deleted"], row["sync_status"], row["sync_error"]) == (False, "pending", None)
    assert row["name"] == "kept locally"
    assert env.push().updated == 1
    assert env.remote(contact_id)["name"] == "kept locally"
    assert env.row(contact_id)["sync_status"] == "synced"


def test_status_says_a_restore_frees_edits_held_on_a_contact_deleted_in_amocrm(
    env: PushEnv,
) -> None:
    """A new edit of a contact deleted in amoCRM is refused, so "a new edit of the row retries"
    (what a row in error for another reason is told) was no way out there (soak audit)."""
    deleted, rejected = sorted(env.emulator.account.contacts)[:2]
    env.sql("UPDATE contacts SET name = 'kept locally' WHERE id = :id", id=deleted)
    env.sql("UPDATE contacts SET name = 'rejected' WHERE id = :id", id=rejected)
    with env.engine.begin() as conn:  # as push leaves a row amoCRM rejected with a 400
        conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
        sync_origin(conn)
        conn.execute(
            sa.text("UPDATE contacts SET sync_status = 'error', sync_error = 'x' WHERE id = :id"),
            {"id": rejected},
        )
    env.emulator.delete_contact(deleted)
    env.push()
    pull(env)
    assert (env.row(deleted)["is_deleted"], env.row(deleted)["sync_status"]) == (True, "error")
    with env.engine.connect() as conn:
        data = status.gather(conn, env.config)
    assert (data["rejected_changes"], data["rejected_on_deleted"]) == (2, 1)
    line = status.render(data)
    assert "1 held on rows in error (a new edit of the row retries)" in line, line
    assert "1 held on contacts deleted in amoCRM (an edit here is refused: restore" in line
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(deleted)
    pull(env)
    with env.engine.connect() as conn:
        data = status.gather(conn, env.config)
    assert (data["rejected_changes"], data["rejected_on_deleted"]) == (1, 0)
    assert "held on contacts deleted" not in status.render(data)


def test_an_edit_and_a_link_rejected_for_a_contact_deleted_since_the_read_are_sent_after_restore(
    env: PushEnv,
) -> None:
    """The list still showed the contact (lists lag), so the PATCH and the link went out and
    amoCRM rejected them in its own words; no pull saw the deletion before the restore. The
    row stayed `error` with that message forever, the edit and the link never resent (audit).
    A rejected contact amoCRM no longer has gets the "not found" status a restore clears."""
    contact_id = _first(env)
    env.emulator.set_controls(list_lag_s=30)
    env.sql("UPDATE contacts SET name = 'kept locally' WHERE id = :id", id=contact_id)
    chat = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"
    env.sql(
        "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:id, :c)", id=contact_id, c=chat
    )
    env.emulator.delete_contact(contact_id)
    env.push()
    row = env.row(contact_id)
    assert (row["sync_status"], row["is_deleted"]) == ("error", False)
    assert row["sync_error"].startswith("the contact was not found in amoCRM")
    env.emulator.set_controls(list_lag_s=0)
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(contact_id)
    pull(env)
    assert env.row(contact_id)["sync_status"] == "pending"
    report = env.push()
    assert (report.updated, report.linked) == (1, 1)
    assert env.remote(contact_id)["name"] == "kept locally"
    assert env.row(contact_id)["sync_status"] == "synced"


def _by_age(env: PushEnv) -> list[int]:
    """amoCRM's contacts, least recently updated first."""
    contacts = env.emulator.account.contacts.values()
    return [c.id for c in sorted(contacts, key=lambda c: (c.updated_at, c.id))]


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
def test_an_edit_held_by_a_passing_not_found_is_sent_once_a_pull_lists_the_contact_unchanged(
    env: PushEnv, full: bool
) -> None:
    """amoCRM answered push for a moment that it had no such contact (the list and the read by
    id), so the row became `error` "not found"; the contact was there all along, unchanged. A
    pull listing it again (a full resync, or an incremental one within its overlap) wrote
    nothing, so the row stayed `error` and the edit was never sent (review). Any pull that sees
    the contact sets it back to `pending`, whether or not its data changed."""
    contact_id = _by_age(env)[-1]  # the newest: every incremental pull lists it again
    env.sql("UPDATE contacts SET name = 'kept locally' WHERE id = :id", id=contact_id)
    for path in ("/api/v4/contacts", f"/api/v4/contacts/{contact_id}"):
        env.emulator.add_fault(FaultRule(kind="absent", method="GET", path=path))
    env.push()
    row = env.row(contact_id)
    assert (row["sync_status"], row["is_deleted"]) == ("error", False)
    assert row["sync_error"].startswith("the contact was not found in amoCRM")
    version = env.remote(contact_id)["updated_at"]
    env.emulator.clear_requests()
    run_pull(env.config, env.engine, env.client, full=full)
    listed = [r for r in env.emulator.requests() if r["path"] == "/api/v4/contacts"]
    assert listed
    assert env.remote(contact_id)["updated_at"] == version  # listed again, unchanged
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"], row["name"]) == ("pending", None, "kept locally")
    assert env.push().updated == 1
    assert env.remote(contact_id)["name"] == "kept locally"
    assert env.row(contact_id)["sync_status"] == "synced"


def test_a_restore_the_lagging_list_does_not_show_yet_sends_the_edit_held_by_not_found(
    env: PushEnv,
) -> None:
    """Deleted after the (lagging) list showed it, the contact's PATCH was rejected and its row
    became `error` "not found"; then it was restored. The restore's event names a contact the
    tables hold as live, and the list (still lagging, or where a restore keeps `updated_at`)
    shows no new version of it, so nothing cleared the status. A restored contact left "not
    found" is read by id, and that read sets it back to `pending`."""
    contact_id = _by_age(env)[0]  # the oldest: outside the overlap an incremental pull reads
    newest = env.emulator.contact(_by_age(env)[-1])
    assert newest is not None
    assert env.remote(contact_id)["updated_at"] < newest["updated_at"] - env.config.sync.overlap_s
    env.emulator.set_controls(list_lag_s=30)
    env.sql("UPDATE contacts SET name = 'kept locally' WHERE id = :id", id=contact_id)
    env.emulator.delete_contact(contact_id)
    env.push()
    row = env.row(contact_id)
    assert (row["sync_status"], row["is_deleted"]) == ("error", False)
    assert row["sync_error"].startswith("the contact was not found in amoCRM")
    env.emulator.clock.advance(2)
    env.emulator.restore_contact(contact_id)
    pull(env)
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"], row["is_deleted"]) == ("pending", None, False)
    env.emulator.set_controls(list_lag_s=0)
    assert env.push().updated == 1
    assert env.remote(contact_id)["name"] == "kept locally"
    assert env.row(contact_id)["sync_status"] == "synced"
