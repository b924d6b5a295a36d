"""A requested full resync (or a pull) that finds another pull holding the pull lock (an
`amosync pull` from the CLI) is tried again: the daemon says so in a warning, not an error."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from sync.daemon.health import Health
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import JobRunner
from sync.db.runs import PULL_BUSY
from sync.pull import PullBusyError


@pytest.mark.parametrize("job", ["full_requested", "pull"])
def test_a_pull_lock_held_by_another_pull_is_a_warning_that_says_it_is_retried(job: str) -> None:
    engine = sa.create_engine("sqlite://")  # no sync_runs table: the run counts are unknown
    runner = JobRunner(engine, Health(poll_interval_s=10), Metrics())

    def busy() -> None:
        raise PullBusyError(PULL_BUSY)

    with capture_logs() as logs:
        runner.run(job, busy)
    assert [e for e in logs if e["log_level"] == "error"] == []
    (line,) = [e for e in logs if e["event"] == f"{job}_busy"]
    assert line["log_level"] == "warning"
    assert line["error_type"] == "PullBusyError"
    assert "again" in line["retry"]
    if job == "full_requested":
        assert "request stays pending" in line["retry"]
