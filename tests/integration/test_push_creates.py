"""Creates, chat links, rejections and crash recovery of push, against the emulator over HTTP
and a real PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.push.held import RESEND_AFTER_S
from tests.integration.push_env import PushEnv, backdate_creates, push_env

POST = "/api/v4/contacts"
CHAT = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=60) as env:
        env.mirror()
        env.emulator.clear_requests()
        yield env


def _insert(env: PushEnv, name: str, phone: str | None = None) -> int:
    value = [{"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}]
    cf = json.dumps(value) if phone else None
    rows = env.sql(
        "INSERT INTO contacts (name, custom_fields_values) VALUES (:n, CAST(:cf AS jsonb)) "
        "RETURNING id",
        n=name,
        cf=cf,
    )
    return int(rows[0][0])


def _remote_names(env: PushEnv) -> Counter[str]:
    return Counter(c.name for c in env.emulator.account.contacts.values())


def test_created_contacts_get_amocrm_ids_everywhere_and_links_follow(env: PushEnv) -> None:
    first = _insert(env, "New One", "+71110000001")
    second = _insert(env, "New Two")
    env.sql("UPDATE contacts SET last_name = 'Two' WHERE id = :id", id=second)
    env.sql(
        "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :chat)", c=first, chat=CHAT
    )
    assert first < 0
    assert second < 0
    report = env.push()
    assert (report.created, report.linked) == (2, 1)
    (post,) = env.api("POST")
    assert [e["request_id"] for e in post["body"]] == [str(first), str(second)]
    names = _remote_names(env)
    assert (names["New One"], names["New Two"]) == (1, 1)
    rows = env.sql("SELECT id, name, last_name, sync_status FROM contacts WHERE id > 0 AND "
                   "name LIKE 'New %' ORDER BY name")  # fmt: skip
    assert [(r.name, r.last_name, r.sync_status) for r in rows] == [
        ("New One", "", "synced"),  # amoCRM's own value, stored by the push's read-back
        ("New Two", "Two", "synced"),
    ]
    new_id = rows[0].id
    assert env.remote(new_id)["name"] == "New One"
    (link,) = env.sql("SELECT id, contact_id, chat_id FROM contact_chats")
    assert link.contact_id == new_id
    assert link.id > 0
    assert env.emulator.account.chat_links[CHAT].contact_id == new_id
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    assert env.sql("SELECT count(*) FROM sync_state WHERE key = 'push_in_flight'")[0][0] == 0
    env.emulator.clear_requests()
    env.push()
    assert env.emulator.requests() == []  # nothing left to do: not even a read


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule(kind="reset", method="POST", path=POST, apply_write=True),
        FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True),
    ],
    ids=["reset", "504"],
)
def test_creates_with_lost_responses_make_no_duplicates(env: PushEnv, fault: FaultRule) -> None:
    temps = [_insert(env, f"Lost {n}", f"+7222000000{n}") for n in range(5)]
    env.emulator.add_fault(fault)
    report = env.push(push_workers=1)
    assert report.created == 5
    names = _remote_names(env)
    assert [names[f"Lost {n}"] for n in range(5)] == [1] * 5
    assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0
    assert temps
    ids = {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE 'Lost %'")}
    remote = env.emulator.account.contacts.values()
    assert {c.id for c in remote if c.name.startswith("Lost")} == ids


def test_crash_after_the_post_before_the_commit_is_reconciled_not_resent(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        _insert(env, f"Crash {n}", f"+7333000000{n}")
    _insert(env, "Crash 0", "+73330000000")  # a look-alike: needs its own contact

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # the process dies between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    assert sum(_remote_names(env)[f"Crash {n}"] for n in range(3)) == 4  # applied remotely
    assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 4
    report = env.push()
    assert report.recovered == 4
    assert len(env.api("POST")) == 1  # never sent again
    names = _remote_names(env)
    assert [names[f"Crash {n}"] for n in range(3)] == [2, 1, 1]
    local = {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE 'Crash %'")}
    remote = {c.id for c in env.emulator.account.contacts.values() if c.name.startswith("Crash")}
    assert local == remote
    assert env.sql("SELECT count(*) FROM sync_state WHERE key = 'push_in_flight'")[0][0] == 0


def test_crash_before_the_post_left_is_sent_after_recovery(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = _insert(env, "Never Sent")
    env.emulator.add_fault(FaultRule(kind="reset", method="POST", path=POST, times=None))
    assert env.push().creates_held == 1  # the answer lost, not shown: held, not resent
    assert len(env.api("POST")) == 1
    env.emulator.clear_faults()
    assert _remote_names(env)["Never Sent"] == 0
    assert env.push().creates_held == 1  # not shown: a list may lag it yet
    assert len(env.api("POST")) == 1
    backdate_creates(env, RESEND_AFTER_S)
    report = env.push()
    assert report.created == 1
    assert _remote_names(env)["Never Sent"] == 1
    assert env.sql("SELECT count(*) FROM contacts WHERE id = :id", id=temp)[0][0] == 0


def test_a_look_alike_a_person_made_after_a_crash_is_not_taken_for_ours(env: PushEnv) -> None:
    """The POST was reset and not applied, the push died; meanwhile a CRM user typed in the same
    contact. Recovery must not tie the local row to the user's contact: ours is created."""
    temp = _insert(env, "Same Content", "+73334445566")
    env.emulator.add_fault(FaultRule(kind="reset", method="POST", path=POST, times=None))
    assert env.push().creates_held == 1  # the answer lost, not shown: held, not resent
    assert len(env.api("POST")) == 1
    env.emulator.clear_faults()
    entry = {"field_code": "PHONE", "values": [{"value": "+73334445566", "enum_code": "WORK"}]}
    (theirs,) = env.emulator.create_contacts(
        [{"name": "Same Content", "custom_fields_values": [entry]}]
    )
    backdate_creates(env, RESEND_AFTER_S)  # ours is not shown past the bound: not made
    report = env.push()
    assert (report.recovered, report.created) == (0, 1)
    assert _remote_names(env)["Same Content"] == 2
    (local,) = [r[0] for r in env.sql("SELECT id FROM contacts WHERE name = 'Same Content'")]
    assert local not in (temp, theirs)
    creators = {c.id: c.created_by for c in env.emulator.account.contacts.values()}
    assert (creators[local], creators[theirs]) == (8_000_001, 8_000_002)


def test_a_batch_with_two_invalid_entities_gets_the_other_48_through(env: PushEnv) -> None:
    ids = sorted(env.emulator.account.contacts)[:50]
    for contact_id in ids:
        env.sql("UPDATE contacts SET name = 'batch ' || id WHERE id = :id", id=contact_id)
    bad_user, bad_field = ids[7], ids[31]
    env.sql("UPDATE contacts SET responsible_user_id = 424242 WHERE id = :id", id=bad_user)
    env.sql(
        "UPDATE contacts SET custom_fields_values = "
        '\'[{"field_id": 999999, "values": [{"value": "x"}]}]\' WHERE id = :id',
        id=bad_field,
    )
    report = env.push()
    assert (report.updated, report.errors) == (48, 2)
    patches = env.api("PATCH")
    assert [len(p["body"]) for p in patches] == [50, 48]
    for contact_id in ids:
        expected = contact_id not in (bad_user, bad_field)
        assert (env.remote(contact_id)["name"] == f"batch {contact_id}") is expected
    errors = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE sync_status <> "
                     "'synced' ORDER BY id")  # fmt: skip
    assert [(r.id, r.sync_status) for r in errors] == [(bad_user, "error"), (bad_field, "error")]
    assert "responsible_user_id" in errors[0].sync_error
    assert "custom_fields_values" in errors[1].sync_error
    env.emulator.clear_requests()
    env.push()
    assert env.api("PATCH") == []  # an error row waits for a new edit
    env.sql("UPDATE contacts SET responsible_user_id = :u WHERE id = :id",
            u=env.remote(ids[0])["responsible_user_id"], id=bad_user)  # fmt: skip
    env.push()
    assert env.remote(bad_user)["name"] == f"batch {bad_user}"
    assert env.row(bad_user)["sync_status"] == "synced"
    assert env.row(bad_field)["sync_status"] == "error"


def test_rejected_create_is_an_error_row_the_rest_are_created(env: PushEnv) -> None:
    good = _insert(env, "Good New")
    bad = env.sql(
        "INSERT INTO contacts (name, responsible_user_id) VALUES ('Bad New', 77) RETURNING id"
    )[0][0]
    report = env.push()
    assert (report.created, report.errors) == (1, 1)
    assert _remote_names(env)["Good New"] == 1
    assert _remote_names(env)["Bad New"] == 0
    row = env.row(bad)
    assert row["sync_status"] == "error"
    assert "responsible_user_id" in row["sync_error"]
    assert env.sql("SELECT count(*) FROM contacts WHERE id = :id", id=good)[0][0] == 0


def test_contact_deleted_in_amocrm_is_an_error_row(env: PushEnv) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'too late' WHERE id = :id", id=contact_id)
    env.emulator.delete_contact(contact_id)
    report = env.push()
    assert report.errors == 1
    row = env.row(contact_id)
    assert row["sync_status"] == "error"
    assert "not found" in row["sync_error"]
    assert env.api("PATCH") == []
