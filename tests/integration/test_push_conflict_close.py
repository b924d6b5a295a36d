"""A conflict on record ends once both sides hold the same value, against the emulator over HTTP
and a real PostgreSQL: a decided one whose winner amoCRM already shows is recorded applied, a
waiting one whose sides come to agree (either side moving) is closed as agreed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.pull import run_pull
from tests.integration.push_env import PushEnv, push_env


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=6) as env:
        run_pull(env.config, env.engine, env.client, full=True)
        env.emulator.clear_requests()
        yield env


def _waiting_conflict(env: PushEnv) -> tuple[int, int]:
    """A `manual` conflict on `name` (local 'local name', amoCRM 'remote name'), waiting."""
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'local name' WHERE id = :id", id=contact_id)
    env.emulator.clock.advance(5)
    env.emulator.update_contacts([{"id": contact_id, "name": "remote name"}])
    assert env.push(conflict_policy="manual").waiting == 1
    (conflict_id,) = [r[0] for r in env.sql("SELECT id FROM sync_conflicts")]
    assert env.row(contact_id)["sync_status"] == "conflict"
    return contact_id, conflict_id


def _conflict(env: PushEnv, conflict_id: int) -> tuple[Any, bool]:
    rows = env.sql(
        "SELECT winner, resolved_at IS NOT NULL FROM sync_conflicts WHERE id = :id", id=conflict_id
    )
    return tuple(rows[0])  # type: ignore[return-value]


def test_decided_conflict_amocrm_already_shows_is_recorded_applied(env: PushEnv) -> None:
    # a CRM user typed the local value (or a run killed after amoCRM applied its PATCH)
    contact_id, conflict_id = _waiting_conflict(env)
    env.sql("UPDATE sync_conflicts SET winner = 'local' WHERE id = :id", id=conflict_id)
    env.emulator.clock.advance(5)
    env.emulator.update_contacts([{"id": contact_id, "name": "local name"}])
    env.emulator.clear_requests()
    report = env.push(conflict_policy="manual")
    assert (report.decided, report.waiting, report.updated) == (1, 0, 0)
    assert env.api("PATCH") == []
    assert _conflict(env, conflict_id) == ("local", True)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("local name", "synced")
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_waiting_conflict_closes_when_the_local_row_takes_amocrms_value(env: PushEnv) -> None:
    contact_id, conflict_id = _waiting_conflict(env)
    env.sql("UPDATE contacts SET name = 'remote name' WHERE id = :id", id=contact_id)
    report = env.push(conflict_policy="manual")
    assert (report.agreed, report.waiting, report.decided) == (1, 0, 0)
    assert "1 conflict closed: both sides agree" in report.describe()
    assert _conflict(env, conflict_id) == (None, True)  # closed, nobody chose a winner
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("remote name", "synced")
    assert env.api("PATCH") == []


def test_waiting_conflict_closes_when_amocrm_takes_the_local_value(env: PushEnv) -> None:
    contact_id, conflict_id = _waiting_conflict(env)
    env.emulator.clock.advance(5)
    env.emulator.update_contacts([{"id": contact_id, "name": "local name"}])
    run_pull(env.config, env.engine, env.client)  # a newer amoCRM version: merged again
    report = env.push(conflict_policy="manual")
    assert report.agreed == 1
    assert _conflict(env, conflict_id) == (None, True)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("local name", "synced")
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_waiting_conflict_whose_remote_moved_on_keeps_waiting_with_the_new_value(
    env: PushEnv,
) -> None:
    contact_id, conflict_id = _waiting_conflict(env)
    env.emulator.clock.advance(5)
    env.emulator.update_contacts([{"id": contact_id, "name": "third name"}])
    run_pull(env.config, env.engine, env.client)
    report = env.push(conflict_policy="manual")
    assert (report.waiting, report.agreed) == (1, 0)
    assert _conflict(env, conflict_id) == (None, False)
    remote = env.sql("SELECT remote_value FROM sync_conflicts WHERE id = :id", id=conflict_id)
    assert remote[0][0] == "third name"
    assert env.row(contact_id)["sync_status"] == "conflict"
    env.emulator.clear_requests()
    assert env.push(conflict_policy="manual").conflicts == 0  # nothing new: not claimed again
    assert env.api("GET") == []
