"""The daemon's parts on real PostgreSQL: leader lock, job runner, status, BI role, resync."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from sync.config import Config, DatabaseConfig, SyncConfig
from sync.daemon.health import Health
from sync.daemon.metrics import Metrics
from sync.daemon.resync import resync
from sync.daemon.schedule import JobRunner
from sync.db import status as queries
from sync.db.engine import create_engine
from sync.db.halt import mark_halted
from sync.db.locks import LeaderLock, holder_name
from sync.db.roles import grant_reader
from sync.db.runs import add_request
from sync.errors import AmoBlockedError, StoreError, mark_logged
from sync.status import gather, render
from tests.integration.amo_emulator import client_for, running


def test_one_leader_per_schema_until_it_lets_go(db_config: DatabaseConfig) -> None:
    engine = create_engine(db_config)
    first, second = LeaderLock(engine, "amocrm"), LeaderLock(engine, "amocrm")
    other_account = LeaderLock(engine, "other")
    try:
        assert first.try_acquire()
        assert first.try_acquire()  # re-entrant for its holder
        assert not second.try_acquire()
        assert other_account.try_acquire()  # one lock per account, not per database
        with engine.connect() as conn:
            leader = queries.fetch_leader(conn, "amocrm")
        assert leader is not None
        assert leader.application_name == holder_name()
        first.release()
        assert second.try_acquire()
    finally:
        for lock in (first, second, other_account):
            lock.release()
        engine.dispose()


def test_a_terminated_lock_session_is_noticed_and_frees_the_lock(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    own = create_engine(db_config)
    lock, rival = LeaderLock(own, "amocrm"), LeaderLock(own, "amocrm")
    try:
        assert lock.try_acquire()
        assert lock.alive()
        with engine.connect() as conn:  # what a crashed leader host or an admin's kill does
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :n AND pid <> pg_backend_pid()"
            ), {"n": holder_name()})  # fmt: skip
            conn.commit()
        assert not lock.alive()
        assert not lock.held
        assert rival.try_acquire()
    finally:
        lock.release()
        rival.release()
        own.dispose()


@pytest.fixture
def runner(engine: Engine) -> JobRunner:
    return JobRunner(engine, Health(poll_interval_s=1), Metrics())


def test_a_failing_job_logs_one_event_and_the_runner_goes_on(runner: JobRunner) -> None:
    def broken() -> None:
        raise StoreError("PostgreSQL at db failed: connection refused", transient=True)

    with capture_logs() as logs:
        runner.run("push", broken)
        runner.run("push", broken)
    failed = [e for e in logs if e["event"] == "push_failed"]
    assert len(failed) == 2  # one per failed run
    assert all(e["error_type"] == "StoreError" for e in failed)
    assert runner.metrics.job_runs.labels("push", "failed")._value.get() == 2
    runner.run("push", lambda: None)
    assert runner.metrics.job_runs.labels("push", "succeeded")._value.get() == 1
    _code, body = runner.health.report()
    assert not any(r.startswith("database") for r in body["reasons"])


def test_a_job_that_logged_its_own_failure_is_not_logged_twice(
    runner: JobRunner, engine: Engine
) -> None:
    def failing_run() -> None:  # what pull and push do: a failed sync_runs row, then raise
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO amocrm.sync_runs (kind, status, finished_at, error) "
                "VALUES ('pull', 'failed', now(), 'boom')"
            ))  # fmt: skip
        raise RuntimeError("boom")

    with capture_logs() as logs:
        runner.run("pull", failing_run)
    assert [e for e in logs if e["event"] == "pull_failed"] == []
    assert runner.metrics.job_runs.labels("pull", "failed")._value.get() == 1


def test_a_run_that_logged_its_failure_but_could_not_record_it_is_not_logged_twice(
    runner: JobRunner,
) -> None:
    def push_in_an_outage() -> None:  # push_failed said it; the run row could not be marked
        error = StoreError("PostgreSQL at db failed: connection refused", transient=True)
        mark_logged(error)
        raise error

    with capture_logs() as logs:
        runner.run("push", push_in_an_outage)
    assert [e for e in logs if e["event"] == "push_failed"] == []
    assert runner.metrics.job_runs.labels("push", "failed")._value.get() == 1
    _code, body = runner.health.report()
    assert any(r.startswith("database_unavailable") for r in body["reasons"])


def test_an_ip_block_halts_every_amocrm_job(runner: JobRunner) -> None:
    calls: list[str] = []

    def blocked() -> None:
        raise AmoBlockedError("amoCRM blocked this IP", method="GET", url="/x", status=403)

    runner.health.set_role("leader")
    with capture_logs() as logs:
        runner.run("pull", blocked)
        runner.run("push", lambda: calls.append("push"))
    assert calls == []
    assert "sync_halted" in [e["event"] for e in logs]
    code, body = runner.health.report()
    assert code == 503
    assert any(r.startswith("amocrm_ip_blocked") for r in body["reasons"])


def test_never_two_jobs_at_once(runner: JobRunner) -> None:
    inside = threading.Event()
    release = threading.Event()
    overlap: list[set[str]] = []

    def slow() -> None:
        inside.set()
        release.wait(5)

    worker = threading.Thread(target=runner.run, args=("full", slow))
    worker.start()
    assert inside.wait(5)
    overlap.append(runner.running())
    assert not runner.wait_idle(0.05)
    release.set()
    worker.join(5)
    assert overlap == [{"full"}]
    assert runner.wait_idle(1)


def test_a_job_still_asking_its_guard_when_the_stop_comes_is_waited_for(engine: Engine) -> None:
    """The guard (is the leader lock still ours?) asks the database: a job that passed the
    stop check and is asking counts as running, or the stop could return while it is about to
    use the engine."""
    asking, answer = threading.Event(), threading.Event()
    ran: list[str] = []

    def guard() -> bool:
        asking.set()
        answer.wait(10)
        return True

    runner = JobRunner(engine, Health(poll_interval_s=1), Metrics(), guard)
    worker = threading.Thread(target=runner.run, args=("push", lambda: ran.append("push")))
    worker.start()
    try:
        assert asking.wait(10)
        runner.stopping.set()
        assert not runner.wait_idle(0)
    finally:
        answer.set()
        worker.join(10)
    assert runner.wait_idle(0)
    runner.run("pull", lambda: ran.append("pull"))  # after the stop nothing starts
    assert ran == ["push"]


def test_status_reports_runs_requests_and_leader(db_config: DatabaseConfig, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO amocrm.sync_runs (kind, status, finished_at, fetched, upserted) "
            "VALUES ('full', 'succeeded', now(), 10, 10), ('push', 'failed', now(), 0, 0)"
        ))  # fmt: skip
        request_id = add_request(conn)
    config = Config(database=db_config)
    with engine.begin() as conn:
        data = gather(conn, config)
    assert data["daemon"] == {"running": False}
    assert data["last_runs"]["full"]["upserted"] == 10
    assert data["last_success"].keys() == {"full"}
    assert data["pending_requests"] == 1
    assert data["lag_s"] is not None
    text = render(data)
    assert "not running" in text
    assert "1 resync request(s)" in text
    with engine.connect() as conn:
        assert queries.fetch_request(conn, request_id)["status"] == "pending"  # type: ignore[index]


def test_bi_role_reads_everything_but_tokens_and_writes_nothing(
    engine: Engine, reader_role: str
) -> None:
    with engine.begin() as conn:
        granted = grant_reader(conn, "amocrm", reader_role)
        again = grant_reader(conn, "amocrm", reader_role)  # idempotent
    assert "contacts" in granted
    assert "contacts_flat" in granted  # views too
    assert "sync_state" not in granted
    assert again == granted
    with engine.connect() as conn:
        conn.execute(sa.text(f"SET ROLE {reader_role}"))
        conn.execute(sa.text("SET default_transaction_read_only = on"))
        assert conn.scalar(sa.text("SELECT count(*) FROM amocrm.contacts")) == 0
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT * FROM amocrm.sync_state"))
    with engine.connect() as conn:
        conn.execute(sa.text(f"SET ROLE {reader_role}"))
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("INSERT INTO amocrm.sync_requests (kind) VALUES ('full')"))


def test_resync_without_a_daemon_runs_here(db_config: DatabaseConfig, engine: Engine) -> None:
    with running(contacts=30) as (emulator, url):
        config = Config(database=db_config, sync=SyncConfig(pull_workers=2))
        config = replace(config, amocrm=replace(config.amocrm, base_url=url))
        outcome = resync(config, engine, lambda: client_for(emulator, url))
    assert outcome.ran_here
    assert outcome.request is not None
    assert outcome.request["status"] == "done"
    with engine.connect() as conn:
        run = conn.execute(
            sa.text("SELECT kind, status, upserted FROM amocrm.sync_runs WHERE id = :i"),
            {"i": outcome.request["run_id"]},
        ).one()
        stored = conn.scalar(sa.text("SELECT count(*) FROM amocrm.contacts"))
        assert queries.count_pending_requests(conn) == 0
    assert (run.kind, run.status) == ("full", "succeeded")
    assert stored == run.upserted > 25  # 30 seeded, ~1% of them in amoCRM's trash


def test_resync_beside_a_daemon_only_queues(db_config: DatabaseConfig, engine: Engine) -> None:
    daemon_lock = LeaderLock(create_engine(db_config), "amocrm")
    assert daemon_lock.try_acquire()
    try:
        outcome = resync(Config(database=db_config), engine, _no_client)
    finally:
        daemon_lock.release()
    assert not outcome.ran_here
    assert outcome.leader == holder_name()
    with engine.connect() as conn:
        assert queries.count_pending_requests(conn) == 1


def test_resync_beside_a_halted_daemon_says_so_and_does_not_wait(
    db_config: DatabaseConfig, engine: Engine, runner: JobRunner
) -> None:
    def blocked() -> None:
        raise AmoBlockedError("amoCRM blocked this IP", method="GET", url="/x", status=403)

    def no_wait(seconds: float) -> None:
        raise AssertionError("a halted daemon serves no request: nothing to wait for")

    daemon_lock = LeaderLock(create_engine(db_config), "amocrm")
    assert daemon_lock.try_acquire()
    try:
        runner.health.set_role("leader")
        runner.run("pull", blocked)  # the daemon halts
        outcome = resync(Config(database=db_config), engine, _no_client, wait_s=60, sleep=no_wait)
    finally:
        daemon_lock.release()
    assert (outcome.ran_here, outcome.leader) == (False, holder_name())
    assert outcome.halted is not None
    assert outcome.halted["reason"].startswith("amoCRM blocked this IP")
    with engine.connect() as conn:
        assert queries.count_pending_requests(conn) == 1  # queued for the restarted daemon


def test_a_halt_recorded_by_a_gone_daemon_is_not_believed(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with engine.begin() as conn:  # a halted daemon killed; another process leads now
        mark_halted(conn, "amosync-leader gone:1", "amoCRM blocked this IP", datetime.now(UTC))
    daemon_lock = LeaderLock(create_engine(db_config), "amocrm")
    assert daemon_lock.try_acquire()
    try:
        outcome = resync(Config(database=db_config), engine, _no_client)
    finally:
        daemon_lock.release()
    assert outcome.halted is None


def _no_client() -> object:
    raise AssertionError("a queued resync must not talk to amoCRM")


def test_prune_keeps_recent_history_and_the_last_success_of_each_kind(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO amocrm.sync_runs (kind, status, started_at, finished_at) VALUES "
                "('pull', 'succeeded', now() - interval '90 days', now() - interval '90 days'), "
                "('pull', 'failed', now() - interval '80 days', now() - interval '80 days'), "
                "('push', 'succeeded', now() - interval '70 days', now() - interval '70 days'), "
                "('push', 'succeeded', now() - interval '60 days', now() - interval '60 days'), "
                "('pull', 'succeeded', now() - interval '1 day', now() - interval '1 day'), "
                "('full', 'running', now() - interval '50 days', NULL)"
            )
        )
        conn.execute(sa.text(
            "INSERT INTO amocrm.sync_requests (kind, status, requested_at) VALUES "
            "('full', 'done', now() - interval '40 days'), ('full', 'pending', now() - interval "
            "'40 days'), ('full', 'done', now())"
        ))  # fmt: skip
        runs, requests = queries.prune_history(conn, 30)
    assert (runs, requests) == (3, 1)
    with engine.connect() as conn:
        left = conn.execute(sa.text(
            "SELECT kind, status, extract(day FROM now() - started_at)::int AS age "
            "FROM amocrm.sync_runs ORDER BY started_at"
        )).all()  # fmt: skip
        statuses = conn.scalars(
            sa.text("SELECT status FROM amocrm.sync_requests ORDER BY id")
        ).all()
    assert [tuple(r) for r in left] == [
        ("push", "succeeded", 60),  # the last good push, however old
        ("full", "running", 50),  # a run in progress is never touched
        ("pull", "succeeded", 1),
    ]
    assert statuses == ["pending", "done"]
