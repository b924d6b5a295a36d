"""A full disk is named as what it is: PostgreSQL's SQLSTATE 53100 or this process's ENOSPC,
however deep in the cause chain, in the error, in /healthz and in the job's log event."""

from __future__ import annotations

import errno

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from sync.config import DatabaseConfig, Secret
from sync.daemon.health import Health
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import JobRunner
from sync.db.engine import store_errors
from sync.errors import DiskFullError, disk_full

PG_MESSAGE = 'could not extend file "base/16384/16385": No space left on device'


def _driver_error() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when PostgreSQL answers 53100 disk_full."""
    orig = psycopg.errors.DiskFull(PG_MESSAGE)
    return sa.exc.OperationalError("INSERT INTO contacts …", {"email": "a@b.c"}, orig)


def test_sqlstate_53100_is_disk_full_with_postgresqls_line_and_nothing_else() -> None:
    message = disk_full(_driver_error())
    assert message == f"disk full: PostgreSQL could not write: {PG_MESSAGE}"
    assert "INSERT" not in message


def test_enospc_of_this_process_is_disk_full() -> None:
    error = OSError(errno.ENOSPC, "No space left on device", "/var/log/amosync.log")
    assert disk_full(error) == "disk full: No space left on device: /var/log/amosync.log"


def test_a_disk_full_cause_is_found_through_wrapping() -> None:
    wrapped = RuntimeError("page store failed")
    wrapped.__cause__ = _driver_error()
    assert (disk_full(wrapped) or "").startswith("disk full: PostgreSQL could not write: ")


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EACCES, "Permission denied"),
        psycopg.errors.QueryCanceled("canceling statement due to lock timeout"),
        ValueError("x"),
    ],
)
def test_other_errors_are_not_disk_full(error: BaseException) -> None:
    assert disk_full(error) is None


def test_store_errors_says_disk_full() -> None:
    config = DatabaseConfig(url=Secret("postgresql://u:secret@db/x"), schema="amocrm")
    with pytest.raises(DiskFullError) as caught, store_errors(config):
        raise _driver_error()
    assert str(caught.value) == f"disk full: PostgreSQL could not write: {PG_MESSAGE}"


def test_healthz_reports_disk_full_until_each_kind_that_failed_succeeds() -> None:
    health = Health(poll_interval_s=10)
    health.set_role("leader")
    health.job_succeeded("pull")
    health.job_failed("push", DiskFullError(f"disk full: PostgreSQL could not write: {PG_MESSAGE}"))
    code, body = health.report()
    assert code == 503
    assert body["reasons"] == [f"disk_full: PostgreSQL could not write: {PG_MESSAGE}"]
    health.job_failed("pull", OSError(errno.ENOSPC, "No space left on device"))
    assert health.report()[1]["reasons"] == ["disk_full: No space left on device"]
    health.job_succeeded("pull")  # the pulls write again; the push has not yet
    assert health.report()[1]["reasons"] == [f"disk_full: PostgreSQL could not write: {PG_MESSAGE}"]
    health.job_succeeded("push")
    assert health.report()[0] == 200


def test_a_push_with_nothing_to_send_does_not_clear_a_pulls_full_disk() -> None:
    health = Health(poll_interval_s=10)
    health.set_role("leader")
    health.job_succeeded("pull")
    health.job_failed("pull", DiskFullError(f"disk full: PostgreSQL could not write: {PG_MESSAGE}"))
    health.job_succeeded("push")  # wrote nothing: proves nothing of the disk
    assert health.report()[1]["reasons"] == [f"disk_full: PostgreSQL could not write: {PG_MESSAGE}"]
    health.job_succeeded("full_requested")  # a requested full resync is a pull too
    assert health.report()[0] == 200


def test_a_job_failing_on_a_full_disk_logs_it_once_without_a_traceback() -> None:
    engine = sa.create_engine("sqlite://")  # no sync_runs table: the run counts are unknown
    runner = JobRunner(engine, Health(poll_interval_s=10), Metrics())

    def job() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/spool")

    with capture_logs() as logs:
        runner.run("pull", job)
    failed = [e for e in logs if e["event"] == "pull_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "disk full: No space left on device: /tmp/spool"
    assert "exc_info" not in failed[0]
