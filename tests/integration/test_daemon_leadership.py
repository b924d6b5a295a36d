"""Leadership and /healthz when the database sessions die: the leader stops leading at once,
checks its lock before every job, and reports a database outage while it lasts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from structlog.testing import capture_logs

from sync.clock import SystemClock
from sync.config import Config, DaemonConfig, DatabaseConfig, SyncConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import Jobs
from sync.db.locks import leader_lock_key
from tests.integration.lock_helpers import terminate_lock_holder


def _wait(what: str, check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Work:
    """Stand-in jobs: pull returns at once; the first push after a pull blocks until released
    (a job of the leader still running when the lock goes)."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushing = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def jobs(self) -> Jobs:
        return Jobs(self.pull, self.push, lambda: None, lambda: None)

    def pull(self) -> None:
        self.calls.append("pull")
        self.pulls += 1

    def push(self) -> None:
        self.calls.append("push")
        if self.pulls and not self.release.is_set():
            self.pushing.set()
            self.release.wait(60)
            self.pushing.clear()


def _daemon(db_config: DatabaseConfig, engine: Engine, jobs: Jobs, poll: float) -> Daemon:
    config = Config(
        database=db_config,
        sync=SyncConfig(poll_interval_s=poll, push_interval_s=0.2, full_resync_cron=""),
        daemon=DaemonConfig(requests_poll_s=0.5, shutdown_timeout_s=2),
    )
    return Daemon(Parts(config, engine, jobs, Health(poll), Metrics(), SystemClock()))


@contextmanager
def _running(daemon: Daemon) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def test_a_leader_whose_lock_session_ends_stops_reporting_leader_at_once(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    work = Work()
    daemon = _daemon(db_config, engine, work.jobs(), poll=5)
    with capture_logs() as logs, _running(daemon):
        _wait("a push running under a healthy leader", work.pushing.is_set)
        assert daemon.health.report()[1]["role"] == "leader"
        assert terminate_lock_holder(engine, leader_lock_key("amocrm")) == 1
        _wait("leader_lock_lost", lambda: "leader_lock_lost" in [e["event"] for e in logs])
        code, body = daemon.health.report()
        assert work.pushing.is_set()  # the job still runs, and yet:
        assert body["role"] == "standby"
        assert code == 503
        assert [r for r in body["reasons"] if r.startswith("leadership_lost: ")]
        assert daemon.parts.metrics.leader._value.get() == 0
        work.release.set()
        _wait("leading again", lambda: daemon.health.report()[1]["role"] == "leader")
    assert [e["event"] for e in logs].count("leader_lock_lost") == 1


def test_every_job_first_checks_the_leader_lock(db_config: DatabaseConfig, engine: Engine) -> None:
    work = Work()
    daemon = _daemon(db_config, engine, work.jobs(), poll=5)
    assert daemon.lock.try_acquire()
    daemon.health.set_role("leader")
    try:
        daemon.runner.run("pull", work.pull)
        assert work.calls == ["pull"]
        terminate_lock_holder(engine, leader_lock_key("amocrm"))
        with capture_logs() as logs:
            daemon.runner.run("push", work.push)  # the scheduler's next job
            daemon.runner.run("pull", work.pull)
        assert work.calls == ["pull"]  # neither ran
        assert daemon.health.report()[1]["role"] == "standby"
        assert [e["event"] for e in logs] == ["leader_lock_lost"]  # once
        assert daemon.parts.metrics.job_runs.labels("push", "skipped")._value.get() == 1
    finally:
        daemon.lock.release()


@contextmanager
def _outage(admin_url: URL, database: str) -> Iterator[Callable[[], None]]:
    """The database refuses connections and every session to it ends, until `end()`."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def sql(statement: str) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(statement), {"d": database})

    def end() -> None:
        sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    sql("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = :d")
    try:
        yield end
    finally:
        end()
        admin.dispose()


def _reasons(daemon: Daemon) -> list[Any]:
    return list(daemon.health.report()[1]["reasons"])


def test_healthz_says_database_unavailable_through_an_outage_and_ok_after(
    db_config: DatabaseConfig, engine: Engine, pg_admin_url: URL
) -> None:
    work = Work()
    daemon = _daemon(db_config, engine, work.jobs(), poll=5)
    database = str(engine.url.database)
    with _running(daemon):
        _wait("a healthy leader with a job running", work.pushing.is_set)
        assert daemon.health.report()[0] == 200
        with _outage(pg_admin_url, database) as end:
            _wait("database_unavailable", lambda: any(
                r.startswith("database_unavailable: ") for r in _reasons(daemon)))  # fmt: skip
            code, body = daemon.health.report()
            assert code == 503
            assert body["role"] != "leader"
            assert "not currently accepting connections" in " ".join(body["reasons"])
            end()
        work.release.set()
        # a standby whose lost leadership's job just ended answers 200 for a moment before it
        # takes the lock again: wait for the healthy leader, not for the first 200
        _wait("healthy again", lambda: daemon.health.report()[0] == 200
              and daemon.health.role == "leader")  # fmt: skip
        assert daemon.health.report()[1]["role"] == "leader"


def test_a_stop_after_a_lost_leadership_gives_its_job_the_shutdown_timeout_only(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """The job of a leadership lost before SIGTERM gets `shutdown_timeout_s` (2 s here) from
    the stop, not as long as it takes (it waited for the job before)."""
    work = Work()
    daemon = _daemon(db_config, engine, work.jobs(), poll=5)
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run(stop)), daemon=True)
    with capture_logs() as logs:
        thread.start()
        try:
            _wait("a push running under a healthy leader", work.pushing.is_set)
            assert terminate_lock_holder(engine, leader_lock_key("amocrm")) == 1
            _wait("leader_lock_lost", lambda: "leader_lock_lost" in [e["event"] for e in logs])
            time.sleep(0.5)  # waiting for the lost leadership's job
            started = time.monotonic()
            stop.set()
            thread.join(10)
            took = time.monotonic() - started
        finally:
            work.release.set()
            stop.set()
            thread.join(15)
    assert result == [False], "the stuck push is abandoned: the run is not clean"
    assert 1.5 < took < 4, took
    (abandoned,) = [e for e in logs if e["event"] == "job_abandoned"]
    assert abandoned["jobs"] == ["push"]


def test_no_job_starts_once_the_stop_is_seen(db_config: DatabaseConfig, engine: Engine) -> None:
    """Pushes every 0.2 s: none starts after the stop (one did while the LISTEN thread took
    its second to end, and failed with `stopping: …` at error level on a clean stop)."""
    starts: list[float] = []
    jobs = Jobs(lambda: None, lambda: starts.append(time.monotonic()), lambda: None, lambda: None)
    daemon = _daemon(db_config, engine, jobs, poll=5)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _wait("a few pushes", lambda: len(starts) >= 3)
        stopped = time.monotonic()
        stop.set()
        thread.join(10)
    finally:
        stop.set()
        thread.join(10)
    late = [round(start - stopped, 2) for start in starts if start > stopped + 0.1]
    assert not late, late
