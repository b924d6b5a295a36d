"""Stopping `amosync run` in the awkward moments: while PostgreSQL stops answering (a frozen
network path, through `tests.pg_proxy`), and while a requested full resync waits to retry."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from sync.config import DatabaseConfig, Secret
from tests.e2e.daemon_procs import DaemonProcess, EmulatorProcess, wait_for
from tests.pg_proxy import FreezeProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def daemons(tmp_path: Path, emulator: EmulatorProcess) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(db: DatabaseConfig, **settings: str) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path, db, emulator.base_url, **settings).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def proxy(db_config: DatabaseConfig) -> Iterator[FreezeProxy]:
    url = make_url(db_config.url.reveal())
    frozen = FreezeProxy((url.host or "127.0.0.1", url.port or 5432))
    yield frozen
    frozen.close()


def _through(db_config: DatabaseConfig, proxy: FreezeProxy) -> DatabaseConfig:
    url = proxy.url(make_url(db_config.url.reveal()))
    return replace(db_config, url=Secret(url.render_as_string(hide_password=False)))


def _request(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(sa.text("SELECT status FROM amocrm.sync_requests")))


def test_a_requested_resync_cut_short_by_a_stop_is_served_after_the_restart(
    daemons: Callable[..., DaemonProcess],
    emulator: EmulatorProcess,
    db_config: DatabaseConfig,
    engine: Engine,
) -> None:
    """SIGTERM while the requested resync waits to retry a 503: the request was not done, nor
    did it fail; it is `pending` again and the next daemon serves it (it stayed `failed`)."""
    daemon = daemons(db_config, AMOSYNC_AMOCRM__MAX_RETRIES="8")
    daemon.wait_health(200)
    emulator.admin("POST", "faults", {"kind": "error", "status": 503,
                                      "path": "/api/v4/contacts*", "times": None})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO amocrm.sync_requests (kind) VALUES ('full')"))
    wait_for("the request to be served", lambda: _request(engine) == "running", timeout=20)
    time.sleep(3)  # its run waits to retry
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0, daemon.output()
    assert _request(engine) == "pending", daemon.output()
    assert "request_put_back" in [e["event"] for e in daemon.events()]
    emulator.admin("DELETE", "faults")
    again = daemons(db_config)
    wait_for("the request to be done", lambda: _request(engine) == "done", timeout=30)
    again.assert_running()


def test_sigterm_while_postgresql_stops_answering_exits_within_the_bound(
    daemons: Callable[..., DaemonProcess], db_config: DatabaseConfig, proxy: FreezeProxy
) -> None:
    """The leader's lock check waits for an answer that never comes (no error: a frozen path).
    The stop still ends `shutdown_timeout_s` + 3 s after SIGTERM, exit 1, saying where it
    waited (it ran until the traffic resumed)."""
    daemon = daemons(_through(db_config, proxy), AMOSYNC_DAEMON__SHUTDOWN_TIMEOUT_S="2")
    daemon.wait_health(200)
    proxy.freeze()
    time.sleep(2)  # the lock check (every second) now waits
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait(timeout=15)
    took = time.monotonic() - started
    assert code == 1, daemon.output()
    assert 4.5 < took < 8, took
    events = daemon.events()
    (stuck,) = [e for e in events if e["event"] == "shutdown_stuck"]
    assert "check (sync/db/locks.py:" in stuck["blocked_in"], stuck
    assert "_still_leading" in stuck["blocked_in"], stuck
    assert "shutdown_requested" in [e["event"] for e in events]
    assert "Traceback" not in daemon.output()


def _scrape(daemon: DaemonProcess) -> tuple[float, str]:
    started = time.monotonic()
    text = daemon.metrics()
    return time.monotonic() - started, text


def test_metrics_and_healthz_answer_while_postgresql_stops_answering(
    daemons: Callable[..., DaemonProcess], db_config: DatabaseConfig, proxy: FreezeProxy
) -> None:
    """Every scrape answers within the deadline with amosync_database_up 0 (they all hung,
    one behind the other), and /healthz says the database is unavailable (it said ok)."""
    daemon = daemons(_through(db_config, proxy))
    daemon.wait_health(200)
    assert "amosync_database_up 1.0" in daemon.metrics()
    proxy.freeze()
    time.sleep(5.5)  # the scrape cache (5 s) runs out
    with ThreadPoolExecutor(3) as pool:
        scrapes = list(pool.map(lambda _: _scrape(daemon), range(3)))
    for took, text in scrapes:
        assert took < 3, took
        assert "amosync_database_up 0.0" in text
    took, text = _scrape(daemon)  # one more, while the first read still waits: at once
    assert took < 1, took
    assert "amosync_database_up 0.0" in text

    def unavailable() -> list[str] | None:
        code, body = daemon.health() or (0, {})
        reasons = [r for r in body.get("reasons", []) if "no answer from PostgreSQL" in r]
        return reasons if code == 503 else None

    (reason,) = wait_for("/healthz to say the database is unavailable", unavailable, timeout=10)
    assert reason.startswith("database_unavailable: ")
    proxy.thaw()
    daemon.wait_health(200)
    wait_for("amosync_database_up 1", lambda: "amosync_database_up 1.0" in daemon.metrics(),
             timeout=15)  # fmt: skip
    assert "Traceback" not in daemon.output()
