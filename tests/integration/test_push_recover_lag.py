"""A push killed after amoCRM applied its POST, lists lagging writes longer than the 10 s
confirmation window (the audit's `dup_kill.py`, lag 15 s): the next push's look-up shows none of
the creates. That is not believed until the send is `RESEND_AFTER_S` old: the creates are held
`pending` (sync_error says why), looked for again by each push, and found once the list shows
them; one never made is sent again only after the bound. Never a duplicate.

The emulator's clock is frozen and moves only when the client or the push sleeps, or the test
says (`EmulatorTime`): lags and windows of seconds pass at once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.push.held import RESEND_AFTER_S
from tests.integration.push_env import PushEnv, push_env

LAG_S = 15.0  # longer than the confirmation window (10 x the settle below)
NAMES = [f"Dup {n}" for n in range(5)]


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        env.client.reconcile_settle_s = 1.0  # the default: a 10 s window, as in production
        env.emulator_time()
        env.emulator.set_controls(list_lag_s=LAG_S)
        env.emulator.clear_requests()
        yield env


def _insert_all(env: PushEnv) -> list[int]:
    return [int(env.sql("INSERT INTO contacts (name) VALUES (:n) RETURNING id", n=n)[0][0])
            for n in NAMES]  # fmt: skip


def _copies(env: PushEnv) -> Counter[str]:
    return Counter(c.name for c in env.emulator.account.contacts.values() if c.name in NAMES)


def _in_flight(env: PushEnv) -> dict[str, Any]:
    rows = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
    return dict(rows[0][0]) if rows else {}


def _killed(env: PushEnv, monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # kill -9: nothing after this point runs

    monkeypatch.setattr(target, name, die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()


def _held(env: PushEnv, temps: list[int]) -> None:
    rows = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE id < 0 ORDER BY id")
    assert sorted(r.id for r in rows) == sorted(temps)
    assert {r.sync_status for r in rows} == {"pending"}
    for row in rows:
        assert row.sync_error.startswith("sent at ")
        assert "do not show it yet" in row.sync_error
        assert "sent again only if still not shown at" in row.sync_error
    assert sorted(int(t) for t in _in_flight(env)["creates"]["items"]) == sorted(temps)


def _settled(env: PushEnv) -> None:
    assert _copies(env) == dict.fromkeys(NAMES, 1)
    rows = env.sql("SELECT id, name, sync_status, sync_error FROM contacts WHERE name LIKE 'Dup %'")
    assert {r.id for r in rows} == {
        c.id for c in env.emulator.account.contacts.values() if c.name in NAMES
    }
    assert {(r.sync_status, r.sync_error) for r in rows} == {("synced", None)}
    assert _in_flight(env) == {}


def test_creates_amocrm_applied_are_held_while_the_list_lags_then_found_not_resent(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    temps = _insert_all(env)
    _killed(env, monkeypatch, inflight, "record_created")  # after amoCRM's answer came back
    assert len(env.api("POST")) == 1
    with capture_logs() as logs:
        report = env.push()  # looks at once and after the 10 s window: the list still lags
    assert len(env.api("POST")) == 1  # was 2: every create sent twice
    assert (report.recovered, report.created, report.creates_held) == (0, 0, 5)
    assert "5 new contacts whose answer was lost not shown by amoCRM yet" in report.describe()
    (line,) = [e for e in logs if e["event"] == "push_creates_recovered"]
    assert (line["sent"], line["found"], line["resent"], line["held"]) == (5, 0, 0, 5)
    _held(env, temps)
    env.clock.sleep(LAG_S - 10 + 1)  # the list shows them now
    report = env.push()
    assert (report.recovered, report.creates_held) == (5, 0)
    assert len(env.api("POST")) == 1
    _settled(env)


def test_creates_amocrm_never_made_are_sent_again_only_after_the_bound(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    temps = _insert_all(env)
    _killed(env, monkeypatch, env.client, "create_contacts")  # recorded in flight, never sent
    assert env.api("POST") == []
    assert env.push().creates_held == 5
    env.clock.sleep(RESEND_AFTER_S - 30)
    assert env.push().creates_held == 5  # each push looks again; still within the bound
    _held(env, temps)
    assert env.api("POST") == []
    env.clock.sleep(30)
    report = env.push()
    assert (report.created, report.creates_held) == (5, 0)
    assert len(env.api("POST")) == 1
    _settled(env)


def test_a_lost_answer_inside_a_live_run_is_held_then_found_not_resent(env: PushEnv) -> None:
    """No kill: a 504 after amoCRM applied the POST, lists 15 s behind. The run's own looks
    over the 10 s window do not show the creates; they were sent again then (every create
    twice). Now they are held like a dead run's, the run goes on (an update in the same push
    goes out) and ends, and the next push that sees them links them."""
    temps = _insert_all(env)
    edited = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'edited meanwhile' WHERE id = :id", id=edited)
    env.emulator.add_fault(
        FaultRule(kind="error", status=504, method="POST", path="/api/v4/contacts",
                  apply_write=True)
    )  # fmt: skip
    with capture_logs() as logs:
        report = env.push()
    assert len(env.api("POST")) == 1  # was 2: every create sent twice
    assert _copies(env) == dict.fromkeys(NAMES, 1)
    assert (report.updated, report.created, report.creates_held) == (1, 0, 5)
    assert env.remote(edited)["name"] == "edited meanwhile"
    (line,) = [e for e in logs if e["event"] == "push_creates_held"]
    assert line["count"] == 5
    _held(env, temps)
    rows = env.sql("SELECT sync_error FROM contacts WHERE id < 0")
    assert all("answer was lost" in r.sync_error for r in rows)
    assert env.sql("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")[0][0] == "succeeded"
    env.clock.sleep(LAG_S - 10 + 1)  # the list shows them now
    report = env.push()
    assert (report.recovered, report.creates_held) == (5, 0)
    assert len(env.api("POST")) == 1
    _settled(env)
