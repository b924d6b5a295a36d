"""`amosync run`: the composition root — lock, scheduler, signals, health and metrics.

    ┌──────────── amosync run (one process) ────────────────────────────────────┐
    │ main thread: Daemon.run                                                   │
    │   standby ──try pg_try_advisory_lock every ≤ poll/2──► leader             │
    │   leader: BackgroundScheduler (sync.schedule) ── pull / push / full ──►   │
    │           JobRunner (one job at a time, never raises)   sync.pull/push    │
    │   every second: heartbeat, lock session still alive?  SIGTERM → stop      │
    │ thread amosync-http: /healthz /livez /metrics (sync.health, sync.metrics) │
    └───────────────────────────────────────────────────────────────────────────┘

Stop (SIGTERM/SIGINT): no new job starts; a running job gets `daemon.shutdown_timeout_s` to
finish its transaction; if it has not, the process exits anyway and PostgreSQL rolls the open
transaction back when the connection closes. Exit code 0 either way, well within 15 s.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.clock import Clock, SystemClock
from sync.config import Config
from sync.db import status as queries
from sync.db.engine import store_errors
from sync.db.locks import LeaderLock
from sync.errors import StoreError
from sync.health import Health
from sync.logs import get_logger
from sync.metrics import Metrics
from sync.schedule import (
    Job,
    JobRunner,
    Jobs,
    build_scheduler,
    describe_jobs,
    quiet_apscheduler,
    request_full,
)

log = get_logger("sync.daemon")

LOCK_CHECK_S = 1.0
STANDBY_RETRY_MAX_S = 5.0


@dataclass
class Parts:
    """What the daemon is built from (everything passed in, so tests can build one)."""

    config: Config
    engine: Engine
    jobs: Jobs
    health: Health
    metrics: Metrics
    clock: Clock


class Daemon:
    """Leader election plus the leader's scheduler; `run` returns once `stop` is set."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.config = parts.config
        self.health = parts.health
        self.lock = LeaderLock(parts.engine, parts.config.database.schema)
        self.runner = JobRunner(parts.engine, parts.health, parts.metrics)
        self._scheduler: BackgroundScheduler | None = None

    def run(self, stop: threading.Event) -> bool:
        """Lead or stand by until `stop`; True if every job ended cleanly (none was abandoned)."""
        quiet_apscheduler()
        clean = True
        self.health.set_role("standby")
        while not stop.is_set():
            self.health.beat()
            if self._try_lead():
                clean = self._lead(stop)
            else:
                stop.wait(self._standby_retry())
        self.health.set_role("stopping")
        return clean

    def _standby_retry(self) -> float:
        return min(self.config.sync.poll_interval_s / 2, STANDBY_RETRY_MAX_S)

    def _try_lead(self) -> bool:
        try:
            got = self.lock.try_acquire()
        except SQLAlchemyError as exc:
            reason = str(exc).strip().splitlines()[0]
            self.health.database_failed(reason)
            log.warning("leader_lock_unavailable", error=reason)
            return False
        self.health.database_ok()
        return got

    def _lead(self, stop: threading.Event) -> bool:
        schema = self.config.database.schema
        log.info("leader_elected", schema=schema)
        self.runner.stopping.clear()
        scheduler = build_scheduler(
            self.config, self.parts.jobs, self.runner, self._check_requests, self.parts.clock
        )
        self._scheduler = scheduler
        scheduler.start()
        self.health.set_role("leader")
        self.parts.metrics.leader.set(1)
        log.info("scheduler_started", jobs=describe_jobs(scheduler))
        try:
            while not stop.wait(LOCK_CHECK_S):
                self.health.beat()
                if not self.lock.alive():
                    log.warning("leadership_lost", schema=schema)
                    break
        finally:
            clean = self._stop_leading(scheduler, stop)
        return clean

    def _stop_leading(self, scheduler: BackgroundScheduler, stop: threading.Event) -> bool:
        self.runner.stopping.set()
        scheduler.shutdown(wait=False)
        self._scheduler = None
        timeout = self.config.daemon.shutdown_timeout_s if stop.is_set() else None
        running = self.runner.running()
        clean = self.runner.wait_idle(timeout)
        if not clean:
            log.warning("job_abandoned", jobs=sorted(running), waited_s=timeout,
                        note="its open transaction is rolled back as the process exits")  # fmt: skip
        self.lock.release()
        self.parts.metrics.leader.set(0)
        self.health.set_role("standby")
        log.info("leadership_released", schema=self.config.database.schema)
        return clean

    # --- sync_requests -------------------------------------------------------------------------

    def _check_requests(self) -> None:
        """The `requests` job: a pending request queues a one-off full resync."""
        try:
            with self.parts.engine.connect() as conn:
                pending = queries.count_pending_requests(conn)
        except SQLAlchemyError as exc:
            log.warning("requests_check_failed", error=str(exc).strip().splitlines()[0])
            return
        scheduler = self._scheduler
        if pending and scheduler is not None and not self.runner.stopping.is_set():
            request_full(scheduler, self.runner, self.parts.jobs.full)


def serving_requests(engine: Engine, full: Callable[[], object]) -> Job:
    """A full resync that also settles the pending `sync_requests` it serves.

    Requests are claimed (pending → running) before the resync starts, so a request made during
    it waits for the next one; afterwards they are marked done or failed with the run's id.
    """

    def run() -> None:
        with engine.begin() as conn:
            ids = queries.claim_requests(conn)
            before = queries.fetch_max_run_id(conn)
        if ids:
            log.info("resync_requests_claimed", ids=ids)
        try:
            full()
        except BaseException as exc:
            _finish(engine, ids, before, str(exc) or type(exc).__name__)
            raise
        _finish(engine, ids, before, None)

    return run


def _finish(engine: Engine, ids: list[int], before: int, error: str | None) -> None:
    if not ids:
        return
    try:
        with engine.begin() as conn:
            run_id = queries.fetch_latest_run_id(conn, "full", before)
            queries.finish_requests(conn, ids, run_id=run_id, error=error)
    except SQLAlchemyError as exc:
        log.warning("resync_requests_not_settled", ids=ids, error=str(exc).splitlines()[0])


# --- signals and process exit ------------------------------------------------------------------


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask for a clean stop; a second one exits at once (still status 0)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            exit_now(0)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def exit_now(code: int) -> None:
    """Leave without waiting for job threads: their sessions close, PostgreSQL rolls back."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_database(engine: Engine, config: Config) -> None:
    """Fail fast with one clear line when the database cannot be reached at all at start."""
    with store_errors(config.database), engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


__all__ = ["Daemon", "Parts", "StoreError", "install_signal_handlers", "serving_requests"]
