"""Progress a person sees, and resync requests whose outcome is reported."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import sqlalchemy as sa

from sync.config import DatabaseConfig

from .cli import amosync, amosync_on_a_terminal, screen_lines
from .daemon_procs import TOKEN, DaemonProcess, EmulatorProcess, env_for


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failed_resync_request_is_reported_by_status_and_the_next_resync(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    port = _closed_port()
    env = {
        "AMOSYNC_DATABASE__URL": db_config.url.reveal(),
        "AMOSYNC_AMOCRM__BASE_URL": f"http://127.0.0.1:{port}",
        "AMOSYNC_AMOCRM__ACCESS_TOKEN": "t0ken",
        "AMOSYNC_AMOCRM__MAX_RETRIES": "0",
    }
    failed = amosync("resync", env=env, cwd=tmp_path)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    reason = f"cannot connect to amoCRM at 127.0.0.1:{port}: connection refused"
    assert failed.stderr.strip().splitlines()[-1].startswith(f"amosync: {reason}")
    status = amosync("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if "requests " in line)
    assert re.match(r"  requests +#1 full failed at \S+ \(sync_runs id \d+\): ", line), line
    assert reason in line
    data = json.loads(amosync("status", "--json", env=env, cwd=tmp_path).stdout)
    assert [(r["id"], r["status"]) for r in data["requests"]] == [(1, "failed")]
    again = amosync("resync", env=env, cwd=tmp_path)
    assert f"note: the previous resync request 1 failed: {reason}" in again.stderr


def test_a_full_resync_on_a_terminal_shows_its_total(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    emulator = EmulatorProcess(tmp_path, contacts=300)
    emulator.start()
    try:
        env = {
            "AMOSYNC_DATABASE__URL": db_config.url.reveal(),
            "AMOSYNC_AMOCRM__BASE_URL": emulator.base_url,
            "AMOSYNC_AMOCRM__ACCESS_TOKEN": TOKEN,
            "AMOSYNC_AMOCRM__MAX_RPS": "50",
        }
        first = amosync("pull", env=env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        # the bar's total is the live contacts stored (a read counts a contact read twice twice)
        stored = _live_stored(db_config)
        code, received = amosync_on_a_terminal("pull", "--full", env=env, cwd=tmp_path)
    finally:
        emulator.stop()
    assert code == 0, received
    shown = screen_lines(received)
    assert any(re.search(rf"full resync .* \d+/{stored} contacts", line) for line in shown), shown


def test_resync_wait_shows_the_daemons_run(db_config: DatabaseConfig, tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path, contacts=1500)
    emulator.start()
    emulator.admin("PATCH", "controls", {"latency_ms": 150})  # a run long enough to watch
    daemon = DaemonProcess(tmp_path, db_config, emulator.base_url, AMOSYNC_AMOCRM__MAX_RPS="5",
                           AMOSYNC_SYNC__POLL_INTERVAL_S="3600").start()  # fmt: skip
    try:
        daemon.wait_health(200, timeout=60)
        code, received = amosync_on_a_terminal(
            "resync", "--wait", "120", env=env_for(daemon), cwd=tmp_path
        )
    finally:
        daemon.kill()
        emulator.stop()
    assert code == 0, received
    shown = screen_lines(received)
    by_daemon = re.compile(r"full resync by the daemon \(amosync-leader [^)]+\).* \d+/\d+ contacts")
    assert any(by_daemon.search(line) for line in shown), shown
    assert any(re.match(r"resync request \d+ done by amosync-leader", line) for line in shown)


def _live_stored(db: DatabaseConfig) -> int:
    engine = sa.create_engine(db.url.reveal())
    try:
        with engine.connect() as conn:
            sql = "SELECT count(*) FROM amocrm.contacts WHERE id > 0 AND NOT is_deleted"
            return int(conn.scalar(sa.text(sql)) or 0)
    finally:
        engine.dispose()
