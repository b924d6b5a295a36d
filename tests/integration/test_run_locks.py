"""Pull's run lock and resync requests when the lock's session dies: a run and its request
always agree, and a request a run closed `done` never turns `failed` afterwards."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import DatabaseConfig
from sync.db import status as queries
from sync.db.locks import LockWait
from sync.db.runs import RunStore, add_request, pull_lock, pull_lock_key, push_lock
from sync.errors import LockLostError, SyncError
from sync.pull import serve_request
from sync.pull.sink import Sink
from tests.integration.amo_emulator import client_for
from tests.integration.lock_helpers import terminate_lock_holder
from tests.integration.pull_helpers import emulated, make_config

LOST = "the pull lock's database session ended"


def _rows(engine: Engine) -> tuple[Any, Any]:
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT id, status, error FROM amocrm.sync_runs")).one()
        request = conn.execute(
            sa.text("SELECT status, error, run_id FROM amocrm.sync_requests")
        ).one()
    return run, request


def test_a_resync_whose_lock_session_ends_fails_its_run_and_its_request_alike(
    db_config: DatabaseConfig, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Sink.store
    cut: list[int] = []
    once = threading.Lock()  # the sink stores pages on several threads

    def store(self: Sink, *args: Any, **kw: Any) -> None:
        with once:
            if not cut:  # a DBA ends the pull lock's session while the resync stores its pages
                cut.append(terminate_lock_holder(engine, pull_lock_key("amocrm")))
        real(self, *args, **kw)

    monkeypatch.setattr(Sink, "store", store)
    with emulated(contacts=30) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        with engine.begin() as conn:
            add_request(conn)
        with (
            capture_logs() as logs,
            client_for(emulator, url) as client,
            pytest.raises(LockLostError, match=LOST),
        ):
            serve_request(config, engine, client)
    assert cut == [1]
    run, request = _rows(engine)
    assert (run.status, request.status) == ("failed", "failed")
    assert run.error.startswith(LOST)
    assert request.error == run.error
    assert request.run_id == run.id
    assert [e["event"] for e in logs].count("pull_failed") == 1
    assert not [e for e in logs if "exc_info" in e or "exception" in e]


def test_a_request_closed_done_stays_done_whatever_fails_afterwards(engine: Engine) -> None:
    runs = RunStore("amocrm")
    with engine.begin() as conn:
        request_id = add_request(conn)
        assert runs.claim_request(conn) == request_id
        run_id = runs.start_run(conn, "full")
        runs.finish_run(conn, run_id, "succeeded", {})
        runs.finish_request(conn, request_id, run_id, None)
    with engine.begin() as conn:  # e.g. releasing the lock failed after the run succeeded
        runs.finish_request(conn, request_id, None, "PostgreSQL at db failed: terminated")
    with engine.connect() as conn:
        row = queries.fetch_request(conn, request_id)
    assert row is not None
    assert (row["status"], row["error"], row["run_id"]) == ("done", None, run_id)


def test_a_run_marked_failed_by_its_successor_never_turns_succeeded(engine: Engine) -> None:
    runs = RunStore("amocrm")
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "pull")
        assert runs.abandon_stale_runs(conn, ("pull",)) == 1  # the next run took the lock
        runs.finish_run(conn, run_id, "succeeded", {"upserted": 5})
        status = conn.scalar(sa.text("SELECT status FROM amocrm.sync_runs WHERE id = :i"),
                             {"i": run_id})  # fmt: skip
    assert status == "failed"


def test_a_command_gives_up_when_another_session_holds_the_run_lock_past_its_wait(
    engine: Engine,
) -> None:
    """The CLI's bounded wait (`LockWait`, 60 s for push and 120 s for pull there; 1 s here):
    past it, push fails with its one line and pull yields no lock, having noted the wait once."""
    notes: list[str] = []
    wait = LockWait(1.0, lambda: notes.append("waiting"), every=0.2)
    with push_lock(engine, "amocrm") as held, pull_lock(engine, "amocrm") as held_pull:
        assert held is not None
        assert held_pull is not None
        failed: list[BaseException] = []

        def push_beside() -> None:
            try:
                with push_lock(engine, "amocrm", wait):
                    pass
            except SyncError as exc:
                failed.append(exc)

        thread = threading.Thread(target=push_beside)
        started = time.monotonic()
        thread.start()
        thread.join(10)
        assert time.monotonic() - started >= 0.9
        assert [str(e) for e in failed] == [
            "another push is running on this database schema; try again later"
        ]
        with pull_lock(engine, "amocrm", wait) as lock:
            assert lock is None
    assert notes == ["waiting", "waiting"]
