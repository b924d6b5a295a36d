"""`run_job_at`: moving a job's next run, a missing job, and a job already due sooner."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sync.daemon.jobs import run_job_at

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)  # jobs get next run times, none runs
    yield scheduler
    scheduler.shutdown(wait=False)


def _job_due_at(scheduler: BackgroundScheduler, when: datetime) -> None:
    scheduler.add_job(lambda: None, IntervalTrigger(hours=1), id="pull", next_run_time=when)


def test_the_job_runs_next_at_the_time_asked(scheduler: BackgroundScheduler) -> None:
    _job_due_at(scheduler, T0 + timedelta(minutes=30))
    assert run_job_at(scheduler, "pull", T0 + timedelta(seconds=5))
    assert scheduler.get_job("pull").next_run_time == T0 + timedelta(seconds=5)


def test_a_missing_job_is_no_error(scheduler: BackgroundScheduler) -> None:
    assert not run_job_at(scheduler, "push", T0)
    assert not run_job_at(scheduler, "push", T0, now=T0)


def test_a_job_due_sooner_is_left_alone_when_now_is_given(scheduler: BackgroundScheduler) -> None:
    sooner = T0 + timedelta(seconds=2)
    _job_due_at(scheduler, sooner)
    assert run_job_at(scheduler, "pull", T0 + timedelta(seconds=10), now=T0)
    assert scheduler.get_job("pull").next_run_time == sooner
    # without `now` the same call moves it
    assert run_job_at(scheduler, "pull", T0 + timedelta(seconds=10))
    assert scheduler.get_job("pull").next_run_time == T0 + timedelta(seconds=10)


def test_a_job_due_before_now_is_moved(scheduler: BackgroundScheduler) -> None:
    _job_due_at(scheduler, T0 - timedelta(seconds=1))
    assert run_job_at(scheduler, "pull", T0 + timedelta(seconds=3), now=T0)
    assert scheduler.get_job("pull").next_run_time == T0 + timedelta(seconds=3)
