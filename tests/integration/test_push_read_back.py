"""After a push, the contacts it wrote hold amoCRM's version, not the shape the user wrote
(`sync.push.readback`; CONTRACT.md: `custom_fields_values` is "amoCRM's own shape, NULL when
none"). Before, a created contact was `synced` with NULL `created_at`, `created_by`,
`account_id`… and no custom field value rows, an edit kept its `field_code`/no-`enum_id` shape,
and `[]` stayed `[]`, until the next pull. With the list lag on, a read showing the version
before the write stores nothing: the next pull does it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.pull import run_pull
from sync.push import readback
from tests.integration.push_env import PushEnv, push_env
from tests.integration.test_push_pull_race import WAIT_S, HeldAnswer

PHONE = [{"field_code": "phone", "values": [{"value": "+70000000001", "enum_code": "WORK"}]}]
SET_CF = "UPDATE contacts SET custom_fields_values = CAST(:v AS jsonb) WHERE id = :id"
# what a pull stores and a read-back must store the same (synced_at is when, not what)
ROW = ("id, name, first_name, last_name, responsible_user_id, group_id, created_by, updated_by, "
       "created_at, updated_at, closest_task_at, account_id, custom_fields_values, is_deleted, "
       "sync_status, sync_error")  # fmt: skip
RELATIONS = {
    "contact_custom_field_values": "field_id, position, value, enum_id, enum_code",
    "contact_tags": "tag_id",
    "contact_companies": "company_id",
    "contact_chats": "id, chat_id",
}


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=4) as env:
        run_pull(env.config, env.engine, env.client, full=True)
        env.emulator.clock.freeze()  # every read "at once" after the write, however slow
        yield env


@pytest.fixture
def list_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-back's list path (a push of more than `BY_ID_MAX` contacts) for a push of one:
    a list may lag the write, a read by id does not (`test_a_few_contacts_are_read_back_by_id`)."""
    monkeypatch.setattr(readback, "BY_ID_MAX", 0)


def _lag(env: PushEnv, lagging: bool) -> None:
    env.emulator.set_controls(list_lag_s=2 if lagging else 0)


def _snapshot(env: PushEnv, contact_id: int) -> dict[str, Any]:
    shot: dict[str, Any] = {"contacts": env.sql(f"SELECT {ROW} FROM contacts WHERE id = :id",
                                                id=contact_id)}  # fmt: skip
    for table, columns in RELATIONS.items():
        shot[table] = env.sql(
            f"SELECT {columns} FROM {table} WHERE contact_id = :id ORDER BY {columns}",
            id=contact_id,
        )
    return shot


def _as_a_pull_stores(env: PushEnv, contact_id: int) -> None:
    """The rows push left are exactly what a full pull stores now."""
    after_push = _snapshot(env, contact_id)
    run_pull(env.config, env.engine, env.client, full=True)
    assert after_push == _snapshot(env, contact_id)


def _later_pull(env: PushEnv) -> None:
    env.emulator.clock.advance(5)  # past the lag
    run_pull(env.config, env.engine, env.client, full=False)


@pytest.mark.parametrize("lagging", [False, True], ids=["no-lag", "list-lag"])
@pytest.mark.usefixtures("list_reads")
def test_an_update_with_an_enum_ends_in_amocrms_shape(env: PushEnv, lagging: bool) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    _lag(env, lagging)
    env.sql(SET_CF, id=contact_id, v=json.dumps(PHONE))
    report = env.push()
    assert (report.updated, report.errors) == (1, 0)
    row = env.row(contact_id)
    assert row["sync_status"] == "synced"
    if lagging:  # the list showed the version before ours: nothing stored, nothing marked
        assert (report.read_back, report.read_back_left) == (0, 1)
        assert row["custom_fields_values"] == PHONE
        _later_pull(env)
    else:
        assert (report.read_back, report.read_back_left) == (1, 0)
    row = env.row(contact_id)
    assert row["custom_fields_values"] == env.remote(contact_id)["custom_fields_values"]
    (entry,) = row["custom_fields_values"]
    assert (entry["field_id"], entry["field_name"], entry["field_code"]) == (
        570_001, "Телефон", "PHONE",
    )  # fmt: skip
    assert entry["values"] == [{"value": "+70000000001", "enum_id": 840_001, "enum_code": "WORK"}]
    assert env.sql(
        "SELECT field_id, value, enum_id, enum_code FROM contact_custom_field_values "
        "WHERE contact_id = :id",
        id=contact_id,
    ) == [(570_001, "+70000000001", 840_001, "WORK")]
    _as_a_pull_stores(env, contact_id)


@pytest.mark.parametrize("lagging", [False, True], ids=["no-lag", "list-lag"])
@pytest.mark.usefixtures("list_reads")
def test_a_created_contact_has_amocrms_columns_and_value_rows(env: PushEnv, lagging: bool) -> None:
    _lag(env, lagging)
    env.sql(
        "INSERT INTO contacts (name, custom_fields_values) VALUES ('Created', CAST(:v AS jsonb))",
        v=json.dumps(PHONE),
    )
    report = env.push()
    assert (report.created, report.errors) == (1, 0)
    ((contact_id,),) = env.sql("SELECT id FROM contacts WHERE name = 'Created'")
    assert contact_id > 0
    remote = env.remote(contact_id)
    if lagging:  # not listed yet: left to the next pull, the row as the POST's record made it
        assert (report.read_back, report.read_back_left) == (0, 1)
        assert env.row(contact_id)["created_at"] is None
        _later_pull(env)
    else:
        assert (report.read_back, report.read_back_left) == (1, 0)
    row = env.row(contact_id)
    assert row["sync_status"] == "synced"
    for column in ("created_at", "updated_at", "responsible_user_id", "created_by", "account_id"):
        assert row[column] is not None, column
    assert row["custom_fields_values"] == remote["custom_fields_values"]
    assert env.sql(
        "SELECT field_id, enum_id FROM contact_custom_field_values WHERE contact_id = :id",
        id=contact_id,
    ) == [(570_001, 840_001)]
    _as_a_pull_stores(env, contact_id)


@pytest.mark.parametrize("lagging", [False, True], ids=["no-lag", "list-lag"])
@pytest.mark.usefixtures("list_reads")
def test_a_clear_to_an_empty_array_ends_null(env: PushEnv, lagging: bool) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    assert env.row(contact_id)["custom_fields_values"]  # the seed gives every contact fields
    _lag(env, lagging)
    env.sql(SET_CF, id=contact_id, v="[]")
    report = env.push()
    assert (report.updated, report.errors) == (1, 0)
    assert env.remote(contact_id).get("custom_fields_values") is None
    if lagging:
        assert env.row(contact_id)["custom_fields_values"] == []
        _later_pull(env)
    row = env.row(contact_id)
    assert (row["custom_fields_values"], row["sync_status"]) == (None, "synced")
    assert env.sql(
        "SELECT count(*) FROM contact_custom_field_values WHERE contact_id = :id", id=contact_id
    ) == [(0,)]
    _as_a_pull_stores(env, contact_id)


def test_an_edit_captured_during_the_push_is_not_overwritten(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit of the column made while the PATCH was in flight keeps its local value (and its
    value rows) through the read-back, stays `pending` and goes with the next push; the
    other columns take amoCRM's version."""
    contact_id = sorted(env.emulator.account.contacts)[0]
    again = [{"field_code": "POSITION", "values": [{"value": "again"}]}]
    env.sql(SET_CF, id=contact_id, v=json.dumps(PHONE))
    held = HeldAnswer(env.emulator, "PATCH")
    monkeypatch.setattr(env.emulator, "handle", held)
    done: list[Any] = []
    pushing = threading.Thread(target=lambda: done.append(env.push()))
    pushing.start()
    try:
        assert held.applied.wait(WAIT_S), "no PATCH came"
        env.sql(SET_CF, id=contact_id, v=json.dumps(again))
    finally:
        held.release.set()
        pushing.join(WAIT_S)
    assert done, "the push did not finish"
    assert (done[0].updated, done[0].read_back) == (1, 1)
    row = env.row(contact_id)
    assert (row["custom_fields_values"], row["sync_status"]) == (again, "pending")
    assert row["created_by"] is not None
    assert env.sql(
        "SELECT value FROM contact_custom_field_values WHERE contact_id = :id", id=contact_id
    ) == [("again",)]
    monkeypatch.undo()
    assert env.push().updated == 1
    row = env.row(contact_id)
    assert row["sync_status"] == "synced"
    assert row["custom_fields_values"] == env.remote(contact_id)["custom_fields_values"]
    assert row["custom_fields_values"][0]["field_name"]  # amoCRM's shape again


@pytest.mark.usefixtures("list_reads")
def test_a_lagging_read_of_the_same_second_is_not_taken_for_our_write(env: PushEnv) -> None:
    """Two pushes within one second: the second's read-back may list the first's version,
    whose `updated_at` is the second's answer too (one-second resolution). It does not carry
    what the second sent, so it is not stored: the row keeps the value pushed, for the pull."""
    contact_id = sorted(env.emulator.account.contacts)[0]
    clock = env.emulator.clock
    clock.set(float(int(clock.now()) + 1) + 0.1)  # T + 0.1
    env.emulator.set_controls(list_lag_s=0.3)
    env.sql("UPDATE contacts SET name = 'first' WHERE id = :id", id=contact_id)
    assert env.push().read_back_left == 1  # listed as of T - 0.2: the version before
    written_at = env.remote(contact_id)["updated_at"]
    clock.advance(0.5)  # T + 0.6: the list shows 'first' at T, the second PATCH is at T too
    env.sql("UPDATE contacts SET name = 'second' WHERE id = :id", id=contact_id)
    report = env.push()
    assert env.remote(contact_id)["updated_at"] == written_at
    assert (report.updated, report.read_back, report.read_back_left) == (1, 0, 1)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("second", "synced")
    _later_pull(env)
    assert env.row(contact_id)["name"] == "second"


def test_a_few_contacts_are_read_back_by_id_whatever_the_lists_lag(env: PushEnv) -> None:
    """The daemon's usual push (a contact or a few) reads each back by id, which does not lag
    the write: with the lists 2 s behind, the rows are amoCRM's at once, not left to the pull."""
    ids = sorted(env.emulator.account.contacts)[:2]
    _lag(env, True)
    for contact_id in ids:
        env.sql(SET_CF, id=contact_id, v=json.dumps(PHONE))
    report = env.push()
    assert (report.updated, report.read_back, report.read_back_left) == (2, 2, 0)
    for contact_id in ids:
        row = env.row(contact_id)
        assert row["custom_fields_values"] == env.remote(contact_id)["custom_fields_values"]
        assert row["custom_fields_values"][0]["field_name"]  # amoCRM's shape
    _lag(env, False)
    for contact_id in ids:
        _as_a_pull_stores(env, contact_id)
