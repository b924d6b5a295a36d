"""What a `kill -9` leaves behind, and commands that meet another process's run, through the real
`amosync`: a requested full resync whose run was killed is served again, `status` calls the
killed run interrupted, and `pull`/`push` wait (bounded) for a run another process holds."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.runs import pull_lock, push_lock
from tests.e2e.cli import AMOSYNC, amosync, clean_env
from tests.e2e.test_pull_kill import _env, _kill_when, _scalar
from tests.integration.pull_helpers import emulated


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)).all())


def _status(env: dict[str, str]) -> dict[str, Any]:
    result = amosync("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# The killed process leaves the in-process emulator's sockets reset mid-request.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_requested_resync_killed_mid_run_is_served_by_the_next_process(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=3000, latency_ms=15) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        stored = "SELECT count(*) FROM amocrm.contacts"
        _kill_when(env, lambda: _scalar(engine, stored) >= 300, ("resync",))
        requests = "SELECT id, status, run_id FROM amocrm.sync_requests ORDER BY id"
        [(first, status, run_id)] = _rows(engine, requests)
        assert (status, run_id) == ("running", None)

        # status: the killed run holds no lock any more, so it is not shown as running
        data = _status(env)
        assert data["daemon"]["running"] is False
        full = data["last_runs"]["full"]
        assert full["status"] == "interrupted"
        assert full["finished_at"] is None
        assert "killed" in full["error"]
        assert _rows(engine, "SELECT status FROM amocrm.sync_runs") == [("running",)]  # read-only

        # the next process that takes the pull lock puts the request back in the queue
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr
        assert _rows(engine, requests) == [(first, "pending", None)]
        assert _status(env)["last_runs"]["full"]["status"] == "failed"  # closed by that pull

        result = amosync("resync", env=env)
        assert result.returncode == 0, result.stderr
        rows = _rows(engine, requests)
        assert [r.status for r in rows] == ["done", "done"]
        assert rows[0].run_id is not None


@contextmanager
def _held(take: Callable[[], Any]) -> Iterator[threading.Event]:
    """Hold a run lock in this process (another session than the CLI's) until the event is set."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with take() as lock:
            assert lock is not None
            taken.set()
            done.wait(180)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield done
    finally:
        done.set()
        thread.join(10)


def _run_releasing(
    args: tuple[str, ...], env: dict[str, str], waiting: str, release: threading.Event
) -> tuple[str, str, int]:
    """Run the CLI; release the held lock once it says it waits for it (not after a fixed time:
    a loaded machine may take seconds to start the command)."""
    err: list[str] = []
    with subprocess.Popen(
        [AMOSYNC, *args], env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # fmt: skip
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None
        assert stderr is not None

        def read_stderr() -> None:
            for line in stderr:
                err.append(line)
                if waiting in line:
                    release.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            out = stdout.read()
            code = proc.wait(timeout=200)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
        reader.join(10)
    return out, "".join(err), code


def test_push_and_pull_wait_for_the_run_another_process_holds(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=20) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        waiting = "waiting up to 60 s for the push another process"
        with _held(lambda: push_lock(engine, "amocrm")) as release:
            out, err, code = _run_releasing(("push",), env, waiting, release)
        assert code == 0, err  # nothing pending: exit 0, having waited
        assert err.count(waiting) == 1
        assert "push run" in out

        waiting = "waiting up to 120 s for the pull another process"
        with _held(lambda: pull_lock(engine, "amocrm")) as release:
            out, err, code = _run_releasing(("pull",), env, waiting, release)
        assert code == 0, err
        assert err.count(waiting) == 1
        live = [c for c in emulator.account.contacts.values() if not c.is_deleted]
        stored = "SELECT count(*) FROM amocrm.contacts WHERE NOT is_deleted"
        assert _scalar(engine, stored) == len(live) > 0
