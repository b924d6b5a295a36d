"""A create whose answer was lost while amoCRM's lists lag: never sent twice on a guess.

The emulator's clock is frozen, so its lists show nothing newer than `list_lag_s` until the test
moves it on: every look-up below happens "at once" after the write, however slow the machine.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.errors import AmoWriteUnconfirmedError
from sync.push.posts import CONFIRM_WINDOW_S
from tests.integration.push_env import PushEnv, push_env

POST = "/api/v4/contacts"
LOST_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True)


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        env.emulator.clock.freeze()
        env.emulator.set_controls(list_lag_s=3)
        env.emulator.clear_requests()
        yield env


def _insert(env: PushEnv, name: str) -> int:
    return int(env.sql("INSERT INTO contacts (name) VALUES (:n) RETURNING id", n=name)[0][0])


def _remote(env: PushEnv, prefix: str) -> Counter[str]:
    return Counter(
        c.name for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)
    )


def _in_flight(env: PushEnv) -> dict[str, Any]:
    rows = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
    return dict(rows[0][0]) if rows else {}


def _age_in_flight(env: PushEnv, seconds: float) -> None:
    """As if the creates in flight had been sent `seconds` earlier."""
    state = _in_flight(env)
    entry = state["creates"]
    for temp, stamp in entry["sent"].items():
        entry["sent"][temp] = (
            datetime.fromisoformat(stamp) - timedelta(seconds=seconds)
        ).isoformat()
    env.sql(
        "UPDATE sync_state SET value = CAST(:v AS jsonb) WHERE key = 'push_in_flight'",
        v=json.dumps(state),
    )


def test_lost_post_under_lag_is_not_resent_and_is_found_once_lists_catch_up(env: PushEnv) -> None:
    temps = [_insert(env, "Lagged A"), _insert(env, "Lagged B")]
    env.emulator.add_fault(LOST_504)
    with pytest.raises(AmoWriteUnconfirmedError) as failed:
        env.push()
    assert "not confirmed them yet" in str(failed.value)
    assert len(env.api("POST")) == 1  # not resent in the same run
    assert _remote(env, "Lagged") == {"Lagged A": 1, "Lagged B": 1}
    rows = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE id < 0 ORDER BY id")
    assert sorted(r.id for r in rows) == sorted(temps)
    assert {r.sync_status for r in rows} == {"pending"}
    assert all("waiting for confirmation" in r.sync_error for r in rows)
    assert sorted(_in_flight(env)["creates"]["items"]) == sorted(str(t) for t in temps)
    (run,) = env.sql("SELECT status, error FROM sync_runs WHERE kind = 'push'")
    assert run.status == "failed"

    with pytest.raises(AmoWriteUnconfirmedError):  # lists still lag: still waiting, not resent
        env.push()
    assert len(env.api("POST")) == 1
    assert _remote(env, "Lagged") == {"Lagged A": 1, "Lagged B": 1}

    env.emulator.clock.advance(5)  # the lists catch up
    report = env.push()
    assert (report.recovered, report.created) == (2, 2)
    assert len(env.api("POST")) == 1
    assert _remote(env, "Lagged") == {"Lagged A": 1, "Lagged B": 1}
    local = {r[0] for r in env.sql("SELECT id FROM contacts WHERE name LIKE 'Lagged %'")}
    remote = {c.id for c in env.emulator.account.contacts.values() if c.name.startswith("Lagged")}
    assert local == remote
    statuses = env.sql("SELECT sync_status, sync_error FROM contacts WHERE name LIKE 'Lagged %'")
    assert {(r.sync_status, r.sync_error) for r in statuses} == {("synced", None)}
    assert _in_flight(env) == {}


def test_other_new_contacts_still_go_out_while_some_wait(env: PushEnv) -> None:
    _insert(env, "Wait One")
    env.emulator.add_fault(LOST_504)
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()
    _insert(env, "Later One")
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()  # the waiting one is not sent again, the new one is created
    posts = env.api("POST")
    assert [[e["name"] for e in p["body"]] for p in posts] == [["Wait One"], ["Later One"]]
    assert sorted(_in_flight(env)["creates"]["items"]) == [
        str(r[0]) for r in env.sql("SELECT id FROM contacts WHERE name = 'Wait One'")
    ]
    env.emulator.clock.advance(5)
    env.push()
    assert _remote(env, "Wait") == {"Wait One": 1}
    assert _remote(env, "Later") == {"Later One": 1}
    assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0


def test_a_create_not_seen_within_the_window_is_sent_again(env: PushEnv) -> None:
    _insert(env, "Never Applied")
    env.emulator.add_fault(
        FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=False)
    )
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()
    env.emulator.clock.advance(5)
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()  # lists caught up and it is not there, but the window has not passed
    assert len(env.api("POST")) == 1
    _age_in_flight(env, CONFIRM_WINDOW_S + 1)
    report = env.push()
    assert report.created == 1
    assert len(env.api("POST")) == 2
    assert _remote(env, "Never") == {"Never Applied": 1}
    assert _in_flight(env) == {}


def test_a_crash_before_the_answer_was_stored_is_not_resent_under_lag(
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
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()  # restarted at once: the lists do not show them yet
    assert len(env.api("POST")) == 1
    env.emulator.clock.advance(5)
    report = env.push()
    assert report.recovered == 2
    assert len(env.api("POST")) == 1
    assert _remote(env, "Killed") == {"Killed A": 1, "Killed B": 1}
    assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0


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


def test_an_edit_made_while_a_create_waits_is_pushed_after_it(env: PushEnv) -> None:
    temp = _insert(env, "Edited While Waiting")
    env.emulator.add_fault(LOST_504)
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()
    env.sql("UPDATE contacts SET last_name = 'Later' WHERE id = :id", id=temp)
    env.emulator.clock.advance(5)
    report = env.push()
    assert (report.recovered, report.updated) == (1, 1)
    assert len(env.api("POST")) == 1
    (row,) = env.sql("SELECT id, last_name, sync_status FROM contacts WHERE name = :n",
                     n="Edited While Waiting")  # fmt: skip
    assert (row.id > 0, row.last_name, row.sync_status) == (True, "Later", "synced")
    assert env.remote(row.id)["last_name"] == "Later"
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
