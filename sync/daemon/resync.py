"""`amosync resync`: ask the running daemon for a full resync, or run it here if there is none.

A request is a `sync_requests` row (the same as `INSERT INTO sync_requests (kind) VALUES
('full')` in SQL). If no process holds the leader lock, this command takes the lock itself (so a
daemon starting meanwhile waits as a standby) and serves the request at once. Waiting for the
daemon's run (`--wait`), the progress counts the contacts that run has stored so far (its
`sync_full_seen` rows) against the stored live contacts. A daemon that holds the lock but halted
(a 403 IP block: `sync.db.halt`) serves no request until it is restarted: the request is queued
all the same, and the outcome says so instead of promising a start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.config import Config
from sync.core.models import FINISHED_REQUEST, RequestStatus
from sync.db import status as queries
from sync.db.halt import fetch_halted
from sync.db.locks import LeaderLock
from sync.db.runs import add_request
from sync.errors import SyncError
from sync.pull import Progress, serve_request

FINISHED = FINISHED_REQUEST


@dataclass(frozen=True)
class Outcome:
    request_id: int
    ran_here: bool
    request: dict[str, Any] | None  # the row when finished (ran here, or waited for)
    leader: str | None
    halted: dict[str, Any] | None = None  # the daemon's halt (`sync.db.halt`): no run comes


def resync(
    config: Config,
    engine: Engine,
    client_factory: Callable[[], AmoClient],
    *,
    wait_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
) -> Outcome:
    """Queue a full resync; serve it here when no daemon leads; optionally wait for the daemon.
    `note` hears, first, about the previous request if it failed (it is not retried)."""
    with engine.begin() as conn:
        previous = next(iter(queries.fetch_recent_requests(conn, 1)), None)
        request_id = add_request(conn)
    if note is not None and previous is not None and previous["status"] == RequestStatus.FAILED:
        note(f"the previous resync request {previous['id']} failed: {previous['error']}")
    lock = LeaderLock(engine, config.database.schema)
    if lock.try_acquire():
        try:
            with client_factory() as client:
                if progress is not None:
                    progress.start(None, f"connecting to amoCRM at {client.session.host}")
                serve_request(config, engine, client, progress=progress)
        finally:
            lock.release()
        return Outcome(request_id, True, _fetch(engine, request_id), None)
    with engine.connect() as conn:
        leader = queries.fetch_leader(conn, config.database.schema)
        name = leader.application_name if leader else None
        halted = fetch_halted(conn, name)
    if wait_s is None or halted is not None:  # a halted daemon serves nothing: no use waiting
        return Outcome(request_id, False, None, name, halted)
    watch = _Watch(request_id, name, progress)
    return Outcome(request_id, False, _wait(engine, watch, wait_s, sleep), name)


def _fetch(engine: Engine, request_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return queries.fetch_request(conn, request_id)


@dataclass
class _Watch:
    """What the person waiting sees: the request waiting, then the daemon's run growing."""

    request_id: int
    leader: str | None
    progress: Progress | None
    shown: tuple[str, int | None] | None = None  # the (status, run id) the bar was started for
    seen: int = 0

    def update(self, engine: Engine, row: dict[str, Any] | None) -> None:
        if self.progress is None or row is None:
            return
        daemon = f"the daemon ({self.leader})" if self.leader else "the daemon"
        if row["status"] == RequestStatus.PENDING:
            self._start(
                (RequestStatus.PENDING, None), None, f"request {self.request_id} waits for {daemon}"
            )
            return
        with engine.connect() as conn:
            running = queries.fetch_full_run_progress(conn)
            total = queries.count_live_contacts(conn)
        run_id, seen = running or (None, 0)
        self._start((RequestStatus.RUNNING, run_id), total or None, f"full resync by {daemon}")
        self._show(seen)

    def finish(self, engine: Engine, row: dict[str, Any]) -> None:
        """The bar ends at what the run read (its seen list is gone once it finished)."""
        if self.progress is None or self.shown is None or row["run_id"] is None:
            return
        if self.shown[1] not in (None, row["run_id"]):
            return
        with engine.connect() as conn:
            run = queries.fetch_run(conn, row["run_id"])
        if run is not None:
            self._show(run.fetched)

    def _start(self, state: tuple[str, int | None], total: int | None, text: str) -> None:
        assert self.progress is not None
        if state != self.shown:
            self.shown, self.seen = state, 0
            self.progress.start(total, text)

    def _show(self, seen: int) -> None:
        assert self.progress is not None
        if seen > self.seen:
            self.progress.advance(seen - self.seen)
            self.seen = seen


def _wait(
    engine: Engine, watch: _Watch, wait_s: float, sleep: Callable[[float], None]
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        row = _fetch(engine, watch.request_id)
        if row is not None and row["status"] in FINISHED:
            watch.finish(engine, row)
            return row
        watch.update(engine, row)
        if time.monotonic() >= deadline:
            state = row["status"] if row else "missing"
            raise SyncError(
                f"resync request {watch.request_id} is still {state} after {wait_s:g} s; "
                "`amosync status` shows its progress"
            )
        sleep(1.0)
