"""The daemon's main loop: stand by, take the leader lock, lead until it is lost or `stop`.

A standby tries `pg_try_advisory_lock` every ≤ poll/2 (at most `STANDBY_RETRY_MAX_S`). The
leader starts the scheduler's jobs (`sync.daemon.schedule`), the debounce of local edits
(`PushSoon`), the LISTEN thread (requests, local changes, a standby's hooks) and, with webhooks,
the per-leadership part of `DaemonHooks`; every second, and before every job, it checks that
the lock is still held. A lost lock stops leading at once (no new job; /healthz and the metric
stop saying leader); a stop gives the running job `daemon.shutdown_timeout_s` to finish, and
waits as long for a look at `sync_requests` (or a prune) under way: none of them still uses the
engine once the leadership is released. A stop while a lost leadership's job is still running
gives it the same `daemon.shutdown_timeout_s` from then on (not as long as the job takes).
Everything it runs on comes in as `Parts`, so tests build one without `amosync run`
(`sync.daemon.run` builds them for the process).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.clock import Clock
from sync.config import Config
from sync.daemon.debounce import Debounce
from sync.daemon.health import Health
from sync.daemon.metrics import Metrics
from sync.daemon.schedule import (
    JobRunner,
    Jobs,
    PushSoon,
    build_scheduler,
    describe_jobs,
    quiet_apscheduler,
    request_full,
)
from sync.daemon.webhooks.daemon_hooks import DaemonHooks
from sync.db import status as queries
from sync.db.capture import changes_channel, notify_channel
from sync.db.diag import error_line
from sync.db.engine import probe
from sync.db.halt import clear_halted, record_halt
from sync.db.hooks import hooks_channel
from sync.db.listen import Listener
from sync.db.locks import LeaderLock, holder_name
from sync.db.runs import RunStore
from sync.logs import get_logger
from sync.pull.memo import PollMemo

log = get_logger("sync.daemon")

LOCK_CHECK_S = 1.0
PROBE_S = 3.0  # how often a daemon waiting for a job of a lost leadership probes PostgreSQL
STOP_CHECK_S = 0.25  # how soon a wait for such a job notices a stop
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
    hooks: DaemonHooks | None = None  # with `webhooks.enabled`
    memo: PollMemo | None = None  # the incremental pulls' memo (a hook may ask for the events)


class Daemon:
    """Leader election plus the leader's scheduler; `run` returns once `stop` is set."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.config = parts.config
        self.health = parts.health
        self.lock = LeaderLock(parts.engine, parts.config.database.schema)
        self.runner = JobRunner(parts.engine, parts.health, parts.metrics, self._still_leading)
        self._scheduler: BackgroundScheduler | None = None
        self._database_down = False
        self._lost = threading.Event()  # the leader lock was lost: stop leading
        self._loss = threading.Lock()

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
            with self.health.awaiting_database("the leader lock"):
                got = self.lock.try_acquire()
        except SQLAlchemyError as exc:
            reason = error_line(exc)
            self.health.database_failed(reason)
            if not self._database_down:  # once per outage, not on every retry
                log.warning("leader_lock_unavailable", error=reason)
            self._database_down = True
            return False
        if self._database_down:
            log.info("leader_lock_available")
        self._database_down = False
        self.health.database_ok()
        return got

    def _lead(self, stop: threading.Event) -> bool:
        schema = self.config.database.schema
        log.info("leader_elected", schema=schema, holder=holder_name())
        if self.health.halted:  # leading again after a blip: `amosync resync` must know still
            record_halt(
                self.parts.engine, "amoCRM blocked this IP (403); restart after support lifts it"
            )
        else:
            self._clear_halt()  # a halt another (earlier) leader recorded describes no one now
        self.runner.stopping.clear()
        self._lost.clear()
        prune = self._prune if self.config.daemon.keep_runs_days else None
        push_soon = PushSoon(self.runner, self.parts.clock.now)
        hooks, jobs, pull_soon = self.parts.hooks, self.parts.jobs, None
        if hooks is not None:
            pull_soon = hooks.pull_soon(self.runner.running, self.parts.memo)
            jobs = replace(jobs, pull=pull_soon.observe(jobs.pull))
        scheduler = build_scheduler(
            self.config, jobs, self.runner, self._check_requests, self.parts.clock,
            prune=prune, push_soon=push_soon, pull_soon=pull_soon,
        )  # fmt: skip
        self._scheduler = scheduler
        if hooks is not None:
            hooks.lead(scheduler, self.parts.clock.now())
        scheduler.start()
        debounce = Debounce(push_soon.want, quiet_s=self.config.sync.push_debounce_s,
                            max_s=self.config.sync.push_debounce_max_s)  # fmt: skip
        debounce.start()
        listener = self._listener(debounce, push_soon)
        listener.start()
        self.health.set_role("leader")
        self.parts.metrics.leader.set(1)
        log.info("scheduler_started", jobs=describe_jobs(scheduler))
        try:
            while not stop.wait(LOCK_CHECK_S):
                self.health.beat()
                if self._lost.is_set() or not self._still_leading():
                    break
                self.health.database_ok()  # the lock session answered: PostgreSQL is up
                if hooks is not None:
                    hooks.tick()
        finally:
            self.runner.stopping.set()  # no job starts from now (the listener takes ~1 s to end)
            listener.close()
            debounce.close()
            if hooks is not None:
                hooks.stop_leading()
            clean = self._stop_leading(scheduler, stop)
        return clean

    def _listener(self, debounce: Debounce, push_soon: PushSoon) -> Listener:
        """LISTEN for requests (a full resync at once) and local edits (debounced push); after a
        lost connection, push once and look for requests: their notifications may be lost."""
        schema = self.config.database.schema

        hooks = self.parts.hooks

        def catch_up() -> None:
            push_soon.want()
            self._check_requests()
            if hooks is not None:
                hooks.caught_up()

        handlers = {notify_channel(schema): self._check_requests,
                    changes_channel(schema): debounce.note}  # fmt: skip
        payloads = {hooks_channel(schema): hooks.forwarded} if hooks is not None else None
        return Listener(self.parts.engine, handlers, on_reconnect=catch_up, payloads=payloads)

    def _stop_leading(self, scheduler: BackgroundScheduler, stop: threading.Event) -> bool:
        self.runner.stopping.set()
        scheduler.shutdown(wait=False)
        self._scheduler = None
        running = self.runner.running()
        clean = self._wait_idle(stop)
        if not clean:
            note = "its open transaction is rolled back as the process exits"
            waited = self.config.daemon.shutdown_timeout_s
            log.warning("job_abandoned", jobs=sorted(running), waited_s=waited, note=note)
            if "full_requested" in running:
                self._put_back_requests()
        self.lock.release()
        self.parts.metrics.leader.set(0)
        self.health.set_role("standby")
        log.info("leadership_released", schema=self.config.database.schema)
        return clean

    def _clear_halt(self) -> None:
        try:
            with self.parts.engine.begin() as conn:
                clear_halted(conn)
        except SQLAlchemyError as exc:  # a reader trusts the row only for its holder anyway
            log.debug("halt_not_cleared", error=error_line(exc))

    def _put_back_requests(self) -> None:
        """The requested full resync was abandoned: its request, claimed (`running`) in a
        transaction of its own, would stay `running` once the process exits, so it is `pending`
        again now, before the leader lock goes. Every `running` request is that job's: requests
        are served only under the pull lock, which the abandoned job still holds, and only by
        the leader. If the job finishes meanwhile, it closes the request as usual."""
        try:
            with self.parts.engine.begin() as conn:
                count = RunStore(self.config.database.schema).reopen_requests(conn)
        except SQLAlchemyError as exc:
            log.warning("request_put_back_failed", error=error_line(exc),
                        note="the next leader puts it back before serving requests")  # fmt: skip
            return
        if count:
            log.info("request_put_back", count=count, reason="stopping: the next run serves it")

    # --- leadership ----------------------------------------------------------------------------

    def _still_leading(self) -> bool:
        """Asked before every job and every second: is the leader lock still ours? If not, stop
        leading at once (see `_lose_leadership`)."""
        with self.health.awaiting_database("the leader lock's check"):
            if self.lock.alive():
                return True
        self._lose_leadership()
        return False

    def _lose_leadership(self) -> None:
        """No job starts any more, /healthz and the metric stop saying leader now (not once the
        running job ends), and `leader_lock_lost` is logged once. A job still running cannot
        write to amoCRM twice: push checks its own lock before every write attempt."""
        with self._loss:
            if self._lost.is_set() or self.runner.stopping.is_set():
                return  # already lost, or a deliberate stop released the lock
            self._lost.set()
            self.runner.stopping.set()
        reason = self.lock.lost or "the lock session ended"
        self.parts.metrics.leader.set(0)
        self.health.leadership_lost(reason)
        log.warning("leader_lock_lost", schema=self.config.database.schema, error=reason)
        self._probe()

    def _probe(self) -> None:
        """Tell /healthz whether PostgreSQL answers now."""
        with self.health.awaiting_database("a probe"):
            failure = probe(self.parts.engine)
        if failure is None:
            self.health.database_ok()
        else:
            self.health.database_failed(failure)

    def _wait_idle(self, stop: threading.Event) -> bool:
        """Wait for the running job, beating and probing the database: as long as it takes
        after a lost leadership, `daemon.shutdown_timeout_s` once `stop` is set (also when it
        is set during the wait); False if that passed first."""
        deadline: float | None = None
        probed = time.monotonic()
        while True:
            if deadline is None and stop.is_set():
                deadline = time.monotonic() + self.config.daemon.shutdown_timeout_s
            left = STOP_CHECK_S if deadline is None else deadline - time.monotonic()
            if self.runner.wait_idle(max(0.0, min(left, STOP_CHECK_S))):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.health.beat()
            if time.monotonic() - probed >= PROBE_S:
                self._probe()
                probed = time.monotonic()

    def _prune(self) -> None:
        """The `prune` job: keep `daemon.keep_runs_days` of run and request history."""
        self.runner.errand(self._prune_history)

    def _prune_history(self) -> None:
        if not self._still_leading():
            return
        try:
            with self.parts.engine.begin() as conn:
                runs, requests = queries.prune_history(conn, self.config.daemon.keep_runs_days)
        except SQLAlchemyError as exc:
            log.warning("prune_failed", error=error_line(exc))
            return
        if runs or requests:
            log.info("history_pruned", runs=runs, requests=requests)

    # --- sync_requests -------------------------------------------------------------------------

    def _check_requests(self) -> None:
        """The `requests` job: a pending request queues a one-off full resync. Also called by
        the listener; an errand of the runner, so a stop waits for a check under way."""
        self.runner.errand(self._look_for_requests)

    def _look_for_requests(self) -> None:
        try:
            with self.parts.engine.connect() as conn:
                pending = queries.count_pending_requests(conn)
        except SQLAlchemyError as exc:
            # every few seconds during an outage; the jobs' own *_failed events report it
            log.debug("requests_check_failed", error=error_line(exc))
            return
        scheduler = self._scheduler
        if pending and scheduler is not None and not self.runner.stopping.is_set():
            request_full(scheduler, self.runner, self.parts.jobs.requested)
