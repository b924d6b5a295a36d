"""Local edits reach amoCRM without waiting for `push_interval_s` (issue 15): the capture trigger
NOTIFYs, the leader's listener and debounce move the push job to now. The daemon runs in process
with its real jobs against the emulator over HTTP; `push_interval_s` and `poll_interval_s` are an
hour, so only the notification (or the listener's reconnect) can make a push happen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.clock import SystemClock
from sync.config import Config, DaemonConfig, DatabaseConfig, SyncConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.run import build_jobs
from sync.emulator import Emulator
from tests.integration.amo_emulator import amo_config, client_for
from tests.integration.pull_helpers import emulated

HOUR = 3600.0
LISTENING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND query LIKE 'LISTEN %changes%'"
)


def _wait(what: str, check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)


def _edit(engine: Engine, contact_id: int, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE amocrm.contacts SET name = :n WHERE id = :i"),
            {"n": name, "i": contact_id},
        )


def _patched(emulator: Emulator) -> list[dict[str, Any]]:
    """Every contact entity amoCRM received in a PATCH, in arrival order."""
    return [
        entity
        for r in emulator.requests()
        if r["method"] == "PATCH" and r["path"] == "/api/v4/contacts"
        for entity in r["body"] or ()
    ]


def _patches(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests() if r["method"] == "PATCH")


@contextmanager
def _leader(db_config: DatabaseConfig, engine: Engine, **sync: Any) -> Iterator[Emulator]:
    """A leader with its first pull and push done and its listener LISTENing."""
    with emulated(contacts=200) as (emulator, url):
        settings: dict[str, Any] = {"poll_interval_s": HOUR, "push_interval_s": HOUR,
                                    "full_resync_cron": "", "overlap_s": 5}  # fmt: skip
        settings.update(sync)
        config = Config(
            amocrm=amo_config(url, emulator.long_lived_token),
            database=db_config,
            sync=SyncConfig(**settings),
            daemon=DaemonConfig(requests_poll_s=HOUR, shutdown_timeout_s=5),
        )
        client = client_for(emulator, url, workers=4)
        parts = Parts(config, engine, build_jobs(config, engine, client), Health(HOUR),
                      Metrics(), SystemClock())  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=Daemon(parts).run, args=(stop,), daemon=True)
        thread.start()
        try:
            done = "SELECT count(DISTINCT kind) FROM amocrm.sync_runs WHERE status = 'succeeded'"
            _wait("the first pull and push", lambda: _scalar(engine, done) == 2)
            _wait("the listener", lambda: _scalar(engine, LISTENING) is not None)
            emulator.clear_requests()
            yield emulator
        finally:
            stop.set()
            thread.join(15)
            client.close()


def _ids(engine: Engine, n: int) -> list[int]:
    with engine.connect() as conn:
        sql = "SELECT id FROM amocrm.contacts WHERE NOT is_deleted ORDER BY id LIMIT :n"
        return list(conn.scalars(sa.text(sql), {"n": n}))


def test_a_local_edit_is_pushed_without_waiting_for_the_push_interval(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with _leader(db_config, engine) as emulator:
        (contact,) = _ids(engine, 1)
        _edit(engine, contact, "Edited now")
        _wait("the PATCH", lambda: any(e["id"] == contact for e in _patched(emulator)))
        assert emulator.contact(contact)["name"] == "Edited now"  # type: ignore[index]
        synced = "SELECT sync_status FROM amocrm.contacts WHERE id = :i"
        _wait("the edit recorded", lambda: _scalar(engine, synced, i=contact) == "synced")


def test_a_stream_of_edits_goes_out_in_few_batches_one_push_at_a_time(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with _leader(db_config, engine) as emulator:
        ids = _ids(engine, 50)
        for number, contact in enumerate(ids):  # 50 single-row UPDATEs over about a second
            _edit(engine, contact, f"Stream {number}")
            time.sleep(0.02)
        pending = "SELECT count(*) FROM amocrm.contacts WHERE sync_status <> 'synced'"
        _wait("every edit pushed", lambda: _scalar(engine, pending) == 0)
        assert {e["id"] for e in _patched(emulator)} == set(ids)
        assert _patches(emulator) <= 10  # batches, not one PATCH per edit (50)
        overlapping = """
            SELECT count(*) FROM amocrm.sync_runs a JOIN amocrm.sync_runs b
            ON a.kind = 'push' AND b.kind = 'push' AND a.id < b.id
            AND b.started_at < a.finished_at"""
        assert _scalar(engine, overlapping) == 0  # never two pushes at once


def test_an_edit_made_while_the_listener_is_cut_off_goes_out_after_it_reconnects(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with _leader(db_config, engine) as emulator, capture_logs() as logs:
        (contact,) = _ids(engine, 1)
        with engine.connect() as conn:  # what a PostgreSQL restart or a DBA does to the session
            pid = conn.scalar(sa.text(LISTENING))
            assert conn.scalar(sa.text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})
        _edit(engine, contact, "While nobody listened")  # its NOTIFY reaches no one
        _wait("the PATCH", lambda: any(e["id"] == contact for e in _patched(emulator)))
        events = [e["event"] for e in logs]
        assert "listen_failed" in events
        assert "listen_reconnected" in events
