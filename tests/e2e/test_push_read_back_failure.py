"""`amosync push` whose read-back fails after amoCRM accepted and push recorded its writes.

The read-back (`sync.push.readback`) only makes the tables fresh sooner: a 4xx there, or a
PostgreSQL error storing what it read, used to fail the push (exit 1, the run `failed`, an
`error`-level `push_failed`) although every write had gone through and been recorded. Now the
push ends as it would have, with one warning saying what failed and that the next pull brings
the rows up to date. A refused token keeps its meaning: the push stops with one line, its writes
still recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.e2e.test_push_cli import run, write_config
from tests.integration.push_env import PushEnv, push_env

ONE = "/api/v4/contacts/*"  # a push of at most 5 contacts reads each by id
LIST = "/api/v4/contacts"  # a larger one reads by list (`fresh.BY_ID_MAX`)


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        yield env


def _edit(env: PushEnv, count: int) -> list[int]:
    ids = sorted(env.emulator.account.contacts)[:count]
    for contact_id in ids:
        env.sql("UPDATE contacts SET name = 'pushed ' || id WHERE id = :id", id=contact_id)
    return ids


def _fail_the_second_read(env: PushEnv, path: str, **fault: Any) -> None:
    """The first GET is the read the merge needs; the second is the read-back's."""
    env.emulator.add_fault(FaultRule(method="GET", path=path, skip=1, times=None, **fault))


def _events(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def _recorded(env: PushEnv, ids: list[int]) -> None:
    """amoCRM has every edit, and the rows say so: nothing left to send."""
    for contact_id in ids:
        assert env.remote(contact_id)["name"] == f"pushed {contact_id}"
        row = env.row(contact_id)
        assert (row["name"], row["sync_status"], row["sync_error"]) == (
            f"pushed {contact_id}", "synced", None,
        )  # fmt: skip
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def _last_run(env: PushEnv) -> tuple[str, int, str | None]:
    ((status, pushed, error),) = env.sql(
        "SELECT status, pushed, error FROM sync_runs WHERE kind = 'push' ORDER BY id DESC LIMIT 1"
    )
    return status, pushed, error


@pytest.mark.parametrize(
    ("count", "path", "fault"),
    [
        (1, ONE, {"kind": "error", "status": 400}),
        (6, LIST, {"kind": "error", "status": 400}),
        (1, ONE, {"kind": "error", "status": 422, "body": "html"}),
    ],
    ids=["by-id-400", "list-400", "by-id-422-html"],
)
def test_a_refused_read_back_does_not_fail_the_recorded_push(
    tmp_path: Path, env: PushEnv, db_config: DatabaseConfig, count: int, path: str,
    fault: dict[str, Any],
) -> None:  # fmt: skip
    ids = _edit(env, count)
    _fail_the_second_read(env, path, **fault)
    done = run(write_config(tmp_path / "amosync.toml", env, db_config), "push")
    assert done.returncode == 0, done.stderr
    _recorded(env, ids)
    assert _last_run(env) == ("succeeded", count, None)
    events = _events(done.stderr)
    (warning,) = [e for e in events if e["event"] == "push_read_back_failed"]
    assert warning["level"] == "warning"
    assert warning["contacts"] == count
    assert f"-> {fault['status']}" in warning["error"]
    assert "next pull" in warning["reason"]
    assert not [e for e in events if e["level"] == "error"]
    (finished,) = [e for e in events if e["event"] == "push_finished"]
    assert (finished["updated"], finished["read_back"], finished["read_back_left"]) == (
        count, 0, count,
    )  # fmt: skip


def test_a_store_error_in_the_read_back_does_not_fail_the_recorded_push(
    tmp_path: Path, env: PushEnv, db_config: DatabaseConfig
) -> None:
    """A real PostgreSQL error storing what was read back (a check the stored version breaks:
    only a pull's or a read-back's row carries `account_id`)."""
    ids = _edit(env, 2)
    env.sql("ALTER TABLE contacts ADD CONSTRAINT no_account CHECK (account_id IS NULL) NOT VALID")
    done = run(write_config(tmp_path / "amosync.toml", env, db_config), "push")
    assert done.returncode == 0, done.stderr
    _recorded(env, ids)
    assert _last_run(env) == ("succeeded", 2, None)
    events = _events(done.stderr)
    (warning,) = [e for e in events if e["event"] == "push_read_back_failed"]
    assert warning["contacts"] == 2
    assert warning["error"].startswith("PostgreSQL: ")
    assert "no_account" in warning["error"]
    assert not [e for e in events if e["level"] == "error"]


def test_a_refused_token_in_the_read_back_stops_the_push_writes_kept(
    tmp_path: Path, env: PushEnv, db_config: DatabaseConfig
) -> None:
    ids = _edit(env, 1)
    _fail_the_second_read(env, ONE, kind="unauthorized")
    done = run(write_config(tmp_path / "amosync.toml", env, db_config), "push")
    assert done.returncode != 0
    (last,) = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert "401" in last, done.stderr
    _recorded(env, ids)
    status, pushed, error = _last_run(env)
    assert (status, pushed) == ("failed", 1)
    assert error is not None
    assert "401" in error
