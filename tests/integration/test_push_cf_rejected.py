"""Custom-field values amoCRM judges, through real PostgreSQL, the real pull and the emulator
over HTTP: an unknown field, an unknown choice or a wrong type is a legal local UPDATE or
INSERT (whatever the cached definitions say), push sends it, amoCRM's 400 `validation-errors`
makes that row `error` with amoCRM's message, and the other contacts of the batch go through.
A field created in amoCRM after the last pull can be set at once. A stand-in that renders a
phone's kind as `enum` (the vendor reference's GET example) fills `enum_code` and pushes an
edited phone as `enum_code`, with no echo afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator.model import CustomField
from sync.pull import run_pull
from tests.integration.push_env import PushEnv, push_env

NOT_A_CHOICE = "The value you selected is not a valid choice."
# fact sheet §13.7: what amoCRM answers with a 400 validation-errors, and its path and detail
# (`{at}`: the entry's index in the local column, which `set_field` puts last)
REJECTED = {
    "unknown field_id": (
        {"field_id": 999999, "values": [{"value": "x"}]},
        "custom_fields_values.{at}.field_id: " + NOT_A_CHOICE,
    ),
    "unknown enum_id": (
        {"field_id": 570004, "values": [{"enum_id": 840026}]},
        "custom_fields_values.{at}.values.0.enum_id: " + NOT_A_CHOICE,
    ),
    "a date as ISO text": (
        {"field_id": 570006, "values": [{"value": "2024-01-01"}]},
        "custom_fields_values.{at}.values.0.value: This value should be of type int.",
    ),
}


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=8) as env:
        run_pull(env.config, env.engine, env.client, full=True)  # definitions cached too
        env.emulator.clear_requests()
        yield env


def set_field(env: PushEnv, contact_id: int, entry: dict[str, Any]) -> None:
    """A local UPDATE that puts `entry` in place of that field's values (or adds it)."""
    current = env.row(contact_id)["custom_fields_values"] or []
    replaced = entry.get("field_id")
    kept = [e for e in current if replaced is None or e.get("field_id") != replaced]
    env.sql(
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = :id",
        id=contact_id,
        cf=json.dumps([*kept, entry]),
    )


@pytest.mark.parametrize(("entry", "reason"), REJECTED.values(), ids=REJECTED.keys())
def test_a_value_amocrm_rejects_is_an_error_row_and_the_rest_of_the_batch_goes_through(
    env: PushEnv, entry: dict[str, Any], reason: str
) -> None:
    assert env.sql("SELECT count(*) FROM contact_custom_fields")[0][0] > 0
    ids = sorted(env.emulator.account.contacts)[:4]
    bad, good = ids[1], [ids[0], ids[2], ids[3]]
    before = env.remote(bad)
    env.sql("UPDATE contacts SET first_name = 'ok' WHERE id = ANY(:ids)", ids=good)
    set_field(env, bad, entry)  # accepted at SQL time
    assert env.row(bad)["sync_status"] == "pending"

    report = env.push()

    row = env.row(bad)
    at = len(row["custom_fields_values"]) - 1
    assert (row["sync_status"], row["sync_error"]) == (
        "error",
        f"amoCRM rejected the change: {reason.format(at=at)}",
    )
    assert report.errors == 1
    assert report.updated == 3
    for contact_id in good:
        assert env.row(contact_id)["sync_status"] == "synced"
        assert env.remote(contact_id)["first_name"] == "ok"
    assert env.remote(bad)["custom_fields_values"] == before["custom_fields_values"]
    first, *rest = env.api("PATCH")
    assert first["status"] == 400
    assert {e["id"] for e in first["body"]} == set(ids)  # one batch, refused as a whole
    assert [sorted(e["id"] for e in r["body"]) for r in rest] == [sorted(good)]
    assert [r["status"] for r in rest] == [200]


def test_a_new_contact_with_a_value_amocrm_rejects_is_an_error_the_others_are_created(
    env: PushEnv,
) -> None:
    good = env.sql("INSERT INTO contacts (name) VALUES ('Good New') RETURNING id")[0][0]
    entry, reason = REJECTED["a date as ISO text"]
    bad = env.sql(
        "INSERT INTO contacts (name, custom_fields_values) VALUES ('Bad New', CAST(:cf AS jsonb)) "
        "RETURNING id",
        cf=json.dumps([{"field_id": 570003, "values": []}, entry]),
    )[0][0]  # accepted at SQL time; the POST leaves the field without values out

    report = env.push()

    assert (report.created, report.errors) == (1, 1)
    row = env.row(bad)
    assert (row["sync_status"], row["sync_error"]) == (
        "error",
        f"amoCRM rejected the change: {reason.format(at=1)}",  # the column's index, not the POST's
    )
    names = {c.name for c in env.emulator.account.contacts.values()}
    assert "Good New" in names
    assert "Bad New" not in names
    assert env.sql("SELECT count(*) FROM contacts WHERE id = :id", id=good)[0][0] == 0  # got an id


def test_a_field_created_in_amocrm_after_the_last_pull_can_be_set_at_once(env: PushEnv) -> None:
    env.emulator.account.add_field(CustomField(570_013, "Telegram", "text", "TELEGRAM", 530))
    assert env.sql("SELECT count(*) FROM contact_custom_fields WHERE id = 570013")[0][0] == 0
    by_id, by_code = sorted(env.emulator.account.contacts)[:2]
    set_field(env, by_id, {"field_id": 570013, "values": [{"value": "@ann"}]})
    set_field(env, by_code, {"field_code": "TELEGRAM", "values": [{"value": "@bob"}]})

    report = env.push()

    assert (report.updated, report.errors) == (2, 0)
    for contact_id, handle in ((by_id, "@ann"), (by_code, "@bob")):
        assert env.row(contact_id)["sync_status"] == "synced"
        fields = {
            f["field_id"]: f["values"] for f in env.remote(contact_id)["custom_fields_values"]
        }
        assert fields[570013] == [{"value": handle}]


@pytest.fixture
def enum_env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=8) as env:
        env.emulator.set_controls(enum_key="enum")
        run_pull(env.config, env.engine, env.client, full=True)
        env.emulator.clear_requests()
        yield env


def test_a_phone_read_as_enum_fills_enum_code_and_is_pushed_as_enum_code(
    enum_env: PushEnv,
) -> None:
    env = enum_env
    phones = env.sql("SELECT contact_id, phone, enum_code FROM contact_phones ORDER BY 1, 2")
    assert phones
    assert all(p.enum_code for p in phones), phones  # `enum` read as enum_code
    flat = env.sql("SELECT count(*) FROM contacts_flat WHERE phone_enum_code IS NOT NULL")
    assert flat[0][0] == len({p.contact_id for p in phones})
    contact_id = phones[0].contact_id
    column = env.row(contact_id)["custom_fields_values"]
    phone = next(f for f in column if f["field_id"] == 570001)
    assert "enum" in phone["values"][0]
    assert "enum_code" not in phone["values"][0]
    edited = {**phone, "values": [{"value": "+79990001122", "enum": "MOB"}]}
    set_field(env, contact_id, edited)  # the trigger accepts `enum`

    report = env.push()

    assert (report.updated, report.errors) == (1, 0)
    (patch,) = env.api("PATCH")
    assert patch["body"][0]["custom_fields_values"] == [
        {"field_id": 570001, "values": [{"value": "+79990001122", "enum_code": "MOB"}]}
    ]
    remote = {f["field_id"]: f["values"] for f in env.remote(contact_id)["custom_fields_values"]}
    assert [(v["value"], v["enum_code"]) for v in remote[570001]] == [("+79990001122", "MOB")]
    assert env.row(contact_id)["sync_status"] == "synced"
    env.emulator.clock.advance(2)
    run_pull(env.config, env.engine, env.client)  # our own write comes back, as `enum`
    env.emulator.clear_requests()
    report = env.push()
    assert env.api("PATCH") == []  # no echo: {"enum": "MOB"} is the {"enum_code": "MOB"} sent
    assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 0
    assert env.row(contact_id)["sync_status"] == "synced"
    assert env.sql(
        "SELECT phone, enum_code FROM contact_phones WHERE contact_id = :id", id=contact_id
    ) == [("+79990001122", "MOB")]


def test_the_error_path_names_the_entry_of_the_users_column_not_of_the_patch(
    env: PushEnv,
) -> None:
    # the column sets a choice amoCRM does not have and keeps one later field; the fields it
    # drops are cleared and go before it in the PATCH: the PATCH's index is not the column's
    def ids(contact_id: int) -> list[int]:
        return [e["field_id"] for e in env.row(contact_id)["custom_fields_values"] or []]

    contact_id = next(
        c for c in sorted(env.emulator.account.contacts)
        if min(ids(c), default=570004) < 570004 and max(ids(c), default=0) > 570004
    )  # fmt: skip
    later = next(e for e in env.row(contact_id)["custom_fields_values"] if e["field_id"] > 570004)
    column = [{"field_id": 570004, "values": [{"enum_id": 999999}]}, later]
    env.sql(
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = :id",
        id=contact_id,
        cf=json.dumps(column),
    )
    env.push()
    (patch,) = env.api("PATCH")
    sent = [e.get("field_id") for e in patch["body"][0]["custom_fields_values"]]
    assert sent.index(570004) > 0  # the PATCH's own index differs
    assert env.row(contact_id)["sync_error"] == (
        f"amoCRM rejected the change: custom_fields_values.0.values.0.enum_id: {NOT_A_CHOICE}"
    )
