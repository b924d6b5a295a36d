"""What the daemon knows about its own health: the verdicts /healthz and /livez answer with.

`Health` is fed by the daemon (role changes, job outcomes) and by the amoCRM transport (every
answer or network failure, as it happens), and turns that into the /healthz verdict:

- a **standby** is healthy while it can reach PostgreSQL (it is ready to take over);
- the **leader** is healthy when a pull succeeded within `unhealthy_after_polls` poll intervals
  (a long full resync that keeps storing pages counts as fresh: `StoredPages` says so as each
  page commits; an answer from amoCRM alone does not, a pull whose every page fails to be stored
  is stale however often amoCRM answers), amoCRM is
  reachable (no streak of network errors or 5xx longer than a grace period), authentication
  works, the IP is not blocked and PostgreSQL answers.

A job's failure is cleared by a success of the same kind of job (`kind`: every pull, full resync
included, is one kind; push another): a push with nothing to send succeeds on a full disk, and
must not hide that every pull fails for want of space. amoCRM's problems clear when amoCRM
accepts a request; PostgreSQL being unavailable clears when it answers again.

PostgreSQL "answers" also means it does not keep the main loop waiting: a check of the leader
lock with no answer for `DATABASE_SILENCE_S` (a hung server, a frozen network path: no error
comes) is reported as `database_unavailable` while it lasts.

/healthz answers 200 or 503 with a JSON body that lists every reason; with webhooks on it also
says what `sync.daemon.webhooks.watch` concluded, and answers 200 with status "degraded" (not
down) while hooks are known to be lost: polling covers for them. /livez answers 200 while the
daemon's main loop is turning (for a liveness probe: restarting the process does not help when
amoCRM is down, so liveness must not depend on it). The HTTP server that serves them is
`sync.daemon.server`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.clock import Clock, SystemClock
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoPaymentError,
    LockWaitError,
    StoreError,
    disk_full,
)

PULL_JOBS = frozenset({"pull", "full"})
AMO_GRACE_MAX_S = 15.0  # a failure streak shorter than this (and one poll) is not yet a problem
DATABASE_SILENCE_S = 3.0  # PostgreSQL silent this long (no answer, no error) is unavailable


@dataclass
class _Amo:
    failing_since: float | None = None
    failure: str | None = None
    problem: str | None = None  # auth_failed | ip_blocked | payment_required (from a job)
    detail: str | None = None


@dataclass
class Health:
    """Thread-safe health state of one daemon process."""

    poll_interval_s: float
    unhealthy_after_polls: int = 3
    clock: Clock = field(default_factory=SystemClock)
    role: str = "starting"
    _amo: _Amo = field(default_factory=_Amo)
    _last_pull_ok: float | None = None
    _last_pull_ok_at: datetime | None = None
    _leader_since: float | None = None
    _running: dict[str, float] = field(default_factory=dict)
    _database: str | None = None
    _lock_waits: dict[str, str] = field(default_factory=dict)  # job → who holds the lock
    _disk_full: dict[str, str] = field(default_factory=dict)  # kind → why (latest last)
    _pull_stored: float | None = None  # a pull last committed a page (while it runs: fresh)
    _lost: str | None = None  # the leader lock was lost; the old leadership is winding down
    _awaiting: dict[object, tuple[str, float]] = field(default_factory=dict)  # → (what, since)
    _heartbeat: float | None = None
    _longest_interval: float | None = None  # the longest poll interval since the last good pull
    _webhooks: Callable[[], dict[str, Any]] | None = None  # the webhooks' state (when on)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- fed by the daemon ---------------------------------------------------------------------

    def set_role(self, role: str) -> None:
        with self._lock:
            self.role = role
            self._lost = None
            self._leader_since = self.clock.monotonic() if role == "leader" else None
            if role != "leader":
                self._last_pull_ok = self._pull_stored = None
                self._running.clear()

    def leadership_lost(self, reason: str) -> None:
        """The leader lock is gone: not the leader any more, at once (a job of the lost
        leadership may still be finishing; `set_role` clears this once it has)."""
        with self._lock:
            self.role = "standby"
            self._leader_since = self._last_pull_ok = self._pull_stored = None
            self._lost = reason

    def set_poll_interval(self, seconds: float) -> None:
        """Polls run every `seconds` now (webhooks make it longer while they arrive): a pull is
        stale after `unhealthy_after_polls` of the longest interval since the last good one."""
        with self._lock:
            self.poll_interval_s = seconds
            self._longest_interval = max(self._longest_interval or 0.0, seconds)

    def set_webhooks(self, describe: Callable[[], dict[str, Any]] | None) -> None:
        """Where /healthz reads the webhooks' state (`state`, `reason`, …); "degraded" makes the
        answer 200 "degraded" unless something is failing."""
        with self._lock:
            self._webhooks = describe

    def beat(self) -> None:
        """The main loop is alive (for /livez)."""
        with self._lock:
            self._heartbeat = self.clock.monotonic()

    def database_ok(self) -> None:
        with self._lock:
            self._database = None

    def database_failed(self, reason: str) -> None:
        with self._lock:
            self._database = reason

    @contextmanager
    def awaiting_database(self, what: str) -> Iterator[None]:
        """The main loop waits for PostgreSQL's answer to `what` (the leader lock's check): one
        that has not come after `DATABASE_SILENCE_S` (a hung server or a frozen network path:
        no error, no answer) makes /healthz say the database is unavailable."""
        token = object()
        with self._lock:
            self._awaiting[token] = (what, self.clock.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._awaiting[token]

    def job_started(self, job: str) -> None:
        with self._lock:
            self._running[job] = self.clock.monotonic()

    def job_succeeded(self, job: str) -> None:
        with self._lock:
            self._running.pop(job, None)
            self._database = None
            self._disk_full.pop(kind(job), None)  # only this kind of job proved it can write
            self._lock_waits.pop(job, None)
            if job in PULL_JOBS:
                self._last_pull_ok = self.clock.monotonic()
                self._last_pull_ok_at = self.clock.now()
                self._longest_interval = self.poll_interval_s
            # amoCRM problems clear only when amoCRM accepts a request (`amocrm_answered`): a
            # push with nothing to send succeeds without asking amoCRM anything.

    def job_failed(self, job: str, error: BaseException) -> None:
        with self._lock:
            self._running.pop(job, None)
            problem = _problem_of(error)
            full = disk_full(error)
            if full:
                self._disk_full.pop(kind(job), None)  # re-inserted: the latest is reported
                self._disk_full[kind(job)] = full.removeprefix("disk full: ")
            elif isinstance(error, LockWaitError):  # PostgreSQL is up; another session blocks us
                self._lock_waits[job] = str(error)
            elif isinstance(error, StoreError):
                self._database = str(error)
            elif problem is not None:
                self._amo.problem, self._amo.detail = problem, str(error)

    def pull_stored(self) -> None:
        """A pull committed a page (and its cursor): a long one still makes progress."""
        with self._lock:
            self._pull_stored = self.clock.monotonic()

    # --- fed by the amoCRM transport -----------------------------------------------------------

    def amocrm_answered(self, status: int) -> None:
        with self._lock:
            if status >= 500:
                self._amo_failing(f"HTTP {status}")
                return
            self._amo.failing_since = self._amo.failure = None
            if 200 <= status < 300 and self._amo.problem != "ip_blocked":
                self._amo.problem = self._amo.detail = None

    def amocrm_unreachable(self, error: str) -> None:
        with self._lock:
            self._amo_failing(error)

    def _amo_failing(self, failure: str) -> None:
        if self._amo.failing_since is None:
            self._amo.failing_since = self.clock.monotonic()
        self._amo.failure = failure

    @property
    def halted(self) -> bool:
        """amoCRM blocked this IP: every amoCRM job must stop (api fact sheet §1)."""
        with self._lock:
            return self._amo.problem == "ip_blocked"

    # --- the verdicts --------------------------------------------------------------------------

    def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of /healthz."""
        with self._lock:
            reasons = self._reasons()
            describe = self._webhooks
        hooks = describe() if describe is not None else None
        with self._lock:
            degraded = hooks is not None and hooks.get("state") == "degraded"
            body: dict[str, Any] = {
                "status": "failing" if reasons else "degraded" if degraded else "ok",
                "role": self.role,
                "reasons": reasons,
                "last_pull_succeeded_at": _iso(self._last_pull_ok_at),
                "running_jobs": sorted(self._running),
            }
            if hooks is not None:
                body["webhooks"] = dict(hooks)
            if degraded and hooks is not None:
                body["warnings"] = [f"webhooks_degraded: {hooks.get('reason')}"]
        return (200 if not reasons else 503), body

    def _reasons(self) -> list[str]:
        reasons: list[str] = []
        silent = self._silence()
        if silent:
            reasons.append(f"database_unavailable: {silent}")
        elif self._database:
            reasons.append(f"database_unavailable: {self._database}")
        reasons.extend(f"database_lock_wait: {job} {why}" for job, why in self._lock_waits.items())
        if self._disk_full:  # one reason, the latest failure's words
            reasons.append(f"disk_full: {list(self._disk_full.values())[-1]}")
        if self._lost:
            reasons.append(f"leadership_lost: {self._lost}")
        if self.role in ("standby", "stopping"):
            return reasons
        if self.role != "leader":
            return [*reasons, "starting: not yet leader or standby"]
        reasons.extend(self._amo_reasons())
        stale = self._pull_staleness()
        if stale:
            reasons.append(stale)
        return reasons

    def _silence(self) -> str | None:
        if not self._awaiting:
            return None
        what, since = min(self._awaiting.values(), key=lambda waiting: waiting[1])
        waited = self.clock.monotonic() - since
        if waited < DATABASE_SILENCE_S:
            return None
        return f"no answer from PostgreSQL to {what} for {waited:.0f}s"

    def _amo_reasons(self) -> list[str]:
        reasons = []
        if self._amo.problem:
            reasons.append(f"amocrm_{self._amo.problem}: {self._amo.detail}")
        since = self._amo.failing_since
        if since is not None and self.clock.monotonic() - since >= self._grace():
            seconds = round(self.clock.monotonic() - since)
            reasons.append(f"amocrm_unreachable: {self._amo.failure} for {seconds}s")
        return reasons

    def _pull_staleness(self) -> str | None:
        now = self.clock.monotonic()
        interval = max(self.poll_interval_s, self._longest_interval or 0.0)
        window = interval * self.unhealthy_after_polls
        if self._last_pull_ok is None:
            return "no_successful_pull: none yet since this daemon became leader"
        fresh = self._last_pull_ok
        if self._pull_stored is not None:
            fresh = max(fresh, self._pull_stored)  # a long resync still storing pages
        if now - fresh <= window:
            return None
        return f"pull_stale: no successful pull for {round(now - fresh)}s (limit {window:g}s)"

    def _grace(self) -> float:
        return min(self.poll_interval_s, AMO_GRACE_MAX_S)

    def alive(self, max_silence_s: float) -> bool:
        """/livez: the main loop beat within `max_silence_s`."""
        with self._lock:
            beat = self._heartbeat
        return beat is not None and self.clock.monotonic() - beat <= max_silence_s


class StoredPages:
    """The daemon's pulls' `sync.pull.Progress`: each page a pull stores tells `Health`."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, count: int) -> None:
        self._health.pull_stored()


def kind(job: str) -> str:
    """The kind of work a job does: a failure is cleared by a success of the same kind."""
    return "pull" if job in PULL_JOBS or job == "full_requested" else job


def _problem_of(error: BaseException) -> str | None:
    if isinstance(error, AmoBlockedError):
        return "ip_blocked"
    if isinstance(error, AmoPaymentError):
        return "payment_required"
    if isinstance(error, AmoAuthError):
        return "auth_failed"
    return None  # network errors and 5xx: the transport already tracks the failure streak


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
