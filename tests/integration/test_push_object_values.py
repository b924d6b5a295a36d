# ruff: noqa: RUF001 - Cyrillic names, as amoCRM accounts hold them
"""Custom fields whose value is a JSON object (legal_entity, linked_entity, file) against the
emulator, which gives the object's keys in amoCRM's order, never jsonb's: the stored row's
keys come back in another order, and no comparison of push may read that as a change (found
by an audit against an independent stand-in: a local clear became a conflict and was dropped
under remote_wins)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

LEGAL, LINKED, FILE = 570_021, 570_022, 570_023
OBJECTS: dict[int, dict[str, Any]] = {
    LEGAL: {
        "name": "ООО «Ромашка»",
        "entity_type": None,
        "vat_id": "7701234567",
        "tax_registration_reason_code": None,
        "address": "Москва",
        "kpp": "770101001",
        "external_uid": None,
    },
    LINKED: {
        "name": "Товар",
        "entity_id": 17,
        "entity_type": "catalog_elements",
        "catalog_id": 5_001,
    },
    FILE: {
        "file_uuid": "6f0b4c4e-1a53-4b53-9f5e-0a0b9a3e3f10",
        "version_uuid": "0d6f5a0e-2b1c-4d4e-8f9a-1b2c3d4e5f60",
        "file_name": "a.pdf",
        "file_size": 1_234,
        "is_deleted": False,
    },
}

env = mirrored_env_fixture(contacts=6)


def _give(env: PushEnv, contact_id: int, field_id: int, value: dict[str, Any]) -> None:
    """amoCRM holds `value` in the field (an edit there, before the last pull)."""
    entry = {"field_id": field_id, "values": [{"value": value}]}
    env.emulator.update_contacts([{"id": contact_id, "custom_fields_values": [entry]}])


def _remote(env: PushEnv, contact_id: int, field_id: int) -> Any:
    for entry in env.remote(contact_id).get("custom_fields_values") or []:
        if entry["field_id"] == field_id:
            return entry["values"]
    return None


def _clear_local(env: PushEnv, contact_id: int, field_id: int) -> None:
    env.sql(
        "UPDATE contacts SET custom_fields_values = ("
        " SELECT jsonb_agg(CASE WHEN (e->>'field_id')::bigint = :field"
        "  THEN jsonb_set(e, '{values}', 'null') ELSE e END)"
        " FROM jsonb_array_elements(custom_fields_values) e) WHERE id = :id",
        id=contact_id,
        field=field_id,
    )


def test_the_emulator_gives_object_keys_in_an_order_other_than_jsonbs(env: PushEnv) -> None:
    contact_id = contact_ids(env)[0]
    _give(env, contact_id, LEGAL, OBJECTS[LEGAL])
    env.mirror([contact_id])
    (remote,) = _remote(env, contact_id, LEGAL)
    stored = env.sql(
        "SELECT e -> 'values' -> 0 -> 'value' FROM contacts,"
        " jsonb_array_elements(custom_fields_values) e"
        " WHERE id = :id AND (e->>'field_id')::bigint = :field",
        id=contact_id,
        field=LEGAL,
    )[0][0]
    assert remote["value"] == stored
    assert list(remote["value"]) != list(stored)  # same object, keys in another order


@pytest.mark.parametrize("field_id", [LEGAL, LINKED, FILE])
@pytest.mark.parametrize("policy", ["remote_wins", "newest_wins", "manual"])
def test_a_local_clear_of_an_object_value_amocrm_left_alone_is_sent(
    env: PushEnv, field_id: int, policy: str
) -> None:
    contact_id = contact_ids(env)[1]
    _give(env, contact_id, field_id, OBJECTS[field_id])
    env.mirror([contact_id])
    env.emulator.clear_requests()
    _clear_local(env, contact_id, field_id)
    report = env.push(conflict_policy=policy)
    (patch,) = env.api("PATCH")
    assert patch["body"][0]["custom_fields_values"] == [{"field_id": field_id, "values": None}]
    assert _remote(env, contact_id, field_id) is None
    assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 0
    assert (report.updated, report.conflicts) == (1, 0)
    assert env.row(contact_id)["sync_status"] == "synced"


def test_a_local_clear_of_an_object_value_amocrm_changed_is_a_conflict(env: PushEnv) -> None:
    contact_id = contact_ids(env)[2]
    _give(env, contact_id, LEGAL, OBJECTS[LEGAL])
    env.mirror([contact_id])
    _clear_local(env, contact_id, LEGAL)
    _give(env, contact_id, LEGAL, {**OBJECTS[LEGAL], "kpp": "770201001"})
    env.emulator.clear_requests()
    env.push(conflict_policy="manual")
    assert env.api("PATCH") == []
    conflicts = env.sql("SELECT field, base_value = remote_value, winner FROM sync_conflicts")
    assert [tuple(c) for c in conflicts] == [(f"cf:{LEGAL}", False, None)]
    assert json.loads(json.dumps(_remote(env, contact_id, LEGAL)))[0]["value"]["kpp"] == (
        "770201001"
    )


@pytest.mark.parametrize("field_id", [LEGAL, LINKED, FILE])
def test_a_local_change_of_an_object_value_is_sent_in_amocrms_shape(
    env: PushEnv, field_id: int
) -> None:
    """The capture trigger refused any object as a value ("must be a string, number or
    boolean, got object"): amoCRM's own shape for these fields could not be written."""
    contact_id = contact_ids(env)[3]
    _give(env, contact_id, field_id, OBJECTS[field_id])
    env.mirror([contact_id])
    env.emulator.clear_requests()
    edited = {**OBJECTS[field_id], "name": "Новое имя"}
    env.sql(
        "UPDATE contacts SET custom_fields_values = ("
        " SELECT jsonb_agg(CASE WHEN (e->>'field_id')::bigint = :field"
        "  THEN jsonb_set(e, '{values}', CAST(:values AS jsonb)) ELSE e END)"
        " FROM jsonb_array_elements(custom_fields_values) e) WHERE id = :id",
        id=contact_id,
        field=field_id,
        values=json.dumps([{"value": edited}]),
    )
    report = env.push(conflict_policy="manual")
    (patch,) = env.api("PATCH")
    assert patch["body"][0]["custom_fields_values"] == [
        {"field_id": field_id, "values": [{"value": edited}]}
    ]
    assert _remote(env, contact_id, field_id) == [{"value": edited}]
    assert (report.updated, report.conflicts) == (1, 0)
    assert env.row(contact_id)["sync_status"] == "synced"
    env.emulator.clear_requests()
    env.push(conflict_policy="manual")  # nothing left: amoCRM's key order is no change
    assert env.api("PATCH") == []
