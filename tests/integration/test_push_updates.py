"""Push of local updates against the emulator over HTTP and a real PostgreSQL: only changed
fields are sent, edits coalesce, disjoint edits merge, same-field edits follow each policy."""

from __future__ import annotations

from typing import Any

import pytest

from sync.emulator import FaultRule
from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

env = mirrored_env_fixture(contacts=12)
_ids = contact_ids


def _cf(env: PushEnv, contact_id: int, code: str) -> Any:
    for entry in env.remote(contact_id).get("custom_fields_values") or []:
        if entry.get("field_code") == code:
            return [v["value"] for v in entry["values"]]
    return None


def test_edits_coalesce_into_one_entity_with_only_the_changed_fields(env: PushEnv) -> None:
    a, b = _ids(env)[:2]
    env.sql("UPDATE contacts SET name = 'first' WHERE id = :id", id=a)
    env.sql("UPDATE contacts SET name = 'second', last_name = 'L' WHERE id = :id", id=a)
    env.sql("UPDATE contacts SET first_name = 'F' WHERE id = :id", id=b)
    report = env.push()
    patches = env.api("PATCH")
    assert len(patches) == 1
    body = sorted(patches[0]["body"], key=lambda e: e["id"])
    assert body == [
        {"id": a, "name": "second", "last_name": "L", "request_id": str(a)},
        {"id": b, "first_name": "F", "request_id": str(b)},
    ]
    assert report.updated == 2
    assert report.conflicts == 0
    assert env.remote(a)["name"] == "second"
    assert env.remote(b)["first_name"] == "F"
    row = env.row(a)
    assert row["sync_status"] == "synced"
    assert row["synced_at"] is not None
    assert row["updated_at"].timestamp() == env.remote(a)["updated_at"]
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    runs = env.sql("SELECT kind, status, pushed, requests FROM sync_runs")
    # two contacts read by id (a list may lag a remote edit: test_push_lag), the PATCH, both
    # read back by id and the field definitions the read-back stores the custom field value
    # rows with (this mirror cached none, as a pull would have)
    assert [tuple(r) for r in runs] == [("push", "succeeded", 2, 6)]
    paths = [(r["method"], r["path"]) for r in env.emulator.requests()]
    assert sorted(paths[-3:]) == sorted(
        [("GET", f"/api/v4/contacts/{a}"), ("GET", f"/api/v4/contacts/{b}"),
         ("GET", "/api/v4/contacts/custom_fields")]
    )  # fmt: skip


def test_requests_counts_what_reached_amocrm_retries_included(env: PushEnv) -> None:
    a = _ids(env)[0]
    env.emulator.add_fault(FaultRule(kind="error", method="GET", status=502))
    env.sql("UPDATE contacts SET name = 'counted' WHERE id = :id", id=a)
    report = env.push()
    seen = [r for r in env.emulator.requests() if str(r["path"]).startswith("/api/v4/")]
    assert 502 in [r["status"] for r in seen]  # the current-version read was retried
    assert report.requests == len(seen)
    runs = env.sql("SELECT requests FROM sync_runs WHERE kind = 'push'")
    assert [r[0] for r in runs] == [len(seen)]


def test_custom_field_edit_sends_only_that_field_and_null_clears(env: PushEnv) -> None:
    contact_id = next(i for i in _ids(env) if _cf(env, i, "PHONE") and _cf(env, i, "EMAIL"))
    env.sql(
        "UPDATE contacts SET custom_fields_values = ("
        " SELECT jsonb_agg(CASE WHEN e->>'field_code' = 'PHONE' THEN jsonb_set(e, '{values}',"
        '  \'[{"value": "+70000000001", "enum_code": "MOB"}]\') ELSE e END)'
        " FROM jsonb_array_elements(custom_fields_values) e"
        " WHERE e->>'field_code' <> 'EMAIL') WHERE id = :id",
        id=contact_id,
    )
    before = env.remote(contact_id)["custom_fields_values"]
    env.push()
    (patch,) = env.api("PATCH")
    (entity,) = patch["body"]
    sent = {e["field_id"]: e["values"] for e in entity["custom_fields_values"]}
    phone_id = next(e["field_id"] for e in before if e["field_code"] == "PHONE")
    email_id = next(e["field_id"] for e in before if e["field_code"] == "EMAIL")
    assert sent == {phone_id: [{"value": "+70000000001", "enum_code": "MOB"}], email_id: None}
    assert set(entity) == {"id", "request_id", "custom_fields_values"}
    assert _cf(env, contact_id, "PHONE") == ["+70000000001"]
    assert _cf(env, contact_id, "EMAIL") is None
    others = {e["field_id"] for e in before} - {phone_id, email_id}
    after = {e["field_id"] for e in env.remote(contact_id)["custom_fields_values"]}
    assert others <= after  # untouched fields kept


def test_disjoint_edits_are_merged(env: PushEnv) -> None:
    contact_id = _ids(env)[0]
    env.sql("UPDATE contacts SET first_name = 'Local' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(3)
    env.emulator.update_contacts([{"id": contact_id, "last_name": "Remote"}])
    report = env.push()
    remote = env.remote(contact_id)
    assert (remote["first_name"], remote["last_name"]) == ("Local", "Remote")
    (patch,) = env.api("PATCH")
    assert patch["body"] == [
        {"id": contact_id, "first_name": "Local", "request_id": str(contact_id)}
    ]
    assert report.conflicts == 0
    assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 0
    row = env.row(contact_id)
    assert row["sync_status"] == "synced"
    # the read-back stores amoCRM's version: its last_name too, as a pull would
    assert row["updated_at"].timestamp() == remote["updated_at"]
    assert (row["first_name"], row["last_name"]) == ("Local", "Remote")


def _same_field(env: PushEnv, *, remote_later: bool) -> int:
    contact_id = _ids(env)[1]
    env.sql("UPDATE contacts SET name = 'local name' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(5 if remote_later else -3600)
    env.emulator.update_contacts([{"id": contact_id, "name": "remote name"}])
    return contact_id


@pytest.mark.parametrize(
    ("policy", "remote_later", "winner", "name"),
    [
        ("local_wins", True, "local", "local name"),
        ("remote_wins", False, "remote", "remote name"),
        ("newest_wins", True, "remote", "remote name"),
        ("newest_wins", False, "local", "local name"),
    ],
)
def test_same_field_edits_follow_the_policy(
    env: PushEnv, policy: str, remote_later: bool, winner: str, name: str
) -> None:
    contact_id = _same_field(env, remote_later=remote_later)
    report = env.push(conflict_policy=policy)
    assert env.remote(contact_id)["name"] == name
    assert env.row(contact_id)["name"] == name
    assert env.row(contact_id)["sync_status"] == "synced"
    conflicts = env.sql("SELECT field, base_value, local_value, remote_value, policy, winner,"
                        " resolved_at IS NOT NULL FROM sync_conflicts")  # fmt: skip
    (conflict,) = conflicts
    assert tuple(conflict)[2:] == ("local name", "remote name", policy, winner, True)
    assert conflict.field == "name"
    assert report.conflicts == 1
    assert len(env.api("PATCH")) == (1 if winner == "local" else 0)
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


@pytest.mark.parametrize("keep", ["local", "remote"])
def test_manual_conflict_waits_for_a_person_then_applies(env: PushEnv, keep: str) -> None:
    contact_id = _same_field(env, remote_later=True)
    env.sql("UPDATE contacts SET last_name = 'merged' WHERE id = :id", id=contact_id)
    report = env.push(conflict_policy="manual")
    assert report.held == 1
    assert env.remote(contact_id)["name"] == "remote name"
    assert env.remote(contact_id)["last_name"] == "merged"  # the other field still went
    row = env.row(contact_id)
    assert (row["sync_status"], row["name"]) == ("conflict", "local name")
    (conflict_id,) = [r[0] for r in env.sql("SELECT id FROM sync_conflicts WHERE winner IS NULL")]
    env.emulator.clear_requests()
    env.push(conflict_policy="manual")  # still waiting: nothing sent, no second conflict row
    assert env.api("PATCH") == []
    assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 1
    env.sql("UPDATE sync_conflicts SET winner = :w WHERE id = :id", w=keep, id=conflict_id)
    env.push(conflict_policy="manual")
    expected = "local name" if keep == "local" else "remote name"
    assert env.remote(contact_id)["name"] == expected
    row = env.row(contact_id)
    assert (row["sync_status"], row["name"]) == ("synced", expected)
    resolved = env.sql("SELECT resolved_at FROM sync_conflicts WHERE id = :id", id=conflict_id)
    assert resolved[0][0] is not None
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_per_field_policy_overrides_the_default(env: PushEnv) -> None:
    contact_id = _same_field(env, remote_later=True)
    env.push(conflict_policy="remote_wins", conflict_fields=("name=local_wins",))
    assert env.remote(contact_id)["name"] == "local name"


def test_same_value_on_both_sides_is_not_a_conflict(env: PushEnv) -> None:
    contact_id = _ids(env)[2]
    env.sql("UPDATE contacts SET name = 'agreed' WHERE id = :id", id=contact_id)
    env.emulator.update_contacts([{"id": contact_id, "name": "agreed"}])
    report = env.push(conflict_policy="manual")
    assert (report.conflicts, report.updated, report.unchanged) == (0, 0, 1)
    assert env.api("PATCH") == []
    assert env.row(contact_id)["sync_status"] == "synced"


def test_edit_captured_while_pushing_survives(env: PushEnv) -> None:
    contact_id = _ids(env)[3]
    env.sql("UPDATE contacts SET name = 'one' WHERE id = :id", id=contact_id)
    original = env.client.update_contacts

    def edit_meanwhile(entities: Any, **kw: Any) -> Any:
        env.sql("UPDATE contacts SET last_name = 'two' WHERE id = :id", id=contact_id)
        return original(entities, **kw)

    env.client.update_contacts = edit_meanwhile  # type: ignore[method-assign]
    env.push()
    env.client.update_contacts = original  # type: ignore[method-assign]
    row = env.row(contact_id)
    assert (row["sync_status"], row["name"], row["last_name"]) == ("pending", "one", "two")
    left = env.sql("SELECT new_values FROM sync_changes WHERE contact_id = :id", id=contact_id)
    assert [r[0] for r in left] == [{"last_name": "two"}]
    env.push()
    assert env.remote(contact_id)["last_name"] == "two"
    assert env.row(contact_id)["sync_status"] == "synced"
