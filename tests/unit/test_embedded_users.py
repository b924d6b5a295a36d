"""The embedded server's users list purged of processes that are gone (`forget_gone_users`):
a pid with no process, a zombie, or a pid reused since the list was written goes; a process
that may still use the server stays; a list not as expected is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from sync.db.embedded_users import REUSE_MARGIN_S, USERS_FILE, forget_gone_users

WHEEL = SimpleNamespace(
    postgres_server=SimpleNamespace(PostgresServer=SimpleNamespace(_lock=threading.Lock()))
)
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _users(pgdata: Path, pids: object, *, written: float | None = None) -> Path:
    users = pgdata / USERS_FILE
    users.write_text(json.dumps(pids), encoding="utf-8")
    if written is not None:
        os.utime(users, (written, written))
    return users


def _gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: no process has the pid now (until the system reuses it)
    return process.pid


def test_a_user_killed_without_a_word_is_forgotten_and_a_live_one_kept(tmp_path: Path) -> None:
    dead = _gone_pid()
    users = _users(tmp_path, [dead, os.getpid()])
    assert forget_gone_users(WHEEL, tmp_path) == [dead]
    assert json.loads(users.read_text()) == [os.getpid()]


def test_a_zombie_is_gone(tmp_path: Path) -> None:
    zombie = subprocess.Popen(SLEEPER)
    try:
        zombie.kill()
        while _state(zombie.pid) != "Z":  # killed, not reaped yet
            time.sleep(0.01)
        users = _users(tmp_path, [zombie.pid])
        assert forget_gone_users(WHEEL, tmp_path) == [zombie.pid]
        assert json.loads(users.read_text()) == []
    finally:
        zombie.wait()


def test_a_pid_reused_since_the_list_was_written_is_gone(tmp_path: Path) -> None:
    newcomer = subprocess.Popen(SLEEPER)  # began long after the list was last written
    try:
        users = _users(tmp_path, [newcomer.pid], written=time.time() - 10 * REUSE_MARGIN_S)
        assert forget_gone_users(WHEEL, tmp_path) == [newcomer.pid]
        assert json.loads(users.read_text()) == []
    finally:
        newcomer.kill()
        newcomer.wait()


def test_a_list_not_as_expected_is_left_alone(tmp_path: Path) -> None:
    for text in ("not json", '{"pid": 1}', '["1"]'):
        users = tmp_path / USERS_FILE
        users.write_text(text, encoding="utf-8")
        assert forget_gone_users(WHEEL, tmp_path) == []
        assert users.read_text() == text
    (tmp_path / USERS_FILE).unlink()
    assert forget_gone_users(WHEEL, tmp_path) == []  # no list: nothing to do
    no_lock = SimpleNamespace(postgres_server=SimpleNamespace(PostgresServer=SimpleNamespace()))
    users = _users(tmp_path, [_gone_pid()])
    assert forget_gone_users(no_lock, tmp_path) == []  # another wheel: not ours to touch


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
