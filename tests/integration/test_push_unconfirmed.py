"""A create whose answer was lost while amoCRM's lists lag: never sent twice on a guess. One
found within the confirmation window (10 x `reconcile_settle_s`, 10 s here) is linked in the
run; one not found by then is held, and sent again only once its send is `RESEND_AFTER_S` old.

The emulator's clock is frozen and moves only when the client or the push sleeps
(`EmulatorTime`): its lists show nothing newer than `list_lag_s` until they have slept that
long, however slow the machine, and no test waits in real time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.amo import client as amo_client
from sync.amo.created import ASKS
from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.push.held import RESEND_AFTER_S
from tests.integration.push_env import PushEnv, push_env
from tests.unit.amo_helpers import EmulatorTime

POST = "/api/v4/contacts"
LOST_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True)
EARLY_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=False)
WINDOW_S = 10.0  # 10 x the settle below


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        env.client.reconcile_settle_s = 1.0  # the default: windows as in production
        env.emulator_time()
        env.emulator.set_controls(list_lag_s=3)
        env.emulator.clear_requests()
        yield env


def _time(env: PushEnv) -> EmulatorTime:
    assert isinstance(env.clock, EmulatorTime)
    return env.clock


def _insert(env: PushEnv, name: str) -> int:
    return int(env.sql("INSERT INTO contacts (name) VALUES (:n) RETURNING id", n=name)[0][0])


def _remote(env: PushEnv, prefix: str) -> Counter[str]:
    return Counter(
        c.name for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)
    )


def _in_flight(env: PushEnv) -> dict[str, Any]:
    rows = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
    return dict(rows[0][0]) if rows else {}


def _settled(env: PushEnv, prefix: str) -> None:
    """Every row named `prefix…` carries the id of its one contact in amoCRM, synced."""
    local = {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE :p", p=prefix + "%")}
    remote = {c.id for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)}
    assert local == remote
    rows = env.sql(
        "SELECT sync_status, sync_error FROM contacts WHERE name LIKE :p", p=prefix + "%"
    )
    assert {(r.sync_status, r.sync_error) for r in rows} == {("synced", None)}
    assert _in_flight(env) == {}
    assert (
        env.sql("SELECT status FROM sync_runs WHERE kind = 'push' ORDER BY id DESC LIMIT 1")[0][0]
        == "succeeded"
    )


def test_a_lost_post_under_a_3_s_lag_is_found_by_a_later_look_not_resent(env: PushEnv) -> None:
    """The audit's repro: a 504 after amoCRM applied the POST, lists 3 s behind."""
    _insert(env, "Lagged A")
    _insert(env, "Lagged B")
    env.emulator.add_fault(LOST_504)
    report = env.push()
    assert report.created == 2
    assert len(env.api("POST")) == 1  # found by a later look, not resent
    assert _remote(env, "Lagged") == {"Lagged A": 1, "Lagged B": 1}
    _settled(env, "Lagged")


def test_a_504_before_the_write_applied_is_held_then_resent_past_the_bound(env: PushEnv) -> None:
    """Invisible for the whole window, it may still be a list lagging longer: held in flight
    (`pending`, `sync_error` says until when), the run ends; the next push past the bound
    resends it (`RESEND_AFTER_S` after its send)."""
    temp = _insert(env, "Never Applied")
    env.emulator.add_fault(EARLY_504)
    report = env.push()
    assert (report.created, report.creates_held) == (0, 1)
    assert [s for s in _time(env).sleeps if s >= 1] == [1.0, 2.0, 3.0, 4.0]  # looks at 0-10 s
    assert len(env.api("POST")) == 1
    row = env.row(temp)
    assert row["sync_status"] == "pending"
    assert "answer was lost" in row["sync_error"]
    assert "sent again only if still not shown at" in row["sync_error"]
    _time(env).sleep(RESEND_AFTER_S - 30)
    assert env.push().creates_held == 1  # looked for again: not shown, not resent yet
    assert len(env.api("POST")) == 1
    _time(env).sleep(30)
    assert env.push().created == 1
    posts = env.api("POST")
    assert len(posts) == 2
    assert posts[1]["clock"] - posts[0]["clock"] >= RESEND_AFTER_S
    assert _remote(env, "Never") == {"Never Applied": 1}
    _settled(env, "Never")


def test_a_crash_before_the_answer_was_stored_is_found_after_the_window(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(env, "Killed A")
    _insert(env, "Killed B")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    slept = sum(_time(env).sleeps)
    report = env.push()  # restarted at once: the lists do not show them yet, a later look does
    assert report.recovered == 2
    assert sum(_time(env).sleeps) - slept >= WINDOW_S - 1  # waited for the window, not longer
    assert len(env.api("POST")) == 1
    assert _remote(env, "Killed") == {"Killed A": 1, "Killed B": 1}
    _settled(env, "Killed")


def test_a_dead_runs_create_never_applied_is_resent_after_the_bound(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(env, "Unsent")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed after the create was recorded in flight, before it went

    monkeypatch.setattr(amo_client.AmoClient, "create_contacts", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    assert list(_in_flight(env)["creates"]["items"])
    report = env.push()  # not shown after the window either: a list may lag it yet (held)
    assert (report.created, report.creates_held) == (0, 1)
    assert sum(_time(env).sleeps) >= WINDOW_S - 1
    _time(env).sleep(RESEND_AFTER_S)
    report = env.push()
    assert report.created == 1
    assert len(env.api("POST")) == 1
    assert _remote(env, "Unsent") == {"Unsent": 1}
    _settled(env, "Unsent")


def test_rejections_named_by_batch_index_hit_only_the_bad_rows(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The official SDK's request_id is the batch index (the vendor's example shows "0"): a
    rejected row gets amoCRM's path and detail, the rest of its batch still goes through."""
    with push_env(db_config, engine, contacts=20, rejected_request_id="index") as env:
        env.mirror()
        ids = sorted(env.emulator.account.contacts)[:6]
        for contact_id in ids:
            env.sql("UPDATE contacts SET name = 'idx ' || id WHERE id = :id", id=contact_id)
        env.sql("UPDATE contacts SET responsible_user_id = 424242 WHERE id = :id", id=ids[4])
        good = _insert(env, "Index Good")
        bad = int(env.sql("INSERT INTO contacts (name, responsible_user_id) "
                          "VALUES ('Index Bad', 77) RETURNING id")[0][0])  # fmt: skip
        env.emulator.clear_requests()
        report = env.push()
        assert (report.updated, report.created, report.errors) == (5, 1, 2)
        for contact_id in ids:
            assert (env.remote(contact_id)["name"] == f"idx {contact_id}") is (contact_id != ids[4])
        for row_id in (ids[4], bad):
            row = env.row(row_id)
            assert row["sync_status"] == "error"
            assert "responsible_user_id" in row["sync_error"]
            assert "Request validation failed" not in row["sync_error"]
        assert _remote(env, "Index") == {"Index Good": 1}
        assert env.sql("SELECT count(*) FROM contacts WHERE id = :id", id=good)[0][0] == 0


def test_an_edit_made_before_a_dead_runs_create_is_found_is_pushed_after_it(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = _insert(env, "Edited While Waiting")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    env.sql("UPDATE contacts SET last_name = 'Later' WHERE id = :id", id=temp)
    report = env.push()
    assert (report.recovered, report.updated) == (1, 1)
    assert len(env.api("POST")) == 1
    (row,) = env.sql("SELECT id, last_name, sync_status FROM contacts WHERE name = :n",
                     n="Edited While Waiting")  # fmt: skip
    assert (row.id > 0, row.last_name, row.sync_status) == (True, "Later", "synced")
    assert env.remote(row.id)["last_name"] == "Later"
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_a_dead_runs_creates_are_not_resent_on_a_spurious_204(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's repro: the next push starts after the window, so one look decides, and page
    1 of that look answers 204 once (amocrm-api.md §2). Believed, both were sent again."""
    _insert(env, "Old A")
    _insert(env, "Old B")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    _time(env).sleep(WINDOW_S + 5)
    env.emulator.add_fault(FaultRule(kind="empty_page", method="GET", path=POST, order="id"))
    report = env.push()
    assert report.recovered == 2
    assert len(env.api("POST")) == 1
    assert _remote(env, "Old") == {"Old A": 1, "Old B": 1}
    _settled(env, "Old")


def test_a_204_on_the_first_look_leaves_old_and_young_creates_to_the_look_after_the_window(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One of a dead run's creates is older than the window, one is not; the first look keeps
    answering 204: it decides nothing, and the look after the window covers both."""
    old = _insert(env, "Mixed Old")
    _insert(env, "Mixed Young")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    env.sql("UPDATE sync_state SET value = jsonb_set(value, ARRAY['creates', 'sent', :t], "
            "to_jsonb('2020-01-01T00:00:00+00:00'::text)) WHERE key = 'push_in_flight'",
            t=str(old))  # fmt: skip
    empty = FaultRule(kind="empty_page", method="GET", path=POST, order="id", times=ASKS)
    env.emulator.add_fault(empty)
    report = env.push()
    assert report.recovered == 2
    assert len(env.api("POST")) == 1
    assert _remote(env, "Mixed") == {"Mixed Old": 1, "Mixed Young": 1}
    _settled(env, "Mixed")
