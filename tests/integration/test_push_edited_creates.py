"""A create whose answer was lost, edited in amoCRM (an automation renames new contacts within a
second) before the look-up sees it: its content no longer matches what was sent, so it looks
"not made". It must not be resent (a duplicate): a new contact of ours that nothing explains
keeps the creates waiting for a person. A create truly not made is still resent.

The emulator's clock is frozen and moves only when the client or the push sleeps
(`EmulatorTime`), so windows of seconds pass at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync import status
from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.errors import AmoWriteUnconfirmedError
from sync.pull import run_pull
from sync.push.held import RESEND_AFTER_S
from tests.integration.push_env import PushEnv, push_env

POST = "/api/v4/contacts"
LOST_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True)
EARLY_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=False)
# the audit's automation: renames the 5 newest contacts before every look-up by id (the first
# read by id, the floor before the POST, goes through)
AUTOMATION = FaultRule(
    kind="edit", path=POST, order="id", skip=1, times=None, touch=5, pick="first"
)


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=60) as env:
        env.mirror()
        env.client.reconcile_settle_s = 1.0  # the default: windows as in production
        env.emulator_time()
        env.emulator.set_controls(list_lag_s=1)
        env.emulator.clear_requests()
        yield env


def _insert_five(env: PushEnv) -> list[int]:
    rows = env.sql("INSERT INTO contacts (name) SELECT 'AUTO2-' || g FROM generate_series(1, 5) g "
                   "RETURNING id")  # fmt: skip
    return sorted(int(r[0]) for r in rows)


def _remote_auto(env: PushEnv) -> list[int]:
    return sorted(
        c.id for c in env.emulator.account.contacts.values() if c.name.startswith("AUTO2-")
    )


def _waiting(env: PushEnv) -> list[int]:
    rows = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE id < 0 ORDER BY id")
    assert {r.sync_status for r in rows} <= {"pending"}
    assert all(r.sync_error.startswith("waiting for confirmation since") for r in rows)
    return sorted(r.id for r in rows)


def _withdraw_and_pull(env: PushEnv, temps: list[int]) -> None:
    """A person withdraws the waiting rows; the next push forgets them, a pull brings amoCRM's
    contacts in: one row per contact, no duplicate."""
    env.emulator.clear_faults()
    env.sql(f"DELETE FROM contacts WHERE id IN ({', '.join(map(str, temps))})")
    env.push()
    assert len(env.api("POST")) == 1
    assert env.sql("SELECT count(*) FROM sync_state WHERE key = 'push_in_flight'")[0][0] == 0
    run_pull(env.config, env.engine, env.client)
    local = {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE 'AUTO2-%'")}
    assert local == set(_remote_auto(env))


def test_lost_creates_edited_before_the_look_up_are_not_resent(env: PushEnv) -> None:
    temps = _insert_five(env)
    env.emulator.add_fault(LOST_504)
    env.emulator.add_fault(AUTOMATION)
    with pytest.raises(AmoWriteUnconfirmedError, match="unmatched new contacts of ours"):
        env.push()
    assert len(env.api("POST")) == 1  # never resent
    assert len(_remote_auto(env)) == 5  # one contact per row, renamed by the automation
    assert _waiting(env) == temps
    with env.engine.connect() as conn:
        shown = status.gather(conn, env.config)["unconfirmed_creates"]
    assert sorted(s["id"] for s in shown) == temps
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()  # the next run's recovery sees the same: still waiting, still not resent
    assert len(env.api("POST")) == 1
    _withdraw_and_pull(env, temps)


def test_a_dead_runs_creates_edited_since_are_not_resent(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    temps = _insert_five(env)

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    env.emulator.add_fault(
        FaultRule(kind="edit", path=POST, order="id", times=None, touch=5, pick="first")
    )
    with pytest.raises(AmoWriteUnconfirmedError, match="unmatched new contacts of ours"):
        env.push()
    assert len(env.api("POST")) == 1
    assert len(_remote_auto(env)) == 5
    assert _waiting(env) == temps
    _withdraw_and_pull(env, temps)


def test_a_create_not_made_is_resent_past_a_persons_new_contact(env: PushEnv) -> None:
    """Only contacts our user may have made keep a create waiting: a person's does not."""
    (temp,) = env.sql("INSERT INTO contacts (name) VALUES ('Absent') RETURNING id")[0]
    env.emulator.add_fault(EARLY_504)  # amoCRM never applied it
    env.emulator.create_contacts([{"name": "Typed by a person"}])
    assert env.push().creates_held == 1  # not shown within the window: held, not waiting
    assert env.clock is not None
    env.clock.sleep(RESEND_AFTER_S)
    report = env.push()
    assert report.created == 1
    assert len(env.api("POST")) == 2
    names = [c.name for c in env.emulator.account.contacts.values()]
    assert names.count("Absent") == 1
    assert env.sql("SELECT count(*) FROM contacts WHERE id = :t", t=temp)[0][0] == 0


def test_creates_an_answer_left_out_and_edited_since_are_not_resent(env: PushEnv) -> None:
    """A 200 answer that leaves creates out (amoCRM applied the batch whole) is looked up the
    same way: edited since, they are not resent either."""
    temps = _insert_five(env)
    env.emulator.set_controls(write_answer="short")
    env.emulator.add_fault(AUTOMATION)
    with pytest.raises(AmoWriteUnconfirmedError, match="unmatched new contacts of ours"):
        env.push()
    assert len(env.api("POST")) == 1
    assert len(_remote_auto(env)) == 5
    waiting = _waiting(env)
    assert len(waiting) == 1  # the one the answer left out; the 4 it named were recorded
    assert set(waiting) < set(temps)
    env.emulator.set_controls(write_answer="exact")
    _withdraw_and_pull(env, waiting)
