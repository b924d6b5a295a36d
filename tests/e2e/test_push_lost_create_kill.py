"""`amosync push` whose create answer is lost (a 504) while amoCRM's lists lag 15 s, longer than
the 10 s confirmation window, killed with SIGKILL while it looks for the creates, then run again
as a person would: no contact is created twice and none is lost.

The emulator's clock is frozen (its lists show nothing newer than 15 s before it until the test
moves it), so the lag holds however slow the machine; the push's own clock is the real one.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from sync.push.held import RESEND_AFTER_S
from tests.e2e.test_push_cli import clean_env, command, kill_when, run, write_config
from tests.integration.push_env import PushEnv, backdate_creates, push_env

pytestmark = pytest.mark.slow

LAG_S = 15.0
NAMES = ["Kill A", "Kill B", "Kill C"]
POST = "/api/v4/contacts"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        env.emulator.clock.freeze()
        env.emulator.set_controls(list_lag_s=LAG_S)
        env.emulator.clear_requests()
        yield env


def _copies(env: PushEnv) -> Counter[str]:
    return Counter(c.name for c in env.emulator.account.contacts.values() if c.name in NAMES)


def _posts(env: PushEnv) -> int:
    return len(env.api("POST"))


@pytest.mark.parametrize("applied", [True, False], ids=["504-after-apply", "504-before-apply"])
def test_a_push_killed_while_it_looks_for_a_lost_create_makes_it_once(
    env: PushEnv, db_config: DatabaseConfig, tmp_path: Path, applied: bool
) -> None:
    config = write_config(tmp_path / "amosync.toml", env, db_config)
    env.emulator.add_fault(
        FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=applied)
    )
    for name in NAMES:
        env.sql("INSERT INTO contacts (name) VALUES (:n)", n=name)
    with subprocess.Popen(command(config, "push"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=clean_env()) as proc:  # fmt: skip
        killed = kill_when(env, proc, "POST", POST, 1)  # inside the 10 s of looks
        _out, err = proc.communicate()
    assert killed, err
    assert _posts(env) == 1
    done = run(config, "push")  # recovery: the list lags, nothing is shown yet
    assert done.returncode == 0, done.stderr
    assert "3 new contacts whose answer was lost not shown by amoCRM yet" in done.stdout
    assert _posts(env) == 1
    held = env.sql("SELECT sync_status, sync_error FROM contacts WHERE id < 0")
    assert [r.sync_status for r in held] == ["pending"] * 3
    if applied:
        env.emulator.clock.advance(LAG_S + 1)  # the list shows them now
    else:
        backdate_creates(env, RESEND_AFTER_S)  # never made: past the bound it is sent again
    done = run(config, "push")
    assert done.returncode == 0, done.stderr
    assert _posts(env) == (1 if applied else 2)
    assert _copies(env) == dict.fromkeys(NAMES, 1)
    rows = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE name LIKE 'Kill %'")
    remote = {c.id for c in env.emulator.account.contacts.values() if c.name in NAMES}
    assert {r.id for r in rows} == remote
    assert {(r.sync_status, r.sync_error) for r in rows} == {("synced", None)}
    assert env.sql("SELECT count(*) FROM sync_state WHERE key = 'push_in_flight'")[0][0] == 0
