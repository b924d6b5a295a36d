"""`amosync resync`: ask the running daemon for a full resync, or run it here if there is none.

A request is a `sync_requests` row (the same as `INSERT INTO sync_requests (kind) VALUES
('full')` in SQL). If no process holds the leader lock, this command takes the lock itself (so a
daemon starting meanwhile waits as a standby) and serves the request at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.config import Config
from sync.db import status as queries
from sync.db.locks import LeaderLock
from sync.errors import SyncError
from sync.pull import serve_request

FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Outcome:
    request_id: int
    ran_here: bool
    request: dict[str, Any] | None  # the row when finished (ran here, or waited for)
    leader: str | None


def resync(
    config: Config,
    engine: Engine,
    client_factory: Callable[[], AmoClient],
    *,
    wait_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Queue a full resync; serve it here when no daemon leads; optionally wait for the daemon."""
    with engine.begin() as conn:
        request_id = queries.add_request(conn)
    lock = LeaderLock(engine, config.database.schema)
    if lock.try_acquire():
        try:
            with client_factory() as client:
                serve_request(config, engine, client)
        finally:
            lock.release()
        return Outcome(request_id, True, _fetch(engine, request_id), None)
    with engine.connect() as conn:
        leader = queries.fetch_leader(conn, config.database.schema)
    name = leader.application_name if leader else None
    if wait_s is None:
        return Outcome(request_id, False, None, name)
    return Outcome(request_id, False, _wait(engine, request_id, wait_s, sleep), name)


def _fetch(engine: Engine, request_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return queries.fetch_request(conn, request_id)


def _wait(
    engine: Engine, request_id: int, wait_s: float, sleep: Callable[[float], None]
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        row = _fetch(engine, request_id)
        if row is not None and row["status"] in FINISHED:
            return row
        if time.monotonic() >= deadline:
            state = row["status"] if row else "missing"
            raise SyncError(
                f"resync request {request_id} is still {state} after {wait_s:g} s; "
                "`amosync status` shows its progress"
            )
        sleep(1.0)
