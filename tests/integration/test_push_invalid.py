"""A malformed local row (captured before migration 0003's check existed, or written by a session
that bypassed it) never clears anything in amoCRM and never blocks the other rows: it becomes an
`error` row with a one-line reason; the rest of the outbox flows. Emulator over HTTP, real
PostgreSQL."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from sync import status
from sync.db.engine import sync_origin
from tests.integration.push_env import PushEnv, contact_ids, mirrored_env_fixture

HOSTILE = {
    "object": {"field_id": 570003, "values": [{"value": "CTO"}]},
    "string": "CTO",
    "number": 42,
    "values 5": [{"field_id": 570003, "values": 5}],
    "field_id abc": [{"field_id": "abc", "values": [{"value": "CTO"}]}],
}
REASONS = {
    "object": "custom_fields_values: must be a JSON array of fields or NULL, got object",
    "string": "custom_fields_values: must be a JSON array of fields or NULL, got string",
    "number": "custom_fields_values: must be a JSON array of fields or NULL, got number",
    "values 5": "custom_fields_values[0].values: must be an array of values or null, got number",
    "field_id abc": 'custom_fields_values[0].field_id: must be an integer, got "abc"',
}


env = mirrored_env_fixture(contacts=12)
_ids = contact_ids


def _over_http(env: PushEnv, contact_id: int) -> dict[str, Any]:
    data = env.client.fetch_contact(contact_id)
    assert data is not None
    return data


def _as_sync(env: PushEnv, *statements: str, **params: Any) -> list[Any]:
    """Writes the capture triggers skip: how rows got in before migration 0003's check."""
    with env.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
        sync_origin(conn)
        results = [conn.execute(sa.text(s), params) for s in statements]
        return list(results[0]) if results[0].returns_rows else []


def _captured_before_0003(
    env: PushEnv, contact_id: int, column: Any, *, text: str | None = None
) -> None:
    """What the capture trigger stored for a local edit before the shape check existed (`text`:
    the column as JSON text, for what `json.dumps` cannot write)."""
    _as_sync(
        env,
        "INSERT INTO sync_changes (contact_id, kind, new_values, base_values, base_updated_at) "
        "SELECT id, 'update', jsonb_build_object('custom_fields_values', CAST(:cf AS jsonb)), "
        "jsonb_build_object('custom_fields_values', custom_fields_values), updated_at "
        "FROM contacts WHERE id = :id",
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb), sync_status = 'pending' "
        "WHERE id = :id",
        id=contact_id,
        cf=json.dumps(column) if text is None else text,
    )


def _inserted_before_0003(env: PushEnv, name: str, column: Any) -> int:
    rows = _as_sync(
        env,
        "INSERT INTO contacts (id, name, custom_fields_values, sync_status) "
        "VALUES (nextval('contacts_local_id_seq'), :n, CAST(:cf AS jsonb), 'pending') "
        "RETURNING id",
        n=name,
        cf=json.dumps(column),
    )
    temp_id = int(rows[0][0])
    _as_sync(
        env,
        "INSERT INTO sync_changes (contact_id, kind, new_values) VALUES (:id, 'create', "
        "jsonb_build_object('name', CAST(:n AS text), 'custom_fields_values', CAST(:cf AS jsonb)))",
        id=temp_id,
        n=name,
        cf=json.dumps(column),
    )
    return temp_id


def test_hostile_rows_are_errors_and_the_good_edits_behind_them_go_out(env: PushEnv) -> None:
    ids = _ids(env)
    bad = dict(zip(HOSTILE, ids[:5], strict=True))
    good = ids[5:9]
    before = {i: _over_http(env, i) for i in bad.values()}
    for kind, contact_id in bad.items():
        _captured_before_0003(env, contact_id, HOSTILE[kind])
    for contact_id in good:
        env.sql("UPDATE contacts SET name = 'good ' || id WHERE id = :id", id=contact_id)
    with capture_logs() as logs:
        report = env.push()
    assert (report.updated, report.errors) == (len(good), len(bad))
    for contact_id in good:
        assert _over_http(env, contact_id)["name"] == f"good {contact_id}"
        assert env.row(contact_id)["sync_status"] == "synced"
    sent = {e["id"] for patch in env.api("PATCH") for e in patch["body"]}
    assert sent == set(good)
    for kind, contact_id in bad.items():
        after = _over_http(env, contact_id)
        assert after["custom_fields_values"] == before[contact_id]["custom_fields_values"]
        assert after["updated_at"] == before[contact_id]["updated_at"]
        row = env.row(contact_id)
        assert row["sync_status"] == "error"
        assert row["sync_error"] == f"not sent: {REASONS[kind]}"
        assert "\n" not in row["sync_error"]
    left = env.sql("SELECT DISTINCT contact_id FROM sync_changes ORDER BY 1")
    assert [r[0] for r in left] == sorted(bad.values())  # kept for a retry
    invalid = [e for e in logs if e["event"] == "push_row_invalid"]
    assert sorted(e["contact_id"] for e in invalid) == sorted(bad.values())
    assert not any("CTO" in json.dumps(e, default=str) for e in invalid)  # never the values


def test_a_number_python_cannot_read_stops_only_its_own_row(env: PushEnv) -> None:
    """jsonb prints 1e5000 as 5001 digits, more than Python's json reads as an int (4300): such
    a row, stored before migration 0014, failed the whole push; now it is read as a float, and
    its row alone is an error."""
    bad, good = _ids(env)[:2]
    huge = '[{"field_id": 570003, "values": [{"value": 1e5000}]}]'
    _captured_before_0003(env, bad, None, text=huge)
    env.sql("UPDATE contacts SET name = 'good' WHERE id = :id", id=good)
    report = env.push()
    assert (report.updated, report.errors) == (1, 1)
    assert _over_http(env, good)["name"] == "good"
    row = env.row(bad)
    assert row["sync_status"] == "error"
    assert row["custom_fields_values"] == [{"field_id": 570003, "values": [{"value": math.inf}]}]
    assert row["sync_error"] == (
        "not sent: custom_fields_values[0].values[0].value: must be a number below 1e300 in "
        "magnitude, got Infinity"
    )


def test_a_fixed_row_is_sent_on_the_next_push(env: PushEnv) -> None:
    contact_id = _ids(env)[0]
    original = _over_http(env, contact_id)["custom_fields_values"]
    _captured_before_0003(env, contact_id, HOSTILE["object"])
    assert env.push().errors == 1
    fixed = [e for e in original if e["field_id"] != 570003]
    fixed.append({"field_id": 570003, "values": [{"value": "CTO"}]})
    env.sql(
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = :id",
        id=contact_id,
        cf=json.dumps(fixed),
    )
    report = env.push()
    assert (report.updated, report.errors) == (1, 0)
    after = {
        e["field_id"]: e["values"] for e in _over_http(env, contact_id)["custom_fields_values"]
    }
    assert after == {e["field_id"]: e["values"] for e in original} | {570003: [{"value": "CTO"}]}
    assert env.row(contact_id)["sync_status"] == "synced"


def test_an_unexpected_failure_planning_one_contact_marks_only_that_one(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sync.push.updates

    bad, good = _ids(env)[:2]
    real = sync.push.updates.plan_update

    def failing(pending: Any, *args: Any) -> Any:
        if pending.contact_id == bad:
            raise KeyError("secret value")
        return real(pending, *args)

    monkeypatch.setattr(sync.push.updates, "plan_update", failing)
    for contact_id in (bad, good):
        env.sql("UPDATE contacts SET name = 'n ' || id WHERE id = :id", id=contact_id)
    report = env.push()
    assert (report.updated, report.errors) == (1, 1)
    assert _over_http(env, good)["name"] == f"n {good}"
    row = env.row(bad)
    assert row["sync_status"] == "error"
    assert row["sync_error"] == "not sent: push could not plan this change (KeyError)"


def test_a_hostile_new_contact_is_an_error_the_others_are_created(env: PushEnv) -> None:
    first = env.sql("INSERT INTO contacts (name) VALUES ('Good One') RETURNING id")[0][0]
    bad = _inserted_before_0003(env, "Bad New", 42)
    worse = _inserted_before_0003(env, "Worse New", [{"field_id": 570003, "values": 5}])
    last = env.sql("INSERT INTO contacts (name) VALUES ('Good Two') RETURNING id")[0][0]
    report = env.push()
    assert (report.created, report.errors) == (2, 2)
    names = {c.name for c in env.emulator.account.contacts.values()}
    assert {"Good One", "Good Two"} <= names
    assert not {"Bad New", "Worse New"} & names
    (post,) = env.api("POST")
    assert [e["request_id"] for e in post["body"]] == [str(first), str(last)]
    assert env.row(bad)["sync_status"] == "error"
    assert env.row(bad)["sync_error"] == f"not sent: {REASONS['number']}"
    assert env.row(worse)["sync_error"] == f"not sent: {REASONS['values 5']}"
    assert env.sql("SELECT count(*) FROM sync_changes WHERE contact_id IN (:a, :b)",
                   a=bad, b=worse)[0][0] == 2  # fmt: skip
    assert env.push().created == 0  # an error row waits for a new edit


def test_status_counts_edits_held_on_rows_in_error_apart_from_those_to_push(
    env: PushEnv,
) -> None:
    bad, good = _ids(env)[:2]
    _captured_before_0003(env, bad, HOSTILE["object"])
    env.push()
    env.sql("UPDATE contacts SET name = 'later' WHERE id = :id", id=good)
    with env.engine.connect() as conn:
        data = status.gather(conn, env.config)
    assert (data["pending_changes"], data["rejected_changes"]) == (1, 1)
    assert "1 local change(s) to push, 1 held on rows in error" in status.render(data)
