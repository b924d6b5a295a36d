"""From webhooks to few, rate-bounded pulls on the leader's scheduler.

    HTTP thread             Inbox.receive(hint)  ── answers 200 at once; no I/O here
    amosync-hooks thread    debounce (0.05 s quiet, ≤ 1 s) → Inbox._flush:
                              leader:  PullSoon.offer(hint)
                              standby: NOTIFY amosync_<schema>_hooks (the leader's listener
                                       feeds it to its own Inbox), with webhooks.last_hook
    PullSoon                drops what is already stored (the announced updated_at ≤ the stored
                            one: the echo of our own push, a hook that arrived while a pull
                            stored that version), then moves the scheduler's `pull` job to the
                            earliest start `Pace` allows; a hint that arrives during a pull makes
                            exactly one more pull after it, if the pull did not store it; a
                            hint that arrives during a push is decided when the push ends (the
                            hook of our own PATCH comes before the push stores its answer).

`Pace` bounds hook-triggered pulls: a pull starts at least `webhooks.min_pull_gap_s` after the
previous one started, twice as long after each failed one (up to a poll interval), so hooks can
never make the daemon spend more than its budget on pulls. A hinted contact is pulled for at most
`MAX_TRIES` times; a deletion or restore makes the pull read amoCRM's events (`PollMemo.
events_soon`). The scheduled polls stay as the safety net; `HookWatch` decides how often they run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from sync.daemon.debounce import Debounce
from sync.daemon.jobs import run_job_at
from sync.daemon.webhooks.hints import Hint
from sync.daemon.webhooks.watch import HookWatch
from sync.logs import get_logger
from sync.pull.memo import PollMemo

log = get_logger("sync.daemon")

MAX_TRIES = 2  # pulls a hinted contact may cause before the polls are left to find it
MAX_CONTACTS = 5000  # hinted contacts checked one by one; more make one blind pull
HOOK_QUIET_S = 0.05  # the debounce of hooks: posts sent together go out together …
HOOK_MAX_S = 1.0  # … and a stream at least this often
LAST_HOOK_EVERY_S = 1.0  # webhooks.last_hook is written at most this often
RETRY_S = 2.0  # a standby that could not forward tries again after this long


# --- pure parts ---------------------------------------------------------------------------------


@dataclass
class Pending:
    """Hints not yet confirmed stored, with how many pulls each has had."""

    max_contacts: int = MAX_CONTACTS
    versions: dict[int, int | None] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    events: bool = False  # a deletion or restore: read the events
    blind: bool = False  # pull, nothing to check first
    _flag_tries: int = 0

    def add(self, hint: Hint) -> None:
        for contact, version in hint.versions.items():
            known = self.versions.get(contact, 0)
            newer = None if known is None or version is None else max(known, version)
            self.versions[contact] = newer
            self.tries[contact] = 0
        self.events |= hint.events
        self.blind |= hint.blind
        if len(self.versions) > self.max_contacts:  # too many to check: pull once, blind
            self.versions.clear()
            self.tries.clear()
            self.blind = True

    def wanted(self) -> bool:
        return bool(self.versions) or self.events or self.blind

    def start(self) -> bool:
        """A pull starts: every pending hint gets one more try; True if it must read events."""
        for contact in self.versions:
            self.tries[contact] += 1
        if self.events or self.blind:
            self._flag_tries += 1
        return self.events

    def settle(self, stored: Mapping[int, int], *, succeeded: bool) -> list[int]:
        """Drop what is stored now (announced version ≤ stored) and what had its tries; returns
        the contacts given up on."""
        given_up = []
        for contact, version in list(self.versions.items()):
            have = stored.get(contact)
            if have is not None and version is not None and have >= version:
                self._drop(contact)
            elif self.tries[contact] >= MAX_TRIES:
                given_up.append(contact)
                self._drop(contact)
        if self._flag_tries and (succeeded or self._flag_tries >= MAX_TRIES):
            self.events = self.blind = False
            self._flag_tries = 0
        return given_up

    def _drop(self, contact: int) -> None:
        del self.versions[contact]
        del self.tries[contact]


@dataclass
class Pace:
    """When the next hook-triggered pull may start (monotonic seconds)."""

    gap_s: float
    max_gap_s: float
    last_start: float | None = None
    failures: int = 0

    def next_start(self, now: float) -> float:
        if self.last_start is None:
            return now
        gap: float = min(self.gap_s * float(2**self.failures), max(self.gap_s, self.max_gap_s))
        return max(now, self.last_start + gap)

    def started(self, now: float) -> None:
        self.last_start = now

    def ended(self, succeeded: bool) -> None:
        self.failures = 0 if succeeded else min(self.failures + 1, 10)


# --- the leader's side --------------------------------------------------------------------------


class PullSoon:
    """Runs the scheduler's `pull` job soon after hooks announced something it has not stored."""

    def __init__(
        self,
        watch: HookWatch,
        pace: Pace,
        stored_versions: Callable[[list[int]], dict[int, int]],
        *,
        running: Callable[[], set[str]],
        memo: PollMemo | None = None,
        on_pull: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
    ) -> None:
        self._watch = watch
        self._pace = pace
        self._stored = stored_versions
        self._running = running
        self._memo = memo
        self._on_pull = on_pull
        self._clock = clock
        self._wall = wall
        self._pending = Pending()
        self._due = False  # the next run of `pull` is a hook-triggered one
        self._hooked = False  # the pull running now was triggered by hooks (one pull at a time)
        self._succeeded = True  # how the latest pull ended
        self._first = True  # no pull has run yet under this leadership
        self._missed = False  # a hook-triggered pull failed since the last scheduled poll
        self.offered = 0  # hints offered, and of those, found stored already (no pull)
        self.stored_already = 0
        self._lock = threading.RLock()
        self._scheduler: BackgroundScheduler | None = None
        self._stopping = threading.Event()

    def attach(self, scheduler: BackgroundScheduler) -> None:
        self._scheduler = scheduler
        scheduler.add_listener(self._ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def close(self) -> None:
        self._stopping.set()

    def offer(self, hint: Hint) -> None:
        """Hooks announced `hint`: pull soon unless it is stored already."""
        with self._lock:
            had = self._pending.wanted()
            self._pending.add(hint)
        wanted = self._consider()
        with self._lock:
            self.offered += 1
            if not wanted and not had:
                self.stored_already += 1

    # --- the pull job, as scheduled --------------------------------------------------------------

    def gate(self, job: Callable[[], None]) -> Callable[[], None]:
        """The scheduled `pull`: a hook-triggered run, or a poll that `HookWatch` lets run."""

        def run() -> None:
            with self._lock:
                hooked, self._due = self._due, False
                if hooked and self._pending.start() and self._memo is not None:
                    self._memo.events_soon()  # the memo belongs to the pull thread: we are on it
            if not hooked and self._watch.skip_poll():
                return
            self._pace.started(self._clock())
            self._hooked = hooked
            if hooked and self._on_pull is not None:
                self._on_pull()
            try:
                job()
            finally:
                self._hooked = False

        run.__name__ = job.__name__
        return run

    def observe(self, pull: Callable[[], Any]) -> Callable[[], Any]:
        """The pull itself (inside the job runner): its outcome feeds `Pace` and `HookWatch`."""

        def run() -> Any:
            started = self._watch.pull_started()
            hooked, first = self._hooked, self._first
            self._hooked = self._first = False
            try:
                report = pull()
            except BaseException:
                self._pace.ended(False)
                self._succeeded = False
                self._missed |= hooked
                raise
            self._pace.ended(True)
            self._succeeded = True
            # evidence of lost hooks? Not from the first pull (it catches up on what changed
            # before we led), nor after a hook-triggered pull failed (the poll stores its edits)
            if not hooked and not first and not self._missed:
                # versions new to the store: not our own PATCHes read back (same version)
                self._watch.poll_stored(started, int(getattr(report, "new_versions", 0) or 0))
            if not hooked:
                self._missed = False
            return report

        return run

    def _ended(self, event: JobExecutionEvent) -> None:
        if event.job_id == "pull":
            self._consider(after_pull=True)
        elif event.job_id == "push":
            self._consider()  # hints held while it ran: its own echoes are stored now

    def _consider(self, *, after_pull: bool = False) -> bool:
        """Drop what is stored; if anything is left, move `pull` to the earliest allowed start
        (a pull running now is followed by one more when it ends: `_ended`). True if a pull is
        wanted."""
        running = self._running()
        if self._stopping.is_set() or "pull" in running:
            return True
        if "push" in running:
            # amoCRM posts the hook of our own PATCH before the push has stored amoCRM's answer:
            # decide when the push ends (`_ended`), once its echoes are stored. A pull moved now
            # would wait for the push anyway (one worker), then delay the next push by a pull.
            with self._lock:
                return self._pending.wanted()
        with self._lock:
            ids = list(self._pending.versions)
            stored = self._check(ids)
            given_up = self._pending.settle(stored, succeeded=self._succeeded or not after_pull)
            if not self._pending.wanted():
                return False
            self._due = True
            start = self._pace.next_start(self._clock())
        if given_up:
            self._missed = True  # a poll may find those: not evidence of lost hooks
            log.debug("webhook_hints_unconfirmed", contacts=len(given_up))
        self._move(start)
        return True

    def _check(self, ids: list[int]) -> dict[int, int]:
        if not ids:
            return {}
        try:
            return self._stored(ids)
        except Exception as exc:  # noqa: BLE001 - unknown means not stored: pull
            log.debug("webhook_check_failed", error=str(exc).splitlines()[0][:200])
            return {}

    def _move(self, start: float) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._stopping.is_set():
            return
        now = self._wall() if self._wall is not None else datetime.now().astimezone()
        when = now + timedelta(seconds=max(0.0, start - self._clock()))
        # a pull already due sooner is left alone (it will be the hook-triggered run)
        run_job_at(scheduler, "pull", when, now=now)


# --- both roles: the HTTP side ------------------------------------------------------------------


class Inbox:
    """Hints from the HTTP handler (and, on the leader, from standbys), debounced, then given to
    the leader's `PullSoon` or forwarded to the leader."""

    def __init__(
        self,
        watch: HookWatch,
        *,
        forward: Callable[[Hint], None],
        record_last_hook: Callable[[float], None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._watch = watch
        self._forward = forward
        self._record = record_last_hook
        self._wall = wall
        self._hint = Hint()
        self._lock = threading.Lock()
        self._deliver: Callable[[Hint], None] | None = None
        self._last_hook_at: float | None = None
        self._recorded = 0.0
        self._debounce = Debounce(self._flush, quiet_s=HOOK_QUIET_S, max_s=HOOK_MAX_S,
                                  name="amosync-hooks")  # fmt: skip
        self._stop = threading.Event()
        self._failing = False  # forwarding failed last time (warned once)

    def start(self) -> None:
        self._debounce.start()

    def close(self) -> None:
        self._stop.set()
        self._debounce.close()

    def lead(self, deliver: Callable[[Hint], None] | None) -> None:
        """The leader gives its `PullSoon.offer`; None when it stops leading."""
        with self._lock:
            self._deliver = deliver

    def receive(self, hint: Hint) -> None:
        """Hook posts announced `hint` (quick: called on the HTTP and listener threads)."""
        self._watch.hook(max(1, hint.posts))
        with self._lock:
            self._hint.merge(hint)
            self._last_hook_at = self._wall()
        self._debounce.note()

    def nudge(self, hint: Hint) -> None:
        """A hint that is no hook (the leader's listener reconnected): pull, but it proves
        nothing about hooks and is no `webhooks.last_hook`."""
        with self._lock:
            self._hint.merge(hint)
        self._debounce.note()

    def _flush(self) -> None:
        with self._lock:
            hint, self._hint = self._hint, Hint()
            deliver, received_at = self._deliver, self._last_hook_at
        self._note_last_hook(received_at)
        if not hint:
            return
        if deliver is not None:
            deliver(hint)
            return
        try:
            self._forward(hint)
        except Exception as exc:  # noqa: BLE001 - keep the hint and try again
            level = log.debug if self._failing else log.warning  # once per outage
            level("webhook_forward_failed", error=str(exc).splitlines()[0][:200],
                  retry_in_s=RETRY_S)  # fmt: skip
            self._failing = True
            with self._lock:
                hint.merge(self._hint)
                self._hint = hint
            if not self._stop.wait(RETRY_S):
                self._debounce.note()
            return
        self._failing = False

    def _note_last_hook(self, received_at: float | None) -> None:
        now = self._wall()
        if received_at is None or now - self._recorded < LAST_HOOK_EVERY_S:
            return
        try:
            self._record(received_at)
        except Exception as exc:  # noqa: BLE001 - status shows it a little late; no harm
            log.debug("webhook_last_hook_failed", error=str(exc).splitlines()[0][:200])
            return
        self._recorded = now
