"""A create amoCRM's answer left out (or lost) on a server that ignores `order[id]` (the
emulator's `id_order_ignored`): confirmed by a `filter[created_at]` read, resent once that read
proves it absent, and, when nothing can tell (filters ignored too, or amoCRM's clock unknown),
left waiting until a person withdraws it with `DELETE FROM contacts`. Never a duplicate.

The emulator's clock is frozen and moves only when the client or the push sleeps
(`EmulatorTime`), so windows of seconds pass at once.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy.engine import Engine

from sync import status
from sync.amo import client as amo_client
from sync.config import DatabaseConfig
from sync.db import inflight
from sync.emulator import FaultRule
from sync.errors import AmoWriteUnconfirmedError, AmoWriteUnknownError
from sync.pull import run_pull
from sync.push.held import RESEND_AFTER_S
from tests.integration.push_env import PushEnv, push_env
from tests.unit.amo_helpers import EmulatorTime

POST = "/api/v4/contacts"
LOST_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=True)
EARLY_504 = FaultRule(kind="error", status=504, method="POST", path=POST, apply_write=False)
WINDOW_S = 10.0  # 10 x the settle below
CANNOT = "could not be searched"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=8) as env:
        env.mirror()
        env.client.reconcile_settle_s = 1.0  # the default: windows as in production
        env.emulator_time()
        env.emulator.set_controls(id_order_ignored=True, list_lag_s=3)
        env.emulator.clear_requests()
        yield env


def _insert(env: PushEnv, name: str) -> int:
    return int(env.sql("INSERT INTO contacts (name) VALUES (:n) RETURNING id", n=name)[0][0])


def _remote(env: PushEnv, prefix: str) -> Counter[str]:
    return Counter(
        c.name for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)
    )


def _local(env: PushEnv, prefix: str) -> list[Any]:
    return env.sql("SELECT id, name, sync_status, sync_error FROM contacts WHERE name LIKE :p "
                   "ORDER BY id", p=prefix + "%")  # fmt: skip


def _in_flight(env: PushEnv) -> dict[str, Any]:
    rows = env.sql("SELECT value FROM sync_state WHERE key = 'push_in_flight'")
    return dict(rows[0][0]) if rows else {}


def _created_at_reads(env: PushEnv) -> list[dict[str, Any]]:
    return [r for r in env.api("GET") if "filter[created_at][from]" in unquote(r["query"])]


def _settled(env: PushEnv, prefix: str) -> None:
    """Every row named `prefix…` carries the id of its one contact in amoCRM, synced."""
    local = {r.id for r in _local(env, prefix)}
    remote = {c.id for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)}
    assert local == remote
    assert {(r.sync_status, r.sync_error) for r in _local(env, prefix)} == {("synced", None)}
    assert _in_flight(env) == {}


def _unsearchable(env: PushEnv) -> None:
    """amoCRM ignores `order[id]` and every filter: nothing can confirm a create."""
    env.emulator.set_controls(api_filter_enabled=False)


def _pull(env: PushEnv) -> None:
    run_pull(env.config, env.engine, env.client, full=True)


# --- confirmed by a filtered read ------------------------------------------------------------


def test_a_create_the_answer_left_out_is_confirmed_by_a_created_at_read(env: PushEnv) -> None:
    env.emulator.set_controls(write_answer="short")
    for n in range(3):
        _insert(env, f"Short {n}")
    report = env.push()
    assert (report.created, report.unconfirmed) == (3, 0)
    assert len(env.api("POST")) == 1
    assert _created_at_reads(env)  # order[id] was ignored: looked for by created_at
    assert _remote(env, "Short") == {"Short 0": 1, "Short 1": 1, "Short 2": 1}
    _settled(env, "Short")


def test_a_lost_answer_is_confirmed_by_a_created_at_read_not_resent(env: PushEnv) -> None:
    _insert(env, "Lost A")
    _insert(env, "Lost B")
    env.emulator.add_fault(LOST_504)
    report = env.push()
    assert report.created == 2
    assert len(env.api("POST")) == 1  # found under the 3 s lag by a later look
    assert _remote(env, "Lost") == {"Lost A": 1, "Lost B": 1}
    _settled(env, "Lost")


def test_a_create_a_trusted_read_shows_absent_is_resent_once_past_the_bound(
    env: PushEnv,
) -> None:
    # a person's contact made around the send (one our own user made that matches nothing would
    # hold the create back: it may be ours, edited since)
    env.emulator.create_contacts([{"name": "Bystander"}])
    env.emulator.clear_requests()
    _insert(env, "Absent")
    env.emulator.add_fault(EARLY_504)  # amoCRM never applied it
    report = env.push()  # invisible the whole window: held, since a list may lag longer
    assert (report.created, report.creates_held) == (0, 1)
    assert len(env.api("POST")) == 1
    assert isinstance(env.clock, EmulatorTime)
    env.clock.sleep(RESEND_AFTER_S)
    assert env.push().created == 1
    posts = env.api("POST")
    assert len(posts) == 2
    assert posts[1]["clock"] - posts[0]["clock"] >= RESEND_AFTER_S
    assert _remote(env, "Absent") == {"Absent": 1}
    _settled(env, "Absent")


def test_a_created_at_read_that_only_answers_204_is_not_taken_for_nothing_made(
    env: PushEnv,
) -> None:
    """Nothing else was made around the send: every look answers 204, which a spurious 204
    (amocrm-api.md §2) would too. Never resent on a 204: the create waits for a person."""
    temp = _insert(env, "Quiet")
    env.emulator.add_fault(EARLY_504)  # amoCRM never applied it
    with pytest.raises(AmoWriteUnknownError):
        env.push()  # in-run: the last look answered 204 too
    with pytest.raises(AmoWriteUnconfirmedError, match=CANNOT):
        env.push()  # the dead-run recovery's look as well: it waits
    assert len(env.api("POST")) == 1
    assert env.row(temp)["sync_error"].startswith("waiting for confirmation")
    env.emulator.create_contacts([{"name": "Bystander"}])  # a look-up has something to show
    env.clock.sleep(RESEND_AFTER_S)  # past the lists' lag, however long
    assert env.push().created == 1  # a real answer without it: the wait ends, sent once more
    assert len(env.api("POST")) == 2  # the resend (the bystander was typed in, not POSTed)
    assert _remote(env, "Quiet") == {"Quiet": 1}
    _settled(env, "Quiet")


def test_a_dead_runs_create_is_confirmed_by_a_created_at_read(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(env, "Killed")

    def die(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt  # killed between amoCRM's answer and our commit

    monkeypatch.setattr(inflight, "record_created", die)
    with pytest.raises(KeyboardInterrupt):
        env.push()
    monkeypatch.undo()
    report = env.push()
    assert report.recovered == 1
    assert len(env.api("POST")) == 1
    assert _remote(env, "Killed") == {"Killed": 1}
    _settled(env, "Killed")


# --- nothing can tell: it waits, and a person withdraws it ----------------------------------


def test_an_ignored_created_at_filter_is_not_trusted_and_other_edits_still_go_out(
    env: PushEnv,
) -> None:
    _unsearchable(env)
    env.emulator.set_controls(write_answer="short", list_lag_s=0)
    temps = [_insert(env, f"Blind {n}") for n in range(3)]
    with pytest.raises(
        AmoWriteUnconfirmedError, match=f"DELETE FROM contacts WHERE id IN \\({temps[0]}\\)"
    ):
        env.push()
    (waiting,) = env.sql("SELECT id, sync_status, sync_error FROM contacts WHERE id < 0")
    assert (waiting.id, waiting.sync_status) == (temps[0], "pending")
    assert waiting.sync_error.startswith("waiting for confirmation since")
    assert "DELETE this row to withdraw it" in waiting.sync_error
    other = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'edited meanwhile' WHERE id = :id", id=other)
    with pytest.raises(AmoWriteUnconfirmedError, match=CANNOT):
        env.push()  # the dead-run recovery cannot tell either: waits, the rest goes out
    assert env.remote(other)["name"] == "edited meanwhile"
    assert len(env.api("POST")) == 1
    assert _remote(env, "Blind") == {"Blind 0": 1, "Blind 1": 1, "Blind 2": 1}
    with env.engine.connect() as conn:
        data = status.gather(conn, env.config)
    (shown,) = data["unconfirmed_creates"]
    assert (shown["id"], shown["withdraw"]) == (
        temps[0],
        f"DELETE FROM contacts WHERE id = {temps[0]}",
    )
    assert f"`DELETE FROM contacts WHERE id = {temps[0]}` withdraws it" in status.render(data)


def test_withdrawing_a_create_amocrm_made_brings_it_in_once_by_pull(env: PushEnv) -> None:
    _unsearchable(env)
    env.emulator.set_controls(write_answer="short", list_lag_s=0)
    temp = _insert(env, "Withdrawn Made")
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()
    env.sql("DELETE FROM contacts WHERE id = :id", id=temp)  # the person's withdrawal
    report = env.push()
    assert (report.created, report.unconfirmed) == (0, 0)
    assert _in_flight(env) == {}
    assert len(env.api("POST")) == 1
    _pull(env)
    (row,) = _local(env, "Withdrawn")
    assert (row.id > 0, row.sync_status) == (True, "synced")
    assert _remote(env, "Withdrawn") == {"Withdrawn Made": 1}
    _settled(env, "Withdrawn")


def test_withdrawing_a_create_amocrm_never_made_sends_nothing(env: PushEnv) -> None:
    _unsearchable(env)
    temp = _insert(env, "Withdrawn Never")
    env.emulator.add_fault(EARLY_504)
    with pytest.raises(AmoWriteUnknownError):
        env.push()  # a lost answer that cannot be looked up ends the run
    with pytest.raises(AmoWriteUnconfirmedError, match=CANNOT):
        env.push()  # and the next one waits instead of resending
    assert env.row(temp)["sync_error"].startswith("waiting for confirmation")
    env.sql("DELETE FROM contacts WHERE id = :id", id=temp)
    report = env.push()
    assert report.created == 0
    assert _in_flight(env) == {}
    assert len(env.api("POST")) == 1
    _pull(env)
    assert _remote(env, "Withdrawn") == Counter()
    assert _local(env, "Withdrawn") == []


def test_a_created_at_read_is_not_trusted_when_amocrms_clock_is_far_behind(
    env: PushEnv,
) -> None:
    """Our clock 2 min ahead: the range would start after the contact was made, so a read
    that misses it proves nothing; the create waits instead of being sent twice."""
    clock = env.clock
    assert isinstance(clock, EmulatorTime)
    clock.moment += timedelta(seconds=120)
    env.emulator.set_controls(write_answer="short", list_lag_s=0)
    _insert(env, "Skewed")
    with pytest.raises(AmoWriteUnconfirmedError):
        env.push()
    assert len(env.api("POST")) == 1
    assert _remote(env, "Skewed") == {"Skewed": 1}


def test_a_row_withdrawn_while_its_create_is_on_the_wire_keeps_the_pulled_copy(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer comes back for a row a person deleted meanwhile, after a pull stored amoCRM's
    contact under its real id: that copy stays (it would be gone until a full resync)."""
    temp = _insert(env, "Raced")
    create = amo_client.AmoClient.create_contacts

    def create_then_race(client: Any, *args: Any, **kw: Any) -> Any:
        results = create(client, *args, **kw)
        env.mirror([r.id for r in results])  # a pull stored it meanwhile
        env.sql("DELETE FROM contacts WHERE id = :id", id=temp)  # and the person withdrew it
        return results

    monkeypatch.setattr(amo_client.AmoClient, "create_contacts", create_then_race)
    assert env.push().created == 1
    (row,) = _local(env, "Raced")
    assert row.id == next(iter(c.id for c in env.emulator.account.contacts.values()
                               if c.name == "Raced"))  # fmt: skip
    assert _in_flight(env) == {}
