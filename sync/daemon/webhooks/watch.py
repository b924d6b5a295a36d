"""Are amoCRM's webhooks reaching the daemon? The rule that picks the poll interval.

An idle account sends no hooks, so "no hook lately" alone cannot mean "broken". Three states:

  healthy   a hook arrived within `webhooks.stale_after_s`, amoCRM does not report the
            subscription disabled or missing, and no poll found a change that no hook announced.
            Polls run every `webhooks.poll_interval_s` (by default 0: `sync.poll_interval_s`,
            so a silent loss of every hook costs one poll interval, as without hooks).
  quiet     nothing is known to be wrong, but no hook arrived within `stale_after_s` (an idle
            account, or a daemon that has not received one yet). Polls every `sync.poll_interval_s`;
            /healthz stays "ok".
  degraded  evidence that hooks are lost: amoCRM reports the subscription disabled (more than 100
            failed deliveries in 2 hours) or missing, or a scheduled poll stored contact versions
            new to the database (not our own PATCHes read back) and no hook arrived from
            `announce_grace_s` before that poll until `announce_grace_s` after it. Polls every
            `sync.poll_interval_s`; /healthz answers 200 "degraded".
            A hook that arrives afterwards (and a subscription reported enabled) makes it healthy;
            a hook while the subscription was reported missing or disabled has the leader check
            it again at once (at most every `RECHECK_GAP_S`), not after `check_interval_s`.

Only scheduled polls count as evidence: a hook-triggered pull stores what a hook announced, and
the leader's first pull catches up on what changed while no daemon was listening. Times are
monotonic seconds from an injectable clock (tests drive it by hand).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

HEALTHY, QUIET, DEGRADED = "healthy", "quiet", "degraded"


@dataclass(frozen=True)
class Verdict:
    state: str  # healthy | quiet | degraded
    reason: str | None  # why it is not healthy
    interval_s: float  # the poll interval that applies now


class HookWatch:
    """Thread-safe record of hooks, polls and subscription checks; `verdict` applies the rule."""

    def __init__(
        self,
        *,
        poll_interval_s: float,
        hooks_poll_interval_s: float,
        stale_after_s: float,
        announce_grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.poll_interval_s = poll_interval_s
        self.hooks_poll_interval_s = max(hooks_poll_interval_s, poll_interval_s)
        self.stale_after_s = stale_after_s
        self.grace_s = announce_grace_s
        self.clock = clock
        self.received = 0
        self.last_hook: float | None = None
        self.last_pull: float | None = None  # when the latest pull (of any kind) started
        self._subscription: str | None = None  # enabled | disabled | missing, as last checked
        self._suspect: tuple[float, int] | None = None  # (when, contacts) of an unannounced poll
        self._reported: str | None = None
        self._lock = threading.Lock()

    # --- what happened -------------------------------------------------------------------------

    def hook(self, count: int = 1) -> None:
        """A hook arrived (here, or forwarded by a standby): the path from amoCRM works."""
        with self._lock:
            self.received += count
            self.last_hook = self.clock()
            self._suspect = None

    def pull_started(self) -> float:
        with self._lock:
            self.last_pull = self.clock()
            return self.last_pull

    def poll_stored(self, started: float, contacts: int) -> None:
        """A scheduled (not hook-triggered) poll that began at `started` stored `contacts` new
        versions: unless a hook arrived around it, they were not announced."""
        if contacts <= 0:
            return
        with self._lock:
            if self.last_hook is not None and self.last_hook >= started - self.grace_s:
                return
            if self._suspect is None:
                self._suspect = (self.clock(), contacts)

    def subscription(self, state: str) -> None:
        """What GET /api/v4/webhooks said about this daemon's hook: enabled|disabled|missing."""
        with self._lock:
            self._subscription = state

    def subscription_doubted(self) -> bool:
        """The last check found the hook missing or disabled: a hook arriving now says that
        changed (an operator registered it after the check), so it is worth checking again."""
        with self._lock:
            return self._subscription in ("missing", "disabled")

    # --- the verdict ---------------------------------------------------------------------------

    def verdict(self) -> Verdict:
        with self._lock:
            return self._verdict(self.clock())

    def _verdict(self, now: float) -> Verdict:
        reason = self._lost(now)
        if reason is not None:
            return Verdict(DEGRADED, reason, self.poll_interval_s)
        if self.last_hook is None:
            return Verdict(QUIET, "no hook received yet", self.poll_interval_s)
        age = now - self.last_hook
        if age > self.stale_after_s:
            return Verdict(QUIET, f"no hook for {age:.0f} s", self.poll_interval_s)
        return Verdict(HEALTHY, None, self.hooks_poll_interval_s)

    def _lost(self, now: float) -> str | None:
        if self._subscription == "disabled":
            return "amoCRM reports the webhook disabled (too many failed deliveries)"
        if self._subscription == "missing":
            return "amoCRM has no webhook for this daemon (amosync webhooks register)"
        if self._suspect is not None and now - self._suspect[0] >= self.grace_s:
            return (
                f"a poll stored {self._suspect[1]} changed contact(s) that no hook announced "
                f"within {self.grace_s:g} s"
            )
        return None

    def changed(self) -> Verdict | None:
        """The verdict, if its state differs from the one this returned last (for logging each
        transition once); None otherwise."""
        with self._lock:
            verdict = self._verdict(self.clock())
            if verdict.state == self._reported:
                return None
            self._reported = verdict.state
            return verdict

    def forget_reported(self) -> None:
        """A new leadership: its first `changed` reports the verdict whatever it is."""
        with self._lock:
            self._reported = None

    def skip_poll(self) -> bool:
        """May a scheduled poll be skipped? While healthy, until `webhooks.poll_interval_s` has
        passed since the last pull (within half a short interval: the ticks come that often)."""
        with self._lock:
            now = self.clock()
            verdict = self._verdict(now)
            if verdict.state != HEALTHY or self.last_pull is None:
                return False
            return now - self.last_pull < verdict.interval_s - self.poll_interval_s / 2

    def last_hook_age(self) -> float | None:
        with self._lock:
            return None if self.last_hook is None else self.clock() - self.last_hook
