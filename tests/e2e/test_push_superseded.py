"""A PATCH whose answer was lost, and a CRM user's edit of the same field before push could look
(`superseded`), through the real `amosync push` against the emulator on 127.0.0.1 and a real
PostgreSQL. The client's part (`find_updated`) is tested on its own in
tests/integration/test_amo_writes.py; this drives the push's path: nothing resent over the
user's edit, nothing recorded, the edit left pending for the next push, which merges it with the
newer version under the policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import PushEnv, push_env

pytestmark = pytest.mark.slow

LIST = "/api/v4/contacts"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=3) as env:
        env.mirror()
        env.emulator.clear_requests()
        yield env


def _lose_the_answer_then_edit(env: PushEnv, apply_write: bool) -> None:
    """The PATCH gets a 504 (applied first or not); the list read that looks for it afterwards
    (push's own read before the PATCH is by id, for one contact: the first list read is that
    look-up) finds a CRM user renaming the contact."""
    env.emulator.add_fault(
        FaultRule(kind="error", status=504, method="PATCH", path=LIST, apply_write=apply_write)
    )
    env.emulator.add_fault(FaultRule(kind="edit", method="GET", path=LIST, skip=0))


def _events(stderr: str, name: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
    return [event for event in lines if event.get("event") == name]


@pytest.mark.parametrize("apply_write", [True, False], ids=["applied", "not-applied"])
@pytest.mark.parametrize(("policy", "winner"), [("newest_wins", "remote"), ("local_wins", "local")])
def test_a_lost_patch_answer_over_a_newer_edit_is_not_resent_and_merged_next_push(
    env: PushEnv, db_config: DatabaseConfig, tmp_path: Path, apply_write: bool, policy: str,
    winner: str,
) -> None:  # fmt: skip
    config = write_config(tmp_path / "amosync.toml", env, db_config, conflict_policy=policy)
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'ours' WHERE id = :id", id=contact_id)
    _lose_the_answer_then_edit(env, apply_write)
    first = run(config, "push")
    theirs = env.remote(contact_id)["name"]
    assert "✎" in theirs, (first.stdout, first.stderr)  # the user's edit stands
    assert len(env.api("PATCH")) == 1, first.stderr  # not resent over it
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("ours", "pending"), first.stderr
    assert first.returncode == 0, first.stderr
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 1
    # the person is told the edit waits, and the log does not call the user's edit ours
    assert "0 updated" in first.stdout
    assert "1 contact left pending for the next push" in first.stdout
    (reconciled,) = _events(first.stderr, "amo_write_reconciled")
    counts = {k: reconciled[k] for k in ("applied", "superseded", "resent")}
    assert counts == {"applied": 0, "superseded": 1, "resent": 0}

    env.emulator.clock.advance(2)
    second = run(config, "push")
    assert second.returncode == 0, second.stderr
    expected = theirs if winner == "remote" else "ours"
    assert env.remote(contact_id)["name"] == expected
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"], row["sync_error"]) == (expected, "synced", None)
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    conflicts = env.sql("SELECT field, winner FROM sync_conflicts")
    assert [tuple(c) for c in conflicts] == [("name", winner)]
