"""kill -9 of the real `amosync pull` mid-run; the next run converges to exactly amoCRM's state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import Emulator
from tests.e2e.cli import AMOSYNC, amosync, clean_env
from tests.integration.pull_helpers import assert_converged, emulated


def _env(db: DatabaseConfig, url: str, token: str) -> dict[str, str]:
    return {
        "AMOSYNC_DATABASE__URL": db.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": url,
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": token,
        "AMOSYNC_AMOCRM__MAX_RPS": "1000",
        "AMOSYNC_AMOCRM__PAGE_SIZE": "50",
        "AMOSYNC_SYNC__OVERLAP_S": "5",
        "AMOSYNC_SYNC__PULL_WORKERS": "2",
        "AMOSYNC_LOGGING__LEVEL": "warning",
    }


def _kill_when(env: dict[str, str], ready: Callable[[], bool], args: tuple[str, ...]) -> None:
    """Start `amosync pull`, SIGKILL it as soon as `ready()` holds (it must still be running)."""
    proc = subprocess.Popen(
        [AMOSYNC, *args],
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, f"pull ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "pull made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(sql)) or 0)


def _edit(emulator: Emulator, count: int, label: str) -> None:
    with emulator.account.lock:
        ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
    emulator.update_contacts([{"id": i, "first_name": f"{label} {i}"} for i in ids[:count]])
    for cid in ids[count : count + 3]:
        emulator.delete_contact(cid)


# The killed process leaves the in-process emulator's sockets reset mid-request; its server
# threads report that, which is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_mid_full_and_mid_incremental_then_converge(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=3000, latency_ms=15) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        _kill_when(
            env, lambda: _scalar(engine, "SELECT count(*) FROM amocrm.contacts") >= 600, ("pull",)
        )
        _edit(emulator, 40, "During")
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr
        assert_converged(engine, emulator)
        emulator.clock.advance(3)
        _edit(emulator, 1200, "Bulk")  # 1200 contacts in one second: tie passes by id
        moved = "SELECT count(*) FROM amocrm.contacts WHERE first_name LIKE 'Bulk %'"
        _kill_when(env, lambda: _scalar(engine, moved) >= 300, ("pull",))
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr
        assert_converged(engine, emulator)
        runs = (
            "SELECT count(*) FROM amocrm.sync_runs WHERE status = 'failed' AND error LIKE 'inter%'"
        )
        assert _scalar(engine, runs) == 2  # the killed runs are recorded as interrupted


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_leaves_the_runs_row_with_the_counts_of_what_it_stored(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The counters were written only when a run ended: a killed one said `read 0, wrote 0`
    after storing thousands of contacts (audit). Each page adds its counts in its own
    transaction, so the row holds exactly what was committed."""
    with emulated(contacts=3000, latency_ms=15) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        stored = "SELECT count(*) FROM amocrm.contacts"
        _kill_when(env, lambda: _scalar(engine, stored) >= 600, ("pull",))
        with engine.connect() as conn:
            run = conn.execute(
                sa.text("SELECT status, fetched, upserted, requests FROM amocrm.sync_runs")
            ).one()
        count = _scalar(engine, stored)
        status = amosync("status", env=env)
    assert run.status == "running"  # nobody has taken the lock since
    assert run.upserted == count  # a first run inserts each contact once, as its page commits
    assert run.fetched >= count  # (a contact listed twice is read twice, written once)
    assert run.requests > count // 50  # at least a request per page stored
    assert status.returncode == 0, status.stderr
    assert f"read {run.fetched}, wrote {count}," in status.stdout


def test_pull_without_credentials_fails_with_one_line_and_exit_2(
    db_config: DatabaseConfig,
) -> None:
    result = amosync("pull", env={"AMOSYNC_DATABASE__URL": db_config.url.reveal()})
    assert result.returncode == 2
    assert "amocrm.access_token" in result.stderr
    assert "Traceback" not in result.stderr


def _state(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        value = conn.scalar(
            sa.text("SELECT value FROM amocrm.sync_state WHERE key = 'pull.contacts'")
        )
    return dict(value or {})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_mid_window_resumes_the_unfinished_windows_only(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=4000, latency_ms=15, tie_break="shuffle") as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        stored = "SELECT count(*) FROM amocrm.contacts"
        _kill_when(env, lambda: _scalar(engine, stored) >= 1500, ("pull", "--full"))
        state = _state(engine)
        assert state["windows"], state  # the windows not read yet, stored with the pages
        before = _scalar(engine, stored)
        _edit(emulator, 30, "Meanwhile")
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr
        assert_converged(engine, emulator)
        with engine.connect() as conn:
            fetched = conn.scalar(
                sa.text("SELECT fetched FROM amocrm.sync_runs ORDER BY id DESC LIMIT 1")
            )
        # the finished windows were not read again: the resumed run read about what was left
        assert int(fetched or 0) < 4000 - before + 500
        assert _state(engine)["windows"] == []
