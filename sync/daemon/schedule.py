"""The leader's APScheduler 3.x: which jobs run when, and the wrapper that keeps it alive.

Jobs (ids):
  pull            incremental pull every `sync.poll_interval_s`, first run at once; with webhooks,
                  soon after a hook (`webhooks.pull.PullSoon`: the same job, moved), and a
                  scheduled run is skipped while hooks are healthy until
                  `webhooks.poll_interval_s` has passed since the last pull
  push            push of local edits every `sync.push_interval_s`, and soon after a local edit
                  is announced (`PushSoon`: the same job, moved to now)
  full            full resync on `sync.full_resync_cron` (omitted when the cron is empty)
  full_requested  a one-off full resync when `sync_requests` has pending rows
  requests        looks for pending `sync_requests` every `daemon.requests_poll_s`
  prune           hourly: drops sync_runs / sync_requests history older than
                  `daemon.keep_runs_days` (omitted when 0)

Settings, on purpose:
- pull, push and the full resyncs share one executor with **one worker**: they write the same
  tables and spend the same 7 requests/s, so they never overlap; a due job queues behind the
  running one. `requests` has its own worker so a long full resync cannot delay its look-ups.
- `max_instances=1` for every job: never two runs of one job at once (a run due while one is
  running or queued is skipped and counted as `skipped`).
- `coalesce=True`: after a stall (laptop asleep, a long full resync) a backlog of due runs
  collapses into one run, not a burst.
- `misfire_grace_time`: one period for the interval jobs (a later run is due by then anyway);
  an hour for the cron resync (a daemon that was busy or restarting at 03:00 still runs it, a
  daemon that was down all day does not run a stale one at noon).
- The wrapper catches everything: a failed job logs one `<job>_failed` event, updates health and
  metrics, and the scheduler lives on. After a 403 IP block the amoCRM jobs stop running.
- **Push soon after a local edit** (`PushSoon`): the capture trigger NOTIFYs, the leader's
  listener and debounce call `PushSoon.want`, which moves the `push` job's next run to now; the
  one worker, `max_instances=1` and push's own lock all still apply. A run that starts clears the
  mark (it claims every change committed before it); a run that ends (or misses its time) with
  the mark set, because an edit was announced while it ran, is moved to now again. That happens
  from APScheduler's job event, sent after the finished instance is released, so the new run is
  never refused as a second instance. `push_interval_s` stays as the fallback for a missed
  notification.
- A job that failed on a database lock another session holds (`LockWaitError`, after
  `database.lock_timeout_s`; push first retries its records with back-off, see
  `sync.db.lockwait.retrying`) runs again at its next interval (push every 15 s, pull every
  60 s by default), and /healthz names the holder meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sync.clock import Clock
from sync.config import Config
from sync.daemon.health import Health
from sync.daemon.jobs import run_job_at
from sync.daemon.metrics import Metrics
from sync.daemon.webhooks.pull import PullSoon
from sync.db import status as queries
from sync.db.diag import error_line, store_error
from sync.db.halt import record_halt
from sync.db.status import RunRow
from sync.errors import AmoBlockedError, SyncError, disk_full, was_logged
from sync.logs import get_logger
from sync.pull.run import PullBusyError

log = get_logger("sync.daemon")

Job = Callable[[], object]
SYNC_EXECUTOR = "sync"
AMO_JOBS = frozenset({"pull", "push", "full", "full_requested"})
BUSY_RETRY = {  # another pull (`amosync pull`/`resync`) held the pull lock: when this one runs
    "full_requested": "another pull holds the pull lock; the request stays pending and is "
    "tried again within seconds, once that pull ends",
    "pull": "another pull holds the pull lock; this job runs again at its next turn",
}
CRON_MISFIRE_S = 3600


@dataclass(frozen=True)
class Jobs:
    """The work the leader schedules; plain callables, built in `sync.daemon.run`."""

    pull: Job  # incremental pull
    push: Job  # push of pending local changes
    full: Job  # scheduled full resync
    requested: Job  # full resync serving the oldest pending sync_requests row (and older ones)


class JobRunner:
    """Runs one job: never two at once, never raising, always accounted for."""

    def __init__(
        self,
        engine: Engine,
        health: Health,
        metrics: Metrics,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.health = health
        self.metrics = metrics
        self.guard = guard  # the leader lock is still held: asked before every job
        self.stopping = threading.Event()
        self._idle = threading.Condition()
        self._running: set[str] = set()
        self._errands = 0  # errands running

    def wrap(self, name: str, fn: Job) -> Callable[[], None]:
        def run() -> None:
            self.run(name, fn)

        run.__name__ = f"amosync_{name}"
        return run

    def run(self, name: str, fn: Job) -> None:
        # counted as running from before its checks, which use the engine too: once `stopping`
        # is set and `wait_idle` returned, no job is left that could still use it
        with self._idle:
            if self.stopping.is_set():
                return
            self._running.add(name)
        try:
            self._checked(name, fn)
        finally:
            with self._idle:
                self._running.discard(name)
                self._idle.notify_all()

    def _checked(self, name: str, fn: Job) -> None:
        if self._may_run(name):
            self._account(name, fn)
        else:
            self.metrics.job_runs.labels(name, "skipped").inc()

    def _may_run(self, name: str) -> bool:
        if name in AMO_JOBS and self.health.halted:
            return False
        return self.guard is None or self.guard()  # False: no longer the leader, not our job

    def errand(self, fn: Callable[[], None]) -> None:
        """Run `fn`, short work of the leader beside the jobs (the request check, prune), unless
        `stopping`; `wait_idle` waits for it as for a job (the scheduler's own shutdown does
        not), so a leader that stopped leaves nothing behind that still uses the engine."""
        with self._idle:
            if self.stopping.is_set():
                return
            self._errands += 1
        try:
            fn()
        finally:
            with self._idle:
                self._errands -= 1
                self._idle.notify_all()

    def _account(self, name: str, fn: Job) -> None:
        before = self._max_run_id()
        self.health.job_started(name)
        started = time.monotonic()
        error: Exception | None = None
        try:
            fn()
        except DBAPIError as exc:  # escaped the sync.db boundary: still a database failure
            error = store_error(exc)
        except Exception as exc:  # noqa: BLE001 - a failed job must never kill the scheduler
            error = exc
        self.metrics.job_duration.labels(name).observe(time.monotonic() - started)
        runs = self._runs_since(before)
        if runs:
            self.metrics.count_runs(runs)
        if error is None:
            self.health.job_succeeded(name)
            self.metrics.job_runs.labels(name, "succeeded").inc()
        else:
            logged = was_logged(error) or any(r.status == "failed" for r in runs or ())
            self._failed(name, error, logged=logged)

    def _failed(self, name: str, exc: Exception, *, logged: bool) -> None:
        """Account for a failure; log one `<job>_failed` event unless the job already did.

        pull and push log their own `pull_failed` / `push_failed` summary when a run they
        started fails (and mark its sync_runs row failed); a failure before a run started (the
        database down, another pull holding the pull lock) is logged here.
        """
        self.health.job_failed(name, exc)
        self.metrics.job_runs.labels(name, "failed").inc()
        fields: dict[str, Any] = {"error": error_line(exc), "error_type": type(exc).__name__}
        if not logged and isinstance(exc, PullBusyError):  # a CLI pull holds the lock: not an error
            log.warning(f"{name}_busy", retry=BUSY_RETRY.get(name, BUSY_RETRY["pull"]), **fields)
        elif not logged and (disk_full(exc) or isinstance(exc, SyncError)):  # no trace
            log.error(f"{name}_failed", **fields)
        elif not logged:  # a bug: keep the traceback
            log.error(f"{name}_failed", exc_info=exc, **fields)
        if isinstance(exc, AmoBlockedError):
            log.error("sync_halted", reason="amoCRM blocked this IP (403); only its support "
                      "can lift the block; restart amosync afterwards")  # fmt: skip
            record_halt(self.engine, error_line(exc))  # `amosync resync` must not promise a run

    def _max_run_id(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return queries.fetch_max_run_id(conn)
        except SQLAlchemyError:
            return None

    def _runs_since(self, before: int | None) -> list[RunRow] | None:
        if before is None:
            return None
        try:
            with self.engine.connect() as conn:
                return queries.fetch_runs_since(conn, before)
        except SQLAlchemyError:
            log.debug("run_counts_unavailable")
            return None

    def running(self) -> set[str]:
        with self._idle:
            return set(self._running)

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no job or errand runs; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(self._idle_now, timeout=timeout)

    def _idle_now(self) -> bool:
        return not self._running and not self._errands


class PushSoon:
    """Runs the scheduler's `push` job soon after a local edit was announced (see the module
    docstring); `attach` it to the scheduler whose push job it wraps."""

    def __init__(self, runner: JobRunner, now: Callable[[], datetime]) -> None:
        self._runner = runner
        self._now = now
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        self._wanted = False

    def want(self) -> None:
        """A change was announced: push soon (a push running now is followed by another)."""
        with self._lock:
            self._wanted = True
        if "push" not in self._runner.running():
            self._move()

    def wrap(self, job: Callable[[], None]) -> Callable[[], None]:
        """The push job as scheduled: a run that starts covers every change committed so far."""

        def run() -> None:
            with self._lock:
                self._wanted = False
            job()

        run.__name__ = job.__name__
        return run

    def attach(self, scheduler: BackgroundScheduler) -> None:
        self._scheduler = scheduler
        scheduler.add_listener(self._ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    def _ended(self, event: JobExecutionEvent) -> None:
        if event.job_id != "push":
            return
        with self._lock:
            wanted = self._wanted
        if wanted:  # announced while that run was running (or it never ran): once more
            self._move()

    def _move(self) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._runner.stopping.is_set():
            return
        run_job_at(scheduler, "push", self._now())


def build_scheduler(
    config: Config,
    jobs: Jobs,
    runner: JobRunner,
    request_check: Callable[[], object],
    clock: Clock,
    *,
    prune: Callable[[], object] | None = None,
    push_soon: PushSoon | None = None,
    pull_soon: PullSoon | None = None,
) -> BackgroundScheduler:
    """A scheduler (not started) with every job of the leader; with `push_soon`, its push job
    also runs soon after announced local edits; with `pull_soon`, its pull job soon after hooks."""
    scheduler = BackgroundScheduler(
        executors={
            SYNC_EXECUTOR: ThreadPoolExecutor(
                max_workers=1, pool_kwargs={"thread_name_prefix": "amosync-job"}
            ),
            "default": ThreadPoolExecutor(
                max_workers=1, pool_kwargs={"thread_name_prefix": "amosync-req"}
            ),
        },
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    sync = config.sync
    now = clock.now()
    pull = runner.wrap("pull", jobs.pull)
    if pull_soon is not None:
        pull = pull_soon.gate(pull)
        pull_soon.attach(scheduler)
    _interval(scheduler, "pull", pull, sync.poll_interval_s, now)
    push = runner.wrap("push", jobs.push)
    if push_soon is not None:
        push = push_soon.wrap(push)
        push_soon.attach(scheduler)
    _interval(scheduler, "push", push, sync.push_interval_s, now)
    if sync.full_resync_cron:
        scheduler.add_job(
            runner.wrap("full", jobs.full),
            CronTrigger.from_crontab(sync.full_resync_cron),
            id="full",
            executor=SYNC_EXECUTOR,
            misfire_grace_time=CRON_MISFIRE_S,
        )
    period = config.daemon.requests_poll_s
    scheduler.add_job(
        request_check,
        IntervalTrigger(seconds=period),
        id="requests",
        next_run_time=now,
        misfire_grace_time=max(1, int(period)),
    )
    if prune is not None:
        scheduler.add_job(prune, IntervalTrigger(hours=1), id="prune", misfire_grace_time=3600,
                          next_run_time=now + timedelta(minutes=1))  # fmt: skip
    scheduler.add_listener(_skipped(runner.metrics), EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    return scheduler


def _interval(
    scheduler: BackgroundScheduler,
    name: str,
    fn: Callable[[], None],
    period: float,
    first: datetime,
) -> None:
    scheduler.add_job(
        fn,
        IntervalTrigger(seconds=period),
        id=name,
        executor=SYNC_EXECUTOR,
        next_run_time=first,
        misfire_grace_time=max(1, int(period)),
    )


def request_full(scheduler: BackgroundScheduler, runner: JobRunner, requested: Job) -> None:
    """Queue a one-off full resync now (a no-op if one is already queued or running)."""
    if scheduler.get_job("full_requested") is not None or "full_requested" in runner.running():
        return
    scheduler.add_job(
        runner.wrap("full_requested", requested),
        id="full_requested",
        executor=SYNC_EXECUTOR,
        misfire_grace_time=None,
        replace_existing=True,
    )


def _skipped(metrics: Metrics) -> Callable[[JobExecutionEvent], None]:
    def listener(event: JobExecutionEvent) -> None:
        metrics.job_runs.labels(event.job_id, "skipped").inc()
        log.debug("job_skipped", job=event.job_id, missed=event.code == EVENT_JOB_MISSED)

    return listener


def quiet_apscheduler() -> None:
    """APScheduler warns on every skipped run; we count those in metrics instead."""
    import logging

    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def describe_jobs(scheduler: BackgroundScheduler) -> Mapping[str, str | None]:
    return {
        job.id: job.next_run_time.isoformat() if job.next_run_time else None
        for job in scheduler.get_jobs()
    }
