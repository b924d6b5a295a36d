"""Push against the emulator and a real PostgreSQL: a custom field's per-field policy named by
its code, the order of a multitext's values, field codes in any case on INSERT as on UPDATE, and
correcting a rejected chat link (found by a black-box audit of push)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from sync.db.engine import sync_origin
from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

env = mirrored_env_fixture(contacts=6)


def _values(env: PushEnv, contact_id: int, code: str) -> list[Any] | None:
    for entry in env.remote(contact_id).get("custom_fields_values") or []:
        if entry.get("field_code") == code:
            return [v["value"] for v in entry["values"]]
    return None


def _set_remote(env: PushEnv, contact_id: int, code: str, values: list[dict[str, Any]]) -> None:
    """A CRM user's edit of one field in amoCRM."""
    entry = {"field_code": code, "values": values}
    env.emulator.update_contacts([{"id": contact_id, "custom_fields_values": [entry]}])


def _set_local(env: PushEnv, contact_id: int, code: str, values: list[dict[str, Any]]) -> None:
    """Replace one field's values in the local row (by its code), as a person would."""
    env.sql(
        "UPDATE contacts SET custom_fields_values = ("
        " SELECT jsonb_agg(CASE WHEN e->>'field_code' = :code"
        "  THEN jsonb_set(e, '{values}', CAST(:values AS jsonb)) ELSE e END)"
        " FROM jsonb_array_elements(custom_fields_values) e) WHERE id = :id",
        id=contact_id,
        code=code,
        values=json.dumps(values),
    )


@pytest.mark.parametrize("override", ["cf:POSITION", "cf:position", "cf:570003"])
def test_a_custom_field_policy_named_by_its_code_settles_the_conflict(
    env: PushEnv, override: str
) -> None:
    contact_id = contact_ids(env)[0]
    _set_remote(env, contact_id, "POSITION", [{"value": "base"}])
    env.mirror([contact_id])
    _set_local(env, contact_id, "POSITION", [{"value": "local"}])
    env.emulator.clock.advance(5)
    env.emulator.update_contacts(
        [
            {
                "id": contact_id,
                "custom_fields_values": [
                    {"field_code": "POSITION", "values": [{"value": "remote"}]}
                ],
            }
        ]
    )
    report = env.push(conflict_policy="local_wins", conflict_fields=(f"{override}=remote_wins",))
    assert _values(env, contact_id, "POSITION") == ["remote"]
    assert env.api("PATCH") == []
    local = {e["field_code"]: e["values"] for e in env.row(contact_id)["custom_fields_values"]}
    assert local["POSITION"][0]["value"] == "remote"
    conflicts = env.sql("SELECT field, policy, winner FROM sync_conflicts")
    assert [tuple(c) for c in conflicts] == [("cf:570003", "remote_wins", "remote")]
    assert report.conflicts == 1


def test_making_another_phone_the_main_one_is_sent(env: PushEnv) -> None:
    contact_id = contact_ids(env)[1]
    first = {"value": "+70000000001", "enum_code": "WORK"}
    second = {"value": "+70000000002", "enum_code": "MOB"}
    _set_remote(env, contact_id, "PHONE", [first, second])
    env.mirror([contact_id])
    env.emulator.clear_requests()
    _set_local(env, contact_id, "PHONE", [second, first])
    report = env.push()
    assert _values(env, contact_id, "PHONE") == ["+70000000002", "+70000000001"]
    (patch,) = env.api("PATCH")
    assert [v["value"] for v in patch["body"][0]["custom_fields_values"][0]["values"]] == [
        "+70000000002",
        "+70000000001",
    ]
    assert (report.updated, report.unchanged) == (1, 0)
    assert env.row(contact_id)["sync_status"] == "synced"


def test_an_insert_may_name_a_field_by_its_code_in_any_case(env: PushEnv) -> None:
    cf = [{"field_code": "email", "values": [{"value": "low@example.com", "enum_code": "WORK"}]}]
    env.sql(
        "INSERT INTO contacts (name, custom_fields_values) VALUES ('Lower', CAST(:cf AS jsonb))",
        cf=json.dumps(cf),
    )
    report = env.push()
    assert (report.created, report.errors) == (1, 0)
    (row,) = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE name = 'Lower'")
    assert row.id > 0
    assert (row.sync_status, row.sync_error) == ("synced", None)
    assert _values(env, row.id, "EMAIL") == ["low@example.com"]


def test_a_rejected_chat_link_is_corrected_as_the_docs_say(env: PushEnv) -> None:
    """A link amoCRM rejects (here one captured before migration 0010 checked chat ids) marks
    its contact `error`; the row cannot be updated, it is deleted and the right one inserted,
    and an edit of the contact sends it."""
    contact_id = contact_ids(env)[2]
    good = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f"
    link = env.sql(
        "INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :g) RETURNING id",
        c=contact_id,
        g="00000000-0000-4000-8000-000000000001",
    )[0][0]
    with env.engine.begin() as conn:  # what a row inserted before the check may hold
        sync_origin(conn)
        conn.execute(sa.text("UPDATE amocrm.contact_chats SET chat_id = ' ' WHERE id = :i"),
                     {"i": link})  # fmt: skip
    report = env.push()
    assert (report.linked, report.errors) == (0, 1)
    row = env.row(contact_id)
    assert row["sync_status"] == "error"
    assert row["sync_error"].startswith("chat link")
    with pytest.raises(sa.exc.DBAPIError, match="a link is made, never edited"):
        env.sql("UPDATE contact_chats SET chat_id = :g WHERE id = :i", g=good, i=link)
    env.sql("DELETE FROM contact_chats WHERE id = :i", i=link)
    env.sql("INSERT INTO contact_chats (contact_id, chat_id) VALUES (:c, :g)", c=contact_id, g=good)
    env.sql("UPDATE contacts SET first_name = 'Linked' WHERE id = :id", id=contact_id)
    report = env.push()
    assert (report.linked, report.updated, report.errors) == (1, 1, 0)
    assert env.emulator.account.chat_links[good].contact_id == contact_id
    row = env.row(contact_id)
    assert (row["sync_status"], row["sync_error"]) == ("synced", None)
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_an_edit_amocrm_already_carries_leaves_the_column_in_amocrms_shape(env: PushEnv) -> None:
    # fields rewritten by code, without enum_id: the same values as amoCRM's, another shape
    contact_id = next(
        c for c in contact_ids(env) if _values(env, contact_id=c, code="PHONE") is not None
    )
    env.sql(
        "UPDATE contacts SET custom_fields_values = (SELECT jsonb_agg(jsonb_build_object("
        " 'field_code', e->>'field_code', 'values', (SELECT jsonb_agg(v - 'enum_id')"
        " FROM jsonb_array_elements(e->'values') v))) FROM jsonb_array_elements("
        " custom_fields_values) e) WHERE id = :id",
        id=contact_id,
    )
    report = env.push()
    assert (report.unchanged, report.updated) == (1, 0)
    assert env.api("PATCH") == []
    row = env.row(contact_id)
    assert row["sync_status"] == "synced"
    # stored as a pull would store amoCRM's version: field_id and enum_id are back
    assert row["custom_fields_values"] == env.remote(contact_id)["custom_fields_values"]
