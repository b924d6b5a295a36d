"""Push under amoCRM's lag (issue 11, item 4): lists serve a contact's previous version for a
while after a write, GET by id does not. A version older than our own last write, or a value
this outbox chain itself sent, is never taken as a remote change; a real one still is."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from tests.integration.push_env import PushEnv, push_env

NAME = "UPDATE contacts SET name = :v WHERE id = :id"


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=6) as env:
        env.mirror()
        # frozen: every read below happens "at once" after the write, however slow the machine
        env.emulator.clock.freeze()
        env.emulator.set_controls(list_lag_s=2)
        env.emulator.clear_requests()
        yield env


def _first(env: PushEnv) -> int:
    return sorted(env.emulator.account.contacts)[0]


def _conflicts(env: PushEnv) -> list[Any]:
    return env.sql(
        "SELECT field, base_value, local_value, remote_value, winner FROM sync_conflicts"
    )


def _listed_name(env: PushEnv, contact_id: int) -> str:
    (page,) = env.client.iter_contacts(filters={"id": [contact_id]})
    return str(page.items[0]["name"])


@pytest.mark.parametrize("policy", ["manual", "newest_wins"])
def test_a_push_right_after_our_own_patch_is_no_conflict(env: PushEnv, policy: str) -> None:
    contact_id = _first(env)
    original = env.remote(contact_id)["name"]
    env.sql(NAME, v="first", id=contact_id)
    env.push(conflict_policy=policy)
    env.sql(NAME, v="second", id=contact_id)
    assert _listed_name(env, contact_id) == original  # the list still lags our PATCH
    report = env.push(conflict_policy=policy)
    assert _conflicts(env) == []
    assert (report.conflicts, report.updated, report.deferred) == (0, 1, 0)
    assert env.remote(contact_id)["name"] == "second"
    assert env.row(contact_id)["sync_status"] == "synced"
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0


def test_our_own_write_in_flight_from_a_dead_run_is_no_conflict(env: PushEnv) -> None:
    """Outbox chain A→B→C; a leader killed after its PATCH of B was accepted (not recorded)."""
    contact_id = _first(env)
    env.sql(NAME, v="B", id=contact_id)
    env.sql(NAME, v="C", id=contact_id)
    env.emulator.update_contacts([{"id": contact_id, "name": "B"}])  # the dead run's PATCH
    env.emulator.clock.advance(5)  # the list shows B too: this is not about lag
    report = env.push(conflict_policy="manual")
    assert _conflicts(env) == []
    assert (report.conflicts, report.updated) == (0, 1)
    (patch,) = env.api("PATCH")
    assert patch["body"] == [{"id": contact_id, "name": "C", "request_id": str(contact_id)}]
    assert env.remote(contact_id)["name"] == "C"
    assert env.row(contact_id)["sync_status"] == "synced"


def test_a_chain_set_back_to_its_base_undoes_our_own_write_in_flight(env: PushEnv) -> None:
    """Chain A→B→A; the dead run's PATCH of B was accepted: amoCRM must end at A again."""
    contact_id = _first(env)
    original = env.remote(contact_id)["name"]
    env.sql(NAME, v="B", id=contact_id)
    env.sql(NAME, v=original, id=contact_id)
    env.emulator.update_contacts([{"id": contact_id, "name": "B"}])  # the dead run's PATCH
    env.emulator.clock.advance(5)
    report = env.push(conflict_policy="manual")
    assert (report.conflicts, report.updated) == (0, 1)
    assert env.remote(contact_id)["name"] == original
    assert env.row(contact_id)["sync_status"] == "synced"


def test_a_real_remote_change_during_the_lag_is_still_a_conflict(env: PushEnv) -> None:
    contact_id = _first(env)
    env.sql(NAME, v="ours", id=contact_id)
    env.push(conflict_policy="manual")
    env.emulator.clock.advance(1)
    env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
    env.sql(NAME, v="ours again", id=contact_id)
    report = env.push(conflict_policy="manual")
    assert report.held == 1
    (conflict,) = _conflicts(env)
    assert tuple(conflict) == ("name", "ours", "ours again", "theirs", None)
    assert env.remote(contact_id)["name"] == "theirs"
    assert env.row(contact_id)["sync_status"] == "conflict"


def test_a_contact_that_cannot_be_read_fresh_waits_for_the_next_push(env: PushEnv) -> None:
    contact_id = _first(env)
    env.sql(NAME, v="first", id=contact_id)
    env.push(conflict_policy="manual")
    env.sql(NAME, v="second", id=contact_id)
    env.emulator.add_fault(
        FaultRule(kind="error", method="GET", path="/api/v4/contacts/*", status=503, times=None)
    )
    with capture_logs() as logs:
        report = env.push(conflict_policy="manual")
    (stale,) = [e for e in logs if e["event"] == "push_remote_stale"]
    assert stale["contact_id"] == contact_id
    assert (report.deferred, report.updated, report.conflicts) == (1, 0, 0)
    assert env.row(contact_id)["sync_status"] == "pending"
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 1
    env.emulator.clear_faults()
    report = env.push(conflict_policy="manual")
    assert (report.updated, report.conflicts) == (1, 0)
    assert env.remote(contact_id)["name"] == "second"
    assert _conflicts(env) == []


# --- a remote edit hidden by the lists' lag (audit: lag_race.py) -----------------------------


def _reads(env: PushEnv) -> tuple[int, int]:
    """GETs of contacts since the log was cleared: (list reads, reads by id)."""
    gets = [r for r in env.emulator.requests() if r["method"] == "GET"]
    listed = sum(r["path"] == "/api/v4/contacts" for r in gets)
    return listed, sum(re.fullmatch(r"/api/v4/contacts/\d+", r["path"]) is not None for r in gets)


def test_a_remote_edit_the_list_still_hides_is_a_conflict_not_overwritten(env: PushEnv) -> None:
    """A local edit, then a CRM user's edit of the same field within the lists' lag: a list
    read still shows the base, and the PATCH used to overwrite the newer remote value with no
    conflict on record. A push of a few contacts reads each by id, which does not lag."""
    contact_id = _first(env)
    env.emulator.clock.advance(5)  # the mirrored version is older than the lag
    env.sql(NAME, v="ours", id=contact_id)
    env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
    assert _listed_name(env, contact_id) != "theirs"  # the list does not show it yet
    env.emulator.clear_requests()
    report = env.push(conflict_policy="manual")
    assert env.api("PATCH") == []
    assert env.remote(contact_id)["name"] == "theirs"
    (conflict,) = _conflicts(env)
    assert (conflict.field, conflict.local_value, conflict.remote_value) == (
        "name",
        "ours",
        "theirs",
    )
    assert (report.conflicts, report.held, report.updated) == (1, 1, 0)
    assert env.row(contact_id)["sync_status"] == "conflict"
    assert _reads(env) == (0, 1)  # one request, as the list read was


def test_a_few_contacts_are_read_by_id_and_a_larger_push_by_one_list(env: PushEnv) -> None:
    ids = sorted(env.emulator.account.contacts)
    env.emulator.clock.advance(5)
    for n, contact_id in enumerate(ids[:5]):
        env.sql(NAME, v=f"few {n}", id=contact_id)
    assert env.push(conflict_policy="manual").updated == 5
    assert _reads(env) == (0, 10)  # each read by id before the PATCH, and again after it
    env.emulator.clock.advance(5)
    env.emulator.clear_requests()
    for n, contact_id in enumerate(ids[:6]):
        env.sql(NAME, v=f"many {n}", id=contact_id)
    assert env.push(conflict_policy="manual").updated == 6
    assert _reads(env) == (2, 0)  # a batched read for 6, a read-back: a bulk edit keeps its cost
    assert [env.remote(i)["name"] for i in ids[:6]] == [f"many {n}" for n in range(6)]
