"""The leader's scheduler in process with stand-in jobs: overlap, failures, requests, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.clock import SystemClock
from sync.config import Config, DaemonConfig, DatabaseConfig, SyncConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import JobRunner, Jobs, PushSoon, build_scheduler
from sync.db import status as queries
from sync.db.halt import fetch_halted, mark_halted
from sync.db.locks import holder_name
from sync.db.runs import RunStore, add_request
from sync.errors import AmoBlockedError


@dataclass
class Recorder:
    """Jobs that record when they run, and how many run at once."""

    calls: list[str] = field(default_factory=list)
    active: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job(self, name: str, seconds: float = 0.0, fail: bool = False) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                self.calls.append(name)
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                time.sleep(seconds)
                if fail:
                    raise RuntimeError(f"{name} broke")
            finally:
                with self.lock:
                    self.active -= 1

        return run

    def count(self, name: str) -> int:
        with self.lock:
            return self.calls.count(name)


@pytest.fixture
def start(db_config: DatabaseConfig, engine: Engine) -> Iterator[Callable[[Jobs], Daemon]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(jobs: Jobs) -> Daemon:
        config = Config(
            database=db_config,
            sync=SyncConfig(poll_interval_s=0.2, push_interval_s=0.1, full_resync_cron=""),
            daemon=DaemonConfig(requests_poll_s=0.2, shutdown_timeout_s=2),
        )
        parts = Parts(config, engine, jobs, Health(0.2), Metrics(), SystemClock())
        daemon = Daemon(parts)
        stop = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread))
        return daemon

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)


def _wait(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_slow_and_failing_jobs_never_overlap_and_never_stop_the_schedule(
    start: Callable[[Jobs], Daemon],
) -> None:
    rec = Recorder()
    jobs = Jobs(
        pull=rec.job("pull", seconds=0.5),  # slower than its 0.2 s interval
        push=rec.job("push", fail=True),  # fails every time
        full=rec.job("full"),
        requested=rec.job("requested"),
    )
    daemon = start(jobs)
    failed = daemon.parts.metrics.job_runs.labels("push", "failed")
    _wait(lambda: rec.count("pull") >= 3 and failed._value.get() >= 3)
    assert rec.most == 1  # pull and push share one worker: never two at once
    skipped = daemon.parts.metrics.job_runs.labels("pull", "skipped")._value.get()
    assert skipped >= 1  # runs due while one was running were skipped, not stacked


def test_a_request_row_starts_a_full_resync(
    start: Callable[[Jobs], Daemon], engine: Engine
) -> None:
    rec = Recorder()
    start(Jobs(rec.job("pull"), rec.job("push"), rec.job("full"), rec.job("requested")))
    _wait(lambda: rec.count("pull") >= 1)
    with engine.begin() as conn:
        add_request(conn)
    _wait(lambda: rec.count("requested") >= 1, timeout=5)
    assert rec.count("full") == 0  # the cron resync is disabled here


def test_stop_waits_for_the_running_job_then_releases_the_lock(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    rec = Recorder()
    config = Config(
        database=db_config,
        sync=SyncConfig(poll_interval_s=5, push_interval_s=5, full_resync_cron=""),
        daemon=DaemonConfig(shutdown_timeout_s=5),
    )
    jobs = Jobs(rec.job("pull", seconds=1.0), rec.job("push"), rec.job("full"), rec.job("req"))
    daemon = Daemon(Parts(config, engine, jobs, Health(5), Metrics(), SystemClock()))
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(stop)))
    thread.start()
    _wait(lambda: rec.active == 1)
    stop.set()
    thread.join(10)
    assert result == [True]  # the pull finished inside the shutdown timeout
    assert rec.active == 0
    with engine.connect() as conn:
        assert queries.fetch_leader(conn, "amocrm") is None
        assert conn.scalar(sa.text("SELECT 1")) == 1


def _daemon(db_config: DatabaseConfig, engine: Engine, jobs: Jobs, **daemon: float) -> Daemon:
    config = Config(
        database=db_config,
        sync=SyncConfig(poll_interval_s=0.5, push_interval_s=0.5, full_resync_cron=""),
        daemon=DaemonConfig(**daemon),  # type: ignore[arg-type]
    )
    return Daemon(Parts(config, engine, jobs, Health(0.5), Metrics(), SystemClock()))


def _in_thread(daemon: Daemon) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_notify_wakes_the_leader_long_before_the_next_poll(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    rec = Recorder()
    jobs = Jobs(rec.job("pull"), rec.job("push"), rec.job("full"), rec.job("requested"))
    stop, thread = _in_thread(_daemon(db_config, engine, jobs, requests_poll_s=600))
    try:
        _wait(lambda: rec.count("pull") >= 1)
        time.sleep(1.5)  # the listener is LISTENing; the poll already ran and waits 600 s
        with engine.begin() as conn:
            add_request(conn)
        _wait(lambda: rec.count("requested") >= 1, timeout=5)
    finally:
        stop.set()
        thread.join(10)


def test_leader_survives_losing_every_database_session(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    rec = Recorder()
    jobs = Jobs(rec.job("pull"), rec.job("push"), rec.job("full"), rec.job("requested"))
    daemon = _daemon(db_config, engine, jobs)
    with capture_logs() as logs:
        stop, thread = _in_thread(daemon)
        try:
            _wait(lambda: daemon.health.role == "leader" and rec.count("pull") >= 1)
            with engine.connect() as conn:  # what a PostgreSQL restart does to its sessions
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ))  # fmt: skip
            _wait(lambda: "leader_lock_lost" in [e["event"] for e in list(logs)], timeout=5)
            before = rec.count("pull")
            _wait(lambda: daemon.health.role == "leader" and rec.count("pull") > before)
            assert thread.is_alive()
        finally:
            stop.set()
            thread.join(10)
    events = [e["event"] for e in logs]
    assert events.count("leader_elected") >= 2  # it led again, without a restart


def test_an_edit_announced_while_push_runs_gets_a_push_of_its_own(engine: Engine) -> None:
    """PushSoon moves the push job to now; a push that was already running when the edit was
    announced may have claimed the outbox before it, so another push follows it at once."""
    started, release = threading.Event(), threading.Event()
    pushes: list[float] = []

    def push() -> None:
        pushes.append(time.monotonic())
        started.set()
        release.wait(10)

    runner = JobRunner(engine, Health(1), Metrics())
    push_soon = PushSoon(runner, lambda: datetime.now(UTC))
    config = Config(sync=SyncConfig(poll_interval_s=3600, push_interval_s=3600,
                                    full_resync_cron=""))  # fmt: skip
    jobs = Jobs(lambda: None, push, lambda: None, lambda: None)
    scheduler = build_scheduler(config, jobs, runner, lambda: None, SystemClock(),
                                push_soon=push_soon)  # fmt: skip
    scheduler.start()
    try:
        assert started.wait(10)  # the first push runs at once, and blocks
        push_soon.want()  # announced while it runs: nothing starts beside it
        time.sleep(0.3)
        assert len(pushes) == 1
        release.set()
        _wait(lambda: len(pushes) == 2)  # right after it, not in an hour
        push_soon.want()  # announced while none runs
        _wait(lambda: len(pushes) == 3)
    finally:
        release.set()
        scheduler.shutdown(wait=True)


def test_a_stop_waits_for_a_request_check_under_way(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The request check runs on the scheduler's second worker, which the scheduler's shutdown
    does not wait for: a check under way must hold up the stop like a job, or it goes on using
    the engine after `run` returned (and a connection it returns to a disposed engine's pool
    is left open until the garbage collector finds it)."""
    jobs = Jobs(lambda: None, lambda: None, lambda: None, lambda: None)
    daemon = _daemon(db_config, engine, jobs, requests_poll_s=0.2, shutdown_timeout_s=14)
    result: list[bool] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.append(daemon.run(stop)), daemon=True)
    with engine.connect() as blocker:  # holds the check on its table: real PostgreSQL, no timing
        blocker.execute(sa.text("LOCK TABLE amocrm.sync_requests IN ACCESS EXCLUSIVE MODE"))
        thread.start()
        _wait(lambda: _sessions_waiting_on(engine, "sync_requests") == 1)
        stop.set()
        _wait(daemon.runner.stopping.is_set)  # the stop has begun
        assert not daemon.runner.wait_idle(0)  # and counts the check under way
        blocker.rollback()
    thread.join(20)
    assert result == [True]
    assert engine.pool.checkedout() == 0  # nothing of the daemon still holds a connection


def _sessions_waiting_on(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE :q"
        ), {"q": f"%{table}%"}) or 0)  # fmt: skip


def test_a_stop_that_abandons_a_requested_resync_puts_its_request_back(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    claimed, release = threading.Event(), threading.Event()

    def serve() -> None:  # claims the request as serve_request does, then waits on amoCRM
        with engine.begin() as conn:
            RunStore("amocrm").claim_request(conn)
        claimed.set()
        release.wait(20)

    rec = Recorder()
    jobs = Jobs(rec.job("pull"), rec.job("push"), rec.job("full"), serve)
    daemon = _daemon(db_config, engine, jobs, requests_poll_s=0.2, shutdown_timeout_s=0.5)
    with engine.begin() as conn:
        request = add_request(conn)
    result: list[bool] = []
    stop = threading.Event()
    thread = threading.Thread(target=lambda: result.append(daemon.run(stop)), daemon=True)
    thread.start()
    try:
        assert claimed.wait(10)
        with capture_logs() as logs:
            stop.set()
            thread.join(10)
    finally:
        release.set()
    assert result == [False]  # the job was abandoned
    assert "request_put_back" in [e["event"] for e in logs]
    with engine.connect() as conn:
        status = conn.scalar(sa.text("SELECT status FROM amocrm.sync_requests WHERE id = :i"),
                             {"i": request})  # fmt: skip
    assert status == "pending"


def test_a_new_leader_clears_the_halt_an_earlier_one_recorded(
    start: Callable[[Jobs], Daemon], engine: Engine
) -> None:
    with engine.begin() as conn:  # the halted daemon was restarted
        mark_halted(conn, holder_name(), "amoCRM blocked this IP", datetime.now(UTC))
    rec = Recorder()
    start(Jobs(rec.job("pull"), rec.job("push"), rec.job("full"), rec.job("requested")))
    _wait(lambda: rec.count("pull") >= 1)  # it leads
    with engine.connect() as conn:
        assert fetch_halted(conn, holder_name()) is None


def test_a_halted_daemon_leading_again_records_its_halt(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """Halted by a 403, it lost the lock in a blip; another leader cleared the halt row and
    exited; leading again it must record the halt, or `amosync resync` promises a start that
    never comes (review)."""
    rec = Recorder()
    daemon = _daemon(db_config, engine, Jobs(rec.job("pull"), rec.job("push"), rec.job("full"),
                                             rec.job("requested")))  # fmt: skip
    daemon.parts.health.job_failed("pull", AmoBlockedError("amoCRM blocked this IP (403)"))
    with engine.begin() as conn:
        assert fetch_halted(conn, holder_name()) is None  # cleared by the other leader
    stop, thread = _in_thread(daemon)
    try:
        _wait(lambda: _halt(engine) is not None)
    finally:
        stop.set()
        thread.join(10)
    assert "403" in str(_halt(engine))


def _halt(engine: Engine) -> dict[str, object] | None:
    with engine.connect() as conn:
        return fetch_halted(conn, holder_name())
