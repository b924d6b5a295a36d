"""SIGTERM (or Ctrl-C's SIGINT) to a one-shot `amosync` command: a clean, bounded stop that exits
1 with one line, closes its `sync_runs` row, puts a requested resync back to pending and keeps a
push's writes exactly-once; the next run converges. Real CLI processes against the emulator
(with latency, so the signal lands mid-run) and a real PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.push.held import RESEND_AFTER_S
from tests.e2e.cli import AMOSYNC, amosync, clean_env
from tests.e2e.test_pull_kill import _env
from tests.e2e.test_push_cli import (
    CREATES,
    assert_converged,
    command,
    make_local_edits,
    run,
    write_config,
)
from tests.e2e.test_push_cli import clean_env as push_clean_env
from tests.integration.pull_helpers import assert_converged as assert_pulled
from tests.integration.pull_helpers import emulated
from tests.integration.push_env import backdate_creates, push_env

pytestmark = pytest.mark.slow


def stop_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], signum: signal.Signals
) -> tuple[str, float]:
    """Send `signum` as soon as `ready()` holds (the command still running); its stderr and how
    long it took to end after the signal."""
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None, f"ended before the signal: {proc.communicate()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
        return err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def assert_one_line(err: str, signum: signal.Signals) -> None:
    """The command's own line (log events aside: JSON lines): one, saying which signal."""
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    assert lines == [lines[0]], err
    assert lines[0].startswith(f"amosync: stopped by {signum.name}: "), err
    assert "Traceback" not in err


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    ("args", "signum"),
    [(("pull", "--full"), signal.SIGTERM), (("resync",), signal.SIGINT)],
    ids=["sigterm-pull-full", "sigint-resync"],
)
def test_a_signal_mid_full_resync_stops_it_cleanly_and_the_next_pull_converges(
    db_config: DatabaseConfig, engine: Engine, args: tuple[str, ...], signum: signal.Signals
) -> None:
    with emulated(contacts=2000, latency_ms=15) as (emulator, url):
        env = _env(db_config, url, emulator.long_lived_token)
        assert amosync("db", "upgrade", env=env).returncode == 0
        proc = subprocess.Popen([AMOSYNC, *args], env=clean_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        stored = "SELECT count(*) FROM amocrm.contacts"
        err, took = stop_when(proc, lambda: int(str(_scalar(engine, stored))) >= 300, signum)
        assert proc.returncode == 1, err
        assert_one_line(err, signum)
        assert took < 5, err
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT status, error FROM amocrm.sync_runs ORDER BY id DESC LIMIT 1")
            ).one()
            requests = conn.execute(sa.text("SELECT status FROM amocrm.sync_requests")).all()
        assert row.status == "failed"
        assert row.error.startswith(f"stopped by {signum.name}: "), row.error
        if args == ("resync",):
            assert [r.status for r in requests] == ["pending"]  # served by the next resync
        assert int(str(_scalar(engine, stored))) < 2000  # it was stopped mid-run
        result = amosync("pull", env=env)
        assert result.returncode == 0, result.stderr
        assert_pulled(engine, emulator)
        running = "SELECT count(*) FROM amocrm.sync_runs WHERE status = 'running'"
        assert _scalar(engine, running) == 0


def test_sigterm_mid_push_of_creates_duplicates_nothing_and_the_next_push_completes(
    tmp_path: Path, db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=130, latency_ms=120) as env:
        env.mirror()
        ids = make_local_edits(env)
        env.emulator.clear_requests()
        config = write_config(tmp_path / "amosync.toml", env, db_config)
        proc = subprocess.Popen(
            command(config, "push"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=push_clean_env(),
        )  # fmt: skip

        def creating() -> bool:
            return len(env.api("POST")) >= 1

        err, took = stop_when(proc, creating, signal.SIGTERM)
        assert proc.returncode == 1, err
        assert_one_line(err, signal.SIGTERM)
        assert took < 5, err
        posts = len(env.api("POST"))
        assert posts < CREATES // 10, "the push was not stopped"
        runs = env.sql("SELECT status, error FROM sync_runs WHERE kind = 'push' ORDER BY id")
        assert [r.status for r in runs] == ["failed"]
        assert runs[0].error.startswith("stopped by SIGTERM: "), runs[0].error
        env.emulator.set_controls(latency_ms=0)
        # a batch the stop left in flight that amoCRM does not show is held until its send is
        # RESEND_AFTER_S old (a list may lag it yet): that much later, it is sent again
        backdate_creates(env, RESEND_AFTER_S)
        done = run(config, "push")
        assert done.returncode == 0, done.stderr
        assert_converged(env, ids)  # every create made exactly once, every row synced
        names = Counter(c.name for c in env.emulator.account.contacts.values())
        assert sum(v for k, v in names.items() if k.startswith("e2e new")) == CREATES
