"""Moving a scheduled job's next run, the one way the daemon does it.

Three callers bring a job forward (a push announced by NOTIFY, a pull a webhook asked for, a
subscription check a doubtful hook asked for); all of them may race the scheduler's shutdown,
where the job is gone and APScheduler raises `JobLookupError`. That is not an error then: the
daemon is stopping and the run it asked for would not happen anyway.
"""

from __future__ import annotations

from datetime import datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler


def run_job_at(
    scheduler: BaseScheduler, job_id: str, when: datetime, *, now: datetime | None = None
) -> bool:
    """Make `job_id` run next at `when`; False when there is no such job (shutting down, or
    never added). Given `now`, a job already due between `now` and `when` is left alone: it
    runs sooner anyway."""
    try:
        if now is not None:
            job = scheduler.get_job(job_id)
            if job is None:
                return False
            if job.next_run_time is not None and now <= job.next_run_time <= when:
                return True
        scheduler.modify_job(job_id, next_run_time=when)
    except JobLookupError:
        return False
    return True
