"""What `webhooks.enabled` adds to `amosync run`, in one place (see docs/operations.md#webhooks).

Per process (leader and standby alike): the `HookRoute` the HTTP server serves, the `Inbox` that
debounces hooks, the `HookWatch` that judges them. A standby forwards its hints to the leader with
NOTIFY; the leader LISTENs for them (`forwarded`).

Per leadership (`lead` … `stop_leading`): `PullSoon` on the scheduler's `pull` job, the
subscription check (`GET /api/v4/webhooks` every `webhooks.check_interval_s`, when the client
has `list_webhooks`), and `tick`, called every second by the leader's loop, which logs each change
of the verdict once (`webhooks_healthy`, `webhooks_quiet`, `webhooks_degraded`), sets the poll
interval in /healthz and /metrics and stores the verdict in `sync_state` for `amosync status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from sync.config import Config
from sync.config_urls import hook_warnings
from sync.daemon.health import Health
from sync.daemon.jobs import run_job_at
from sync.daemon.metrics import Metrics
from sync.daemon.server import HookRoute
from sync.daemon.webhooks.hints import Hint, decode_hint, encode_hint
from sync.daemon.webhooks.pull import Inbox, Pace, PullSoon
from sync.daemon.webhooks.watch import DEGRADED, HookWatch
from sync.db import hooks as queries
from sync.logs import get_logger
from sync.pull.memo import PollMemo

log = get_logger("sync.daemon")

FIRST_CHECK_S = 5.0  # the first subscription check, after becoming leader
RECHECK_GAP_S = 30.0  # a hook while the subscription is in doubt checks again, at most this often
CHECK_JOB = "webhooks_check"


class DaemonHooks:
    """The webhook side of one daemon process."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        metrics: Metrics,
        health: Health,
        client: object = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        hooks = config.webhooks
        self.config = config
        self.engine = engine
        self.metrics = metrics
        self.health = health
        self.client = client
        self.clock = clock
        self.watch = HookWatch(
            poll_interval_s=config.sync.poll_interval_s,
            hooks_poll_interval_s=hooks.poll_interval_s,
            stale_after_s=hooks.stale_after_s,
            announce_grace_s=hooks.announce_grace_s,
            clock=clock,
        )
        self.inbox = Inbox(self.watch, forward=self._forward, record_last_hook=self._record)
        self._pull_soon: PullSoon | None = None
        self._scheduler: BackgroundScheduler | None = None  # the leader's, while it leads
        self._rechecked: float | None = None
        metrics.watch_webhooks(self.watch)
        metrics.poll_interval.set(self.watch.verdict().interval_s)
        health.set_webhooks(self.describe)

    def route(self) -> HookRoute:
        rejected = self.metrics.hooks_rejected
        return HookRoute(
            self.config.webhooks.secret.reveal(),
            receive=self._received,
            rejected=lambda reason: rejected.labels(reason).inc(),
        )

    def start(self) -> None:
        """Serve hooks; first say once what is allowed but weak (a short secret, plain http)."""
        hooks = self.config.webhooks
        for warning in hook_warnings(hooks.secret.reveal(), hooks.public_url):
            log.warning("webhooks_weak_config", problem=warning)
        self.inbox.start()

    def close(self) -> None:
        self.inbox.close()

    # --- hooks in ------------------------------------------------------------------------------

    def _received(self, hint: Hint) -> None:
        self.metrics.hooks_received.labels("http").inc()
        log.debug("webhook_received", contacts=hint.contacts, ignored=hint.ignored,
                  events=hint.events)  # fmt: skip
        self.inbox.receive(hint)
        self._recheck_if_doubted()

    def forwarded(self, payloads: list[str]) -> None:
        """The leader's listener: hints a standby received."""
        hint = Hint()
        for payload in payloads:
            hint.merge(decode_hint(payload))
        self.metrics.hooks_received.labels("standby").inc(max(1, hint.posts))
        self.inbox.receive(hint)
        self._recheck_if_doubted()

    def _recheck_if_doubted(self) -> None:
        """A hook arrived although the last check found the subscription missing or disabled
        (registered again since, e.g. `amosync webhooks register` after the daemon started):
        check now instead of after `check_interval_s`, so the verdict does not say degraded
        for minutes while hooks arrive."""
        scheduler = self._scheduler
        if scheduler is None or not self.watch.subscription_doubted():
            return
        now = self.clock()
        if self._rechecked is not None and now - self._rechecked < RECHECK_GAP_S:
            return
        self._rechecked = now
        run_job_at(scheduler, CHECK_JOB, datetime.now().astimezone())  # none: no client support

    def _forward(self, hint: Hint) -> None:
        """A standby's flush: NOTIFY the leader (an error keeps the hint for a retry)."""
        with self.engine.begin() as conn:
            queries.notify_hints(conn, self.config.database.schema, encode_hint(hint))

    def _record(self, received_at: float) -> None:
        with self.engine.begin() as conn:
            queries.record_last_hook(conn, received_at)

    # --- leadership ----------------------------------------------------------------------------

    def pull_soon(self, running: Callable[[], set[str]], memo: PollMemo | None) -> PullSoon:
        """A new `PullSoon` for this leadership (attached by `build_scheduler`)."""
        hooks = self.config.webhooks
        pace = Pace(hooks.min_pull_gap_s, max_gap_s=self.config.sync.poll_interval_s)
        self._pull_soon = PullSoon(
            self.watch, pace, self._stored, running=running, memo=memo,
            on_pull=self.metrics.hook_pulls.inc, clock=self.clock,
        )  # fmt: skip
        return self._pull_soon

    def lead(self, scheduler: BackgroundScheduler, now: datetime) -> None:
        """The scheduler is built: hooks now make pulls here; check the subscription."""
        assert self._pull_soon is not None
        self.watch.forget_reported()
        self.inbox.lead(self._pull_soon.offer)
        if self.client is not None and hasattr(self.client, "list_webhooks"):
            self._scheduler = scheduler
            scheduler.add_job(
                self.check_subscription,
                IntervalTrigger(seconds=self.config.webhooks.check_interval_s),
                id=CHECK_JOB,
                next_run_time=now + timedelta(seconds=FIRST_CHECK_S),
                misfire_grace_time=60,
            )
        else:  # follow-up: AmoClient.list_webhooks (branch hooksemu) turns the check on
            log.debug("webhooks_check_unavailable")

    def caught_up(self) -> None:
        """The listener reconnected: forwarded hints may have been lost, so pull once."""
        self.inbox.nudge(Hint(blind=True))

    def stop_leading(self) -> None:
        self._scheduler = None
        self.inbox.lead(None)
        if self._pull_soon is not None:
            self._pull_soon.close()
        self._pull_soon = None

    def tick(self) -> None:
        """Every second on the leader: act on a change of the verdict, once."""
        verdict = self.watch.changed()
        if verdict is None:
            return
        fields: dict[str, Any] = {"poll_interval_s": verdict.interval_s}
        if verdict.reason:
            fields["reason"] = verdict.reason
        if verdict.state == DEGRADED:
            log.warning("webhooks_degraded", **fields)
        else:
            log.info(f"webhooks_{verdict.state}", **fields)
        self.health.set_poll_interval(verdict.interval_s)
        self.metrics.poll_interval.set(verdict.interval_s)
        value = {"state": verdict.state, "reason": verdict.reason, "since": int(time.time()),
                 "poll_interval_s": verdict.interval_s}  # fmt: skip
        try:
            with self.engine.begin() as conn:
                queries.record_health(conn, value)
        except Exception as exc:  # noqa: BLE001 - status shows it later; the log said it now
            log.debug("webhooks_health_not_stored", error=str(exc).splitlines()[0][:200])

    def describe(self) -> dict[str, Any]:
        """The webhooks part of /healthz."""
        verdict = self.watch.verdict()
        age = self.watch.last_hook_age()
        return {
            "state": verdict.state,
            "reason": verdict.reason,
            "poll_interval_s": verdict.interval_s,
            "received": self.watch.received,
            "last_hook_age_s": None if age is None else round(age, 1),
        }

    # --- amoCRM's side -------------------------------------------------------------------------

    def _stored(self, ids: list[int]) -> dict[int, int]:
        with self.engine.begin() as conn:
            return queries.fetch_versions(conn, ids)

    def check_subscription(self) -> None:
        """GET /api/v4/webhooks: is this daemon's hook there, and enabled?"""
        if self.health.halted:
            return
        secret = self.config.webhooks.secret.reveal()
        try:
            listed = self.client.list_webhooks()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the next check tries again; the polls go on
            text = str(exc).splitlines()[0][:200].replace(secret, "***") if secret else str(exc)
            log.warning("webhooks_check_failed", error=text)
            return
        self.watch.subscription(subscription_state(listed, self.config.webhooks.path))


def subscription_state(listed: Iterable[Any], path: str) -> str:
    """enabled | disabled | missing: this daemon's hook (its destination ends with `path`) among
    the webhooks amoCRM lists (dicts as the API answers, or objects with the same names)."""
    found = None
    for hook in listed or ():
        destination = _field(hook, "destination")
        if isinstance(destination, str) and destination.split("?", 1)[0].rstrip("/").endswith(path):
            found = hook
            break
    if found is None:
        return "missing"
    return "disabled" if _field(found, "disabled") else "enabled"


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)
