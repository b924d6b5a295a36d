"""A row in `error` holds its rejected local value so a person can fix it, but not past a
change of the contact in amoCRM (integrator audit s09): the next `amosync pull` puts it back to
`pending`, and `amosync push` merges the held edit against amoCRM's new version under the
configured policy. A field amoCRM changed too is a conflict (newest_wins: amoCRM's later edit
wins and the row takes its value; manual: a conflict waits); a field only the local side
changed is sent again, and a second rejection makes the row `error` once more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import PushEnv, push_env

NUMBER = 570_008  # a numeric field: amoCRM rejects "abc"
REJECTED = "amoCRM rejected the change: custom_fields_values."


def numbers(cf: list[dict[str, object]] | None) -> list[object] | None:
    for entry in cf or ():
        if entry.get("field_id") == NUMBER:
            return entry.get("values")  # type: ignore[return-value]
    return None


def set_number(env: PushEnv, contact_id: int, value: str) -> None:
    current = env.row(contact_id)["custom_fields_values"] or []
    kept = [e for e in current if e.get("field_id") != NUMBER]
    env.sql(
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = :id",
        id=contact_id,
        cf=json.dumps([*kept, {"field_id": NUMBER, "values": [{"value": value}]}]),
    )


@pytest.mark.parametrize("policy", ["newest_wins", "manual"])
def test_a_rejected_value_meets_amocrms_later_change_of_the_contact(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine, policy: str
) -> None:
    with push_env(db_config, engine, contacts=4) as env:
        config = write_config(tmp_path / "amosync.toml", env, db_config, conflict_policy=policy)
        assert run(config, "pull").returncode == 0
        same, other = sorted(env.emulator.account.contacts)[:2]
        for contact_id in (same, other):
            set_number(env, contact_id, "abc")
        pushed = run(config, "push")
        assert pushed.returncode == 0, pushed.stderr
        assert {env.row(c)["sync_status"] for c in (same, other)} == {"error"}
        nine = [{"field_id": NUMBER, "values": [{"value": "999"}]}]
        env.emulator.update_contacts(  # CRM users, now: after the rejection
            [{"id": same, "custom_fields_values": nine},
             {"id": other, "first_name": "Renamed in amoCRM"}]
        )  # fmt: skip

        pulled = run(config, "pull")
        assert pulled.returncode == 0, pulled.stderr
        for contact_id in (same, other):
            row = env.row(contact_id)
            assert (row["sync_status"], row["sync_error"]) == ("pending", None)
            assert numbers(row["custom_fields_values"]) == [{"value": "abc"}]  # still held
        assert env.row(other)["first_name"] == "Renamed in amoCRM"

        pushed = run(config, "push")
        assert pushed.returncode == 0, pushed.stderr
        row, conflicts = env.row(same), env.sql(
            "SELECT field, local_value, remote_value, winner, resolved_at IS NOT NULL "
            "FROM sync_conflicts WHERE contact_id = :id", id=same,
        )  # fmt: skip
        assert len(conflicts) == 1
        field, local, remote, winner, resolved = conflicts[0]
        assert (local, remote) == ([{"value": "abc"}], [{"value": "999"}])
        assert field == f"cf:{NUMBER}"
        if policy == "newest_wins":
            assert (row["sync_status"], winner, resolved) == ("synced", "remote", True)
            assert numbers(row["custom_fields_values"]) == [{"value": "999"}]
            assert env.sql(
                "SELECT value FROM contact_custom_field_values "
                "WHERE contact_id = :id AND field_id = :f", id=same, f=NUMBER,
            ) == [("999",)]  # fmt: skip
        else:
            assert (row["sync_status"], winner, resolved) == ("conflict", None, False)
        assert numbers(env.remote(same)["custom_fields_values"]) == [{"value": "999"}]
        row = env.row(other)
        assert row["sync_status"] == "error"
        assert row["sync_error"].startswith(REJECTED)
        assert "numeric" in row["sync_error"]
        assert numbers(row["custom_fields_values"]) == [{"value": "abc"}]
        assert numbers(env.remote(other)["custom_fields_values"]) != [{"value": "abc"}]
