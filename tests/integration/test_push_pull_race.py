"""A pull that stores a newer amoCRM version while push's PATCH is in flight (docs/push.md,
"A pull during a push").

Push claims a contact's edit, PATCHes it (amoCRM now holds it at T1), and records the answer in
a second transaction. A pull that lists the contact in between sees its outbox rows still there
and keeps the edited column's local value, while it stores amoCRM's newer version T2 (a CRM
user's edit after ours). Push then consumes the rows: the column held the local value, marked
`synced` at a version whose amoCRM value it is not, and only a pull listing T2 again (within
`sync.overlap_s` of the cursor) put it right; past that, never. The push now sees that a pull
stored a version newer than its own write and reads the contact by id, storing amoCRM's values
of the columns it settled as a pull would; an edit captured meanwhile stays held.

The interleaving is made exact: the emulator applies the PATCH and holds its answer until the
test's pull has committed, on a connection of its own."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.clock import to_unix
from sync.config import DatabaseConfig
from sync.emulator import Emulator
from sync.pull import run_pull
from sync.push import PushReport
from tests.integration.amo_emulator import client_for
from tests.integration.push_env import PushEnv, push_env

WAIT_S = 30


class HeldAnswer:
    """The emulator's answer to the first `method` request, held once it is made (a PATCH
    applied, a read's version taken)."""

    def __init__(self, emulator: Emulator, method: str) -> None:
        self.applied = threading.Event()
        self.release = threading.Event()
        self._handle: Callable[[Any], Any] = emulator.handle
        self._method = method

    def __call__(self, request: Any) -> Any:
        response = self._handle(request)
        if request.method == self._method and not self.applied.is_set():
            self.applied.set()
            self.release.wait(WAIT_S)
        return response


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Iterator[PushEnv]:
    with push_env(db_config, engine, contacts=3) as env:
        run_pull(env.config, env.engine, env.client, full=True)
        yield env


def _pull(env: PushEnv, **sync: Any) -> None:
    """An incremental pull on its own client (and so its own connections)."""
    config = replace(env.config, sync=replace(env.config.sync, **sync))
    with client_for(env.emulator, env.base_url) as client:
        run_pull(config, env.engine, client, full=False)


def _push_while_a_pull_stores(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch, during: Callable[[], None], held: str = "PATCH"
) -> PushReport:
    """Push in a thread; once amoCRM made its answer to push's first `held` request (applied
    its PATCH), `during` runs, then the answer goes."""
    held_answer = HeldAnswer(env.emulator, held)
    monkeypatch.setattr(env.emulator, "handle", held_answer)
    done: list[PushReport] = []
    pushing = threading.Thread(target=lambda: done.append(env.push()))
    pushing.start()
    try:
        assert held_answer.applied.wait(WAIT_S), f"no {held} came"
        during()
    finally:
        held_answer.release.set()
        pushing.join(WAIT_S)
    assert done, "the push did not finish"
    return done[0]


def test_a_column_whose_push_completed_ends_with_amocrms_newer_value(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'ours' WHERE id = :id", id=contact_id)

    def theirs_then_pull() -> None:
        assert env.remote(contact_id)["name"] == "ours"  # applied at T1, answer not back yet
        env.emulator.clock.advance(2)
        env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])  # T2 > T1
        _pull(env)
        row = env.row(contact_id)  # the edit is still claimed: the pull keeps its value
        assert (row["name"], row["sync_status"]) == ("ours", "pending")
        assert to_unix(row["updated_at"]) == env.remote(contact_id)["updated_at"]

    report = _push_while_a_pull_stores(env, monkeypatch, theirs_then_pull)
    assert (report.updated, report.errors) == (1, 0)
    remote = env.remote(contact_id)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"], row["sync_error"]) == ("theirs", "synced", None)
    assert to_unix(row["updated_at"]) == remote["updated_at"]  # T2, not set back to T1
    assert env.sql("SELECT count(*) FROM sync_changes")[0][0] == 0
    # a pull that no longer lists T2 (the overlap has passed) leaves it so
    env.emulator.clock.advance(30)
    _pull(env, overlap_s=0)
    assert env.row(contact_id)["name"] == "theirs" == env.remote(contact_id)["name"]


def test_an_edit_captured_during_the_push_survives_and_goes_next(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'ours' WHERE id = :id", id=contact_id)

    def edit_theirs_then_pull() -> None:
        env.sql("UPDATE contacts SET name = 'again' WHERE id = :id", id=contact_id)
        env.emulator.clock.advance(2)
        env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
        _pull(env)

    report = _push_while_a_pull_stores(env, monkeypatch, edit_theirs_then_pull)
    assert (report.updated, report.errors) == (1, 0)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("again", "pending")  # still to send
    assert env.sql("SELECT kind FROM sync_changes")[0][0] == "update"
    assert env.push(conflict_policy="local_wins").updated == 1
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("again", "synced")
    assert env.remote(contact_id)["name"] == "again"


def _position(value: str) -> list[dict[str, Any]]:
    return [{"field_code": "POSITION", "values": [{"value": value}]}]


def test_custom_fields_and_their_value_rows_end_with_amocrms_newer_values(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql(
        "UPDATE contacts SET custom_fields_values = CAST(:v AS jsonb) WHERE id = :id",
        id=contact_id,
        v=json.dumps(_position("ours")),
    )

    def theirs_then_pull() -> None:
        env.emulator.clock.advance(2)
        update = {"id": contact_id, "custom_fields_values": _position("theirs")}
        env.emulator.update_contacts([update])
        _pull(env)
        assert _value_rows(env, contact_id) == ["ours"]  # held: the rows follow the local one

    _push_while_a_pull_stores(env, monkeypatch, theirs_then_pull)
    remote = env.remote(contact_id)
    row = env.row(contact_id)
    assert row["custom_fields_values"] == remote["custom_fields_values"]
    assert [v["value"] for e in remote["custom_fields_values"] for v in e["values"]] == ["theirs"]
    assert _value_rows(env, contact_id) == ["theirs"]
    assert row["sync_status"] == "synced"


def _value_rows(env: PushEnv, contact_id: int) -> list[str]:
    rows = env.sql(
        "SELECT value FROM contact_custom_field_values WHERE contact_id = :id ORDER BY position",
        id=contact_id,
    )
    return [r[0] for r in rows]


def test_a_column_settled_without_a_patch_ends_with_amocrms_newer_value(
    env: PushEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amoCRM already had the edit (nothing to send): push takes amoCRM's values as it read
    them, at that version; a pull storing a newer one meanwhile is overtaken the same way."""
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.emulator.clock.advance(2)
    env.emulator.update_contacts([{"id": contact_id, "name": "same"}])
    env.sql("UPDATE contacts SET name = 'same' WHERE id = :id", id=contact_id)

    def theirs_then_pull() -> None:  # push's read of amoCRM's version is made, not answered
        env.emulator.clock.advance(2)
        env.emulator.update_contacts([{"id": contact_id, "name": "theirs"}])
        _pull(env)
        assert env.row(contact_id)["name"] == "same"

    report = _push_while_a_pull_stores(env, monkeypatch, theirs_then_pull, held="GET")
    assert (report.updated, report.unchanged, report.errors) == (0, 1, 0)
    row = env.row(contact_id)
    assert (row["name"], row["sync_status"]) == ("theirs", "synced")
    assert to_unix(row["updated_at"]) == env.remote(contact_id)["updated_at"]
