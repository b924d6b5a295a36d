"""The database as a hostile place: another session's locks, errors carrying personal data, and
what the BI role may read (issue 11 items 6 and 8)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from structlog.testing import capture_logs

from sync.clock import SystemClock
from sync.config import Config, DatabaseConfig, Secret
from sync.daemon.health import Health
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import JobRunner
from sync.db.engine import create_engine
from sync.errors import LockWaitError
from sync.push import run_push
from sync.status import gather, render
from tests.integration.pull_helpers import assert_converged, emulated, make_config, pull
from tests.integration.push_env import push_env


def libpq_url(db: DatabaseConfig) -> str:
    url = make_url(db.url.reveal()).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def analyst(db: DatabaseConfig, statement: str) -> Iterator[psycopg.Connection]:
    """A second session, as psql would be, holding what `statement` takes until the block ends."""
    with psycopg.connect(libpq_url(db), application_name="psql") as conn:
        conn.execute(statement)  # opens a transaction and leaves it idle, locks held
        yield conn
        conn.rollback()


@pytest.fixture
def impatient(db_config: DatabaseConfig) -> Iterator[tuple[DatabaseConfig, Engine]]:
    db = replace(db_config, lock_timeout_s=1)
    engine = create_engine(db)
    yield db, engine
    engine.dispose()


def last_run(engine: Engine) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, error FROM amocrm.sync_runs ORDER BY id DESC LIMIT 1")
        ).one()
    return row.status, row.error


def test_a_pull_behind_a_table_lock_names_the_holder_then_succeeds(
    impatient: tuple[DatabaseConfig, Engine],
) -> None:
    db, engine = impatient
    with emulated(contacts=20) as (emulator, url):
        config = make_config(db, url, emulator.long_lived_token)
        with analyst(db, "LOCK TABLE amocrm.contacts IN SHARE MODE") as session:
            pid = session.info.backend_pid
            with capture_logs() as logs, pytest.raises(LockWaitError) as caught:
                pull(config, engine, emulator)
        message = str(caught.value)
        assert message.startswith(
            f"waiting for a lock on amocrm.contacts held by pid {pid} "
            "(psql, idle in transaction for "
        )
        assert "\n" not in message
        assert caught.value.transient
        assert last_run(engine) == ("failed", message)
        waits = [e for e in logs if e["event"] == "db_lock_wait"]
        assert [(e["pid"], e["application_name"]) for e in waits][:1] == [(pid, "psql")]
        # the next run finishes the job: a full resync again, or (when the failed one had
        # already settled some windows, e.g. empty ones, before the lock stopped its first page)
        # a run that resumes the windows it left (docs/pull.md, "the cursor")
        assert pull(config, engine, emulator).kind in ("full", "pull")
        assert last_run(engine) == ("succeeded", None)
        assert_converged(engine, emulator)


def test_a_push_behind_a_row_lock_is_reported_by_the_job_health_and_status(
    impatient: tuple[DatabaseConfig, Engine],
) -> None:
    db, engine = impatient
    runner = JobRunner(engine, Health(poll_interval_s=60), Metrics())
    runner.health.set_role("leader")
    with push_env(db, engine) as env:
        contact_id = env.mirror()[0]
        env.sql("UPDATE contacts SET name = 'Locked Ann' WHERE id = :id", id=contact_id)
        row_lock = f"SELECT * FROM amocrm.contacts WHERE id = {contact_id} FOR UPDATE"
        with analyst(db, row_lock) as session, capture_logs() as logs:
            runner.run("push", lambda: run_push(env.config, engine, env.client))
            pid = session.info.backend_pid
        failed = [e for e in logs if e["event"] == "push_failed"]
        assert failed
        assert all("exc_info" not in e for e in failed)
        held_by = f"waiting for a lock on amocrm.contacts held by pid {pid} (psql, "
        assert failed[0]["error"].startswith(held_by)
        reasons = runner.health.report()[1]["reasons"]
        assert next(r for r in reasons if r.startswith("database_lock_wait")).startswith(
            f"database_lock_wait: push {held_by}"
        )
        with engine.begin() as conn:
            shown = gather(conn, Config(database=db))
        assert shown["last_lock_wait"]["error"].startswith(held_by)
        assert f"lock wait  push run {shown['last_lock_wait']['run_id']}" in render(shown)
        runner.run("push", lambda: run_push(env.config, engine, env.client))
        assert env.row(contact_id)["sync_status"] == "synced"
        assert env.remote(contact_id)["name"] == "Locked Ann"
        assert not any(r.startswith("database") for r in runner.health.report()[1]["reasons"])
        with engine.begin() as conn:  # a later push succeeded: the wait is over
            shown = gather(conn, Config(database=db))
        assert shown["last_lock_wait"] is None
        assert "lock wait" not in render(shown)


def test_a_driver_error_escaping_a_job_is_one_line_without_a_traceback(engine: Engine) -> None:
    gone = create_engine(DatabaseConfig(url=Secret("postgresql://amosync:hunter2@127.0.0.1:1/x")))
    runner = JobRunner(engine, Health(poll_interval_s=60), Metrics())
    with capture_logs() as logs:
        runner.run("push", gone.connect)
    failed = [e for e in logs if e["event"] == "push_failed"]
    assert len(failed) == 1
    assert "exc_info" not in failed[0]
    assert failed[0]["error_type"] == "StoreError"
    assert failed[0]["error"].startswith("PostgreSQL failed: ")
    assert "\n" not in failed[0]["error"]
    assert "hunter2" not in repr(logs)
    reasons = runner.health.report()[1]["reasons"]
    assert reasons[0].startswith("database_unavailable: PostgreSQL failed: ")


class _AnalystLetsGo(SystemClock):
    """push's back-off sleep: the analyst commits during the second one (no real waiting)."""

    def __init__(self, session: psycopg.Connection) -> None:
        self.session, self.sleeps = session, []  # type: ignore[var-annotated]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) == 2:
            self.session.rollback()


def test_push_records_what_amocrm_accepted_once_the_lock_is_released(
    impatient: tuple[DatabaseConfig, Engine],
) -> None:
    db, engine = impatient
    with push_env(db, engine) as env:
        contact_id = env.mirror()[0]
        env.sql("UPDATE contacts SET name = 'Patient Ann' WHERE id = :id", id=contact_id)
        row_lock = f"SELECT * FROM amocrm.contacts WHERE id = {contact_id} FOR UPDATE"
        with analyst(db, row_lock) as session, capture_logs() as logs:
            clock = _AnalystLetsGo(session)
            report = run_push(env.config, engine, env.client, clock=clock)
        assert (report.updated, clock.sleeps) == (1, [1.0, 2.0])  # backed off, then recorded
        retries = [e for e in logs if e["event"] == "db_lock_wait_retry"]
        assert [e["retry_in_s"] for e in retries] == [1.0, 2.0]
        assert retries[0]["error"].startswith("waiting for a lock on amocrm.contacts held by pid")
        assert env.row(contact_id)["sync_status"] == "synced"
        assert len(env.api("PATCH")) == 1  # sent once; only the record waited
