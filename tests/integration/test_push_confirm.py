"""A create amoCRM's answer left out (or lost) on a server that ignores `order[id]` (the
emulator's `id_order_ignored`): confirmed by a `filter[created_at]` read, resent once that read
proves it absent. Never a duplicate.

The emulator's clock is frozen and moves only when the client or the push sleeps
(`EmulatorTime`), so windows of seconds pass at once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.integration.push_env import PushEnv, push_env

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


def test_a_create_a_trusted_read_shows_absent_is_resent_once(env: PushEnv) -> None:
    _insert(env, "Absent")
    env.emulator.add_fault(EARLY_504)  # amoCRM never applied it
    report = env.push()
    assert report.created == 1
    posts = env.api("POST")
    assert len(posts) == 2
    assert posts[1]["clock"] - posts[0]["clock"] >= WINDOW_S  # invisible the whole window first
    assert _remote(env, "Absent") == {"Absent": 1}
    _settled(env, "Absent")
