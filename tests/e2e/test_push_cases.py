"""Issue 6's cases through the real command line: `amosync pull` / `amosync push` as
subprocesses against the emulator on 127.0.0.1 (faults switched on) and a real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import PushEnv, push_env


def _ok(config: Path, *args: str) -> str:
    done = run(config, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _patches(env: PushEnv) -> list[dict[str, object]]:
    return env.api("PATCH")


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("newest_wins", "remote"), ("remote_wins", "remote"), ("local_wins", "local"),
     ("manual", None)],
)  # fmt: skip
def test_disjoint_edits_merge_and_same_field_edits_follow_the_policy(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine, policy: str, winner: str | None
) -> None:
    with push_env(db_config, engine, contacts=4) as env:
        config = write_config(tmp_path / "a.toml", env, db_config, conflict_policy=policy)
        _ok(config, "pull", "--full")
        disjoint, same = sorted(env.emulator.account.contacts)[:2]
        users = sorted(env.emulator.account.users)
        user = next(u for u in users if u != env.remote(disjoint)["responsible_user_id"])
        env.sql("UPDATE contacts SET name = 'local' WHERE id IN (:a, :b)", a=disjoint, b=same)
        env.emulator.clock.advance(30)  # amoCRM's edits are the newer ones
        env.emulator.update_contacts(
            [{"id": disjoint, "responsible_user_id": user}, {"id": same, "name": "remote"}]
        )
        out = _ok(config, "push")
        assert (env.remote(disjoint)["name"], env.remote(disjoint)["responsible_user_id"]) == (
            "local",
            user,
        )
        expected = {"local": "local", "remote": "remote", None: "remote"}[winner]
        assert env.remote(same)["name"] == expected
        row = env.row(same)
        assert row["name"] == ("local" if winner is None else expected)
        assert row["sync_status"] == ("conflict" if winner is None else "synced")
        (conflict,) = env.sql("SELECT contact_id, field, winner FROM sync_conflicts")
        assert tuple(conflict) == (same, "name", winner)
        said = "1 conflict waiting for a person" if winner is None else "1 new conflict settled"
        assert said in out


def test_pull_before_push_keeps_the_edit_and_the_echo_sends_nothing(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=4) as env:
        config = write_config(tmp_path / "a.toml", env, db_config)
        _ok(config, "pull", "--full")
        contact_id = sorted(env.emulator.account.contacts)[0]
        env.sql("UPDATE contacts SET last_name = 'kept' WHERE id = :id", id=contact_id)
        env.emulator.clock.advance(2)
        env.emulator.touch_contacts(ids=[contact_id])  # amoCRM bumps the version, not the field
        _ok(config, "pull")
        assert env.row(contact_id)["last_name"] == "kept"
        _ok(config, "push")
        assert env.remote(contact_id)["last_name"] == "kept"
        env.emulator.clock.advance(2)
        env.emulator.clear_requests()
        _ok(config, "pull")  # our own PATCH comes back
        out = _ok(config, "push")
        assert _patches(env) == []
        assert "0 updated" in out
        assert env.sql("SELECT count(*) FROM sync_conflicts")[0][0] == 0
        assert env.row(contact_id)["sync_status"] == "synced"


def test_a_batch_with_two_invalid_entities_gets_the_other_48_through(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=50) as env:
        config = write_config(tmp_path / "a.toml", env, db_config)
        config.write_text(config.read_text().replace("batch_size = 10", "batch_size = 50"))
        _ok(config, "pull", "--full")
        ids = sorted(env.emulator.account.contacts)
        env.sql("UPDATE contacts SET first_name = 'ok'")
        env.sql("UPDATE contacts SET responsible_user_id = 1 WHERE id IN (:a, :b)",
                a=ids[3], b=ids[40])  # fmt: skip
        out = _ok(config, "push")
        assert "48 updated" in out
        assert "2 rejected" in out
        assert sum(env.remote(i)["first_name"] == "ok" for i in ids) == 48
        bad = env.sql("SELECT id FROM contacts WHERE sync_status = 'error' ORDER BY id")
        assert [r.id for r in bad] == [ids[3], ids[40]]


def test_creates_with_lost_responses_make_no_duplicates(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=3) as env:
        config = write_config(tmp_path / "a.toml", env, db_config)
        for n in range(25):
            env.sql("INSERT INTO contacts (name) VALUES (:n)", n=f"fresh {n % 20}")
        env.emulator.add_fault(
            FaultRule(kind="reset", method="POST", path="/api/v4/contacts", apply_write=True,
                      times=2)
        )  # fmt: skip
        out = _ok(config, "push")
        assert "25 created" in out
        names = Counter(c.name for c in env.emulator.account.contacts.values())
        assert {k: v for k, v in names.items() if k.startswith("fresh")} == Counter(
            f"fresh {n % 20}" for n in range(25)
        )
        assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0
