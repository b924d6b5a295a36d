"""Exactly once when the push lock's session dies: a push whose lock backend is terminated
stops before its next write, and a second push admitted meanwhile sends each edit once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.db.runs import push_lock_key
from sync.emulator.faults import FaultRule
from sync.errors import LockLostError
from sync.push import PushReport
from tests.integration.lock_helpers import terminate_lock_holder
from tests.integration.push_env import PushEnv, push_env

LOST = "the push lock's database session ended"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=30, batch_size=5) as env:
        for contact_id in env.mirror():
            env.sql("UPDATE contacts SET name = :n WHERE id = :id", n=f"edit {contact_id}",
                    id=contact_id)  # fmt: skip
        env.emulator.clear_requests()
        yield env


def _cut_after_first_batch(
    env: PushEnv, engine: Engine, monkeypatch: pytest.MonkeyPatch, second: list[PushReport]
) -> None:
    """After the first PATCH returns: a DBA terminates the lock's backend, and a second push is
    admitted and runs to its end, before the first push goes on."""
    real: Callable[..., Any] = env.client.update_contacts

    def update(entities: Any, **kw: Any) -> Any:
        results = real(entities, **kw)
        if not second:
            second.append(PushReport())
            assert terminate_lock_holder(engine, push_lock_key("amocrm")) == 1
            second[0] = env.push(push_workers=1)
        return results

    monkeypatch.setattr(env.client, "update_contacts", update)


def test_a_push_whose_lock_session_ends_stops_and_nothing_is_sent_twice(
    env: PushEnv, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    second: list[PushReport] = []
    _cut_after_first_batch(env, engine, monkeypatch, second)
    with capture_logs() as logs, pytest.raises(LockLostError, match=LOST):
        env.push(push_workers=1)
    sent = Counter(entity["id"] for r in env.api("PATCH") for entity in r["body"])
    assert [i for i, n in sent.items() if n > 1] == []  # no entity delivered twice
    assert set(sent) == set(env.emulator.account.contacts)  # every edit arrived, once
    runs = env.sql("SELECT id, status, error FROM sync_runs ORDER BY id")
    assert [r.status for r in runs] == ["failed", "succeeded"]
    assert runs[0].error.startswith(LOST)
    assert "\n" not in runs[0].error
    assert [e["event"] for e in logs].count("push_failed") == 1
    assert not [e for e in logs if "exc_info" in e or "exception" in e]
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    assert {r.sync_status for r in env.sql("SELECT sync_status FROM contacts")} == {"synced"}


def test_the_lock_is_checked_before_each_write_and_the_run_is_never_succeeded(
    env: PushEnv, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock lost after the last write: nothing more to send, but the run says failed."""
    real: Callable[..., Any] = env.client.update_contacts
    calls: list[int] = []

    def update(entities: Any, **kw: Any) -> Any:
        calls.append(len(entities))
        results = real(entities, **kw)
        if sum(calls) == 30:  # the last batch went out; then the DBA ends the session
            terminate_lock_holder(engine, push_lock_key("amocrm"))
        return results

    monkeypatch.setattr(env.client, "update_contacts", update)
    with pytest.raises(LockLostError):
        env.push(push_workers=1)
    runs = env.sql("SELECT status, error FROM sync_runs")
    assert [r.status for r in runs] == ["failed"]
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0  # what was accepted stays


def test_a_write_is_not_retried_after_the_lock_is_lost(
    env: PushEnv, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amoCRM answers the PATCH with 429; while push backs off, a DBA ends the lock session:
    the retry never goes out (a second push may be sending the same edits by then)."""
    env.emulator.add_fault(FaultRule(kind="rate_limit", method="PATCH", path="/api/v4/contacts"))
    session = env.client.session
    real = session._sleep_before_retry

    def back_off(*args: Any) -> None:
        terminate_lock_holder(engine, push_lock_key("amocrm"))
        real(*args)

    monkeypatch.setattr(session, "_sleep_before_retry", back_off)
    with pytest.raises(LockLostError):
        env.push(push_workers=1)
    assert [r["status"] for r in env.emulator.requests() if r["method"] == "PATCH"] == [429]
    assert session.write_guard is None  # the run put the guard back as it found it


def test_a_create_the_guard_stopped_before_sending_is_not_left_in_flight(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's session dies (PostgreSQL restarted, a DBA) between recording a create batch
    as in flight and its POST: the guard stops the POST, and since nothing left, the batch is
    taken out of the record again; the next push sends it at once, exactly once."""
    with push_env(db_config, engine, contacts=3, batch_size=5) as env:
        env.sql("INSERT INTO contacts (name) VALUES ('Never Sent')")
        env.emulator.clear_requests()
        real: Callable[..., Any] = env.client.create_contacts

        def create(entities: Any, **kw: Any) -> Any:
            terminate_lock_holder(engine, push_lock_key("amocrm"))  # after mark_sending
            return real(entities, **kw)

        monkeypatch.setattr(env.client, "create_contacts", create)
        with pytest.raises(LockLostError):
            env.push()
        assert env.api("POST") == []  # the guard stopped it before it left
        assert env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'") == []
        monkeypatch.setattr(env.client, "create_contacts", real)
        report = env.push()
        assert (report.created, report.recovered) == (1, 0)
        names = [c.name for c in env.emulator.account.contacts.values()]
        assert names.count("Never Sent") == 1
