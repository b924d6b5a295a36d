"""`amosync push` outcomes a person sees: a create whose answer was lost is made exactly once
(found by a later look of that push, or held by it and resent past the bound); Ctrl-C or SIGTERM
during a 429's pause ends the command at once (exit 1, one line, the run row closed).
A subprocess against the emulator on 127.0.0.1 and a real PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import FaultRule
from sync.push.held import RESEND_AFTER_S
from tests.e2e.test_push_cli import clean_env, command, run, write_config
from tests.integration.push_env import PushEnv, backdate_creates, push_env

pytestmark = pytest.mark.slow


@pytest.fixture
def env(db_config: DatabaseConfig, engine: Engine) -> Any:
    with push_env(db_config, engine, contacts=30) as env:
        env.mirror()
        env.emulator.clear_requests()
        yield env


def _names(env: PushEnv, prefix: str) -> Counter[str]:
    return Counter(
        c.name for c in env.emulator.account.contacts.values() if c.name.startswith(prefix)
    )


@pytest.mark.parametrize(
    ("apply_write", "lag_s"),
    [(True, 3.0), (False, 0.0)],
    ids=["504-after-apply-lists-3s-behind", "504-before-apply"],
)
def test_a_lost_create_is_made_exactly_once(
    env: PushEnv, db_config: DatabaseConfig, tmp_path: Path, apply_write: bool, lag_s: float
) -> None:
    """Real time, the default 1 s settle: a create amoCRM applied shows within the 10 s window
    and is linked by that push, not resent; one it never applied is held by it (a list may lag
    longer than the window: exit 0, the row `pending` saying until when), and sent once by the
    first push past `RESEND_AFTER_S` after its send."""
    config = write_config(tmp_path / "amosync.toml", env, db_config)
    env.emulator.set_controls(list_lag_s=lag_s)
    env.emulator.add_fault(
        FaultRule(
            kind="error", status=504, method="POST", path="/api/v4/contacts",
            apply_write=apply_write,
        )
    )  # fmt: skip
    env.sql("INSERT INTO contacts (name) VALUES ('Cli A'), ('Cli B')")
    started = time.monotonic()
    done = run(config, "push")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 40
    assert len(env.api("POST")) == 1
    if not apply_write:
        assert _names(env, "Cli") == {}
        held = env.sql("SELECT sync_status, sync_error FROM contacts WHERE id < 0")
        assert len(held) == 2
        assert {r.sync_status for r in held} == {"pending"}
        assert all("sent again only if still not shown at" in r.sync_error for r in held)
        assert "2 new contacts whose answer was lost not shown by amoCRM yet" in done.stdout
        assert run(config, "push").returncode == 0  # looked for again: still held
        assert len(env.api("POST")) == 1
        backdate_creates(env, RESEND_AFTER_S)  # the bound has passed
        done = run(config, "push")
        assert done.returncode == 0, done.stderr
        assert len(env.api("POST")) == 2
    assert _names(env, "Cli") == {"Cli A": 1, "Cli B": 1}
    assert env.sql("SELECT count(*) FROM contacts WHERE id < 0")[0][0] == 0
    assert {r[0] for r in env.sql("SELECT sync_status FROM contacts")} == {"synced"}


def test_a_retry_after_of_300_s_fails_the_push_with_one_line(
    env: PushEnv, db_config: DatabaseConfig, tmp_path: Path
) -> None:
    """amoCRM's documented 429 asks for 300 s (amocrm-api.md §1): a one-shot command says so
    and exits 1 at once rather than sitting for five minutes; the edits stay pending."""
    config = write_config(tmp_path / "amosync.toml", env, db_config)
    contact_id = sorted(env.emulator.account.contacts)[0]
    env.sql("UPDATE contacts SET name = 'later' WHERE id = :id", id=contact_id)
    env.emulator.add_fault(FaultRule(kind="rate_limit", retry_after_s=300, times=None,
                                     method="PATCH", path="/api/v4/contacts*"))  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command(config, "push"), capture_output=True, text=True,
                          env=clean_env(), timeout=60, check=False)  # fmt: skip
    assert time.monotonic() - started < 30, done.stderr
    assert done.returncode == 1, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("amosync:")]
    assert len(said) == 1, done.stderr
    assert "asked to wait 300 s" in said[0], said
    assert len([r for r in env.emulator.requests() if r["status"] == 429]) == 1
    assert (
        env.sql("SELECT sync_status FROM contacts WHERE id = :id", id=contact_id)[0][0] == "pending"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_a_429_pause_ends_the_push_at_once(
    env: PushEnv, db_config: DatabaseConfig, tmp_path: Path, signum: signal.Signals
) -> None:
    config = write_config(tmp_path / "amosync.toml", env, db_config)
    ids = sorted(env.emulator.account.contacts)
    for contact_id in ids:  # PATCH batches of 10 on the push's worker threads
        env.sql("UPDATE contacts SET name = 'paused' WHERE id = :id", id=contact_id)
    # 30 s: the longest retry_after a command waits out (longer fails it at once, below)
    env.emulator.add_fault(FaultRule(kind="rate_limit", retry_after_s=30, times=None,
                                     method="PATCH", path="/api/v4/contacts*"))  # fmt: skip
    proc = subprocess.Popen(command(config, "push"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
    deadline = time.monotonic() + 30
    while not [r for r in env.emulator.requests() if r["status"] == 429]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no 429 was served"
        time.sleep(0.05)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 5, err
    assert proc.returncode == 1, err  # CONTRACT: any failure but configuration/usage
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("amosync:")]
    assert len(said) == 1, err  # the retry's wait or the 429's pause, whichever it was in
    assert said[0].startswith(f"amosync: stopped by {signum.name}: a request waiting "), err
    runs = env.sql("SELECT status, error FROM sync_runs WHERE kind = 'push'")
    assert [(r.status, r.error) for r in runs] == [("failed", said[0].removeprefix("amosync: "))]
    assert all(env.remote(contact_id)["name"] != "paused" for contact_id in ids)
