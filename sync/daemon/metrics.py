"""Prometheus metrics of the daemon (prometheus-client, one registry per daemon).

Counted in the process as things happen:
  amosync_leader                           1 while this process holds the leader lock
  amosync_job_runs_total{job,status}       succeeded | failed | skipped (already running)
  amosync_job_duration_seconds{job}        histogram of job run times
  amosync_amocrm_requests_total{method,status}   every HTTP answer from amoCRM ("error" = none)
  amosync_amocrm_rate_limited_total        429 answers
  amosync_webhooks_received_total{via}     hook posts accepted: "http" here, "standby" forwarded
  amosync_webhooks_rejected_total{reason}  hook posts refused: secret (404); or not understood
                                           (answered 200, pulled blind): content_type, length,
                                           too_large, not_form, read
  amosync_webhook_pulls_total              pulls that hooks triggered
  amosync_poll_interval_seconds            the scheduled poll interval in effect now (longer
                                           while webhooks arrive)
Read from the webhook watch at scrape time (webhooks enabled):
  amosync_webhook_last_age_seconds         seconds since the last hook (absent before the first)
  amosync_webhooks_healthy                 1 healthy, 0 quiet (no hook lately), -1 degraded
Read from the rate limiter at scrape time:
  amosync_amocrm_allowed_rps               requests/s the client allows itself now: max_rps, cut
                                           on each 429 episode and restored gradually (AIMD)
  amosync_amocrm_paused_seconds            seconds left of a pause after a 429 (0 when none)
  amosync_amocrm_rate_margin_seconds       the rate window's safety margin in effect (learned
                                           from answers and 429s: sync.amo.margin)
  amosync_rows_pulled_total / _pushed_total / _deleted_total / _rejected_total
                                           from the sync_runs rows each job wrote
Read from PostgreSQL at scrape time (cached for a few seconds; valid on a standby too; a scrape
waits for the database at most SCRAPE_DEADLINE_S, then answers the first gauge alone, 0):
  amosync_database_up                      1 when the scrape could read the database
  amosync_last_success_timestamp_seconds{kind}   last succeeded pull | full | push
  amosync_sync_lag_seconds                 now - start of the last succeeded pull: how stale
                                           the database may be
  amosync_pending_changes                  captured local edits not yet pushed
  amosync_open_conflicts                   conflicts waiting for a person or a push
  amosync_contacts{sync_status}            live contacts per status
  amosync_pending_requests                 sync_requests not yet picked up
  amosync_token_expiry_timestamp_seconds   access token expiry (OAuth pair or long-lived JWT)
  amosync_refresh_token_expiry_timestamp_seconds   OAuth refresh token (90 days after issue)
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.amo.observe import Transport, observed_transport
from sync.daemon.health import Health
from sync.db import status as queries
from sync.db.diag import error_line
from sync.db.status import RunRow
from sync.logs import get_logger

log = get_logger("sync.metrics")

REFRESH_TOKEN_LIFETIME_S = 90 * 86400  # amoCRM: a refresh token lives three months
SCRAPE_CACHE_S = 5.0
SCRAPE_DEADLINE_S = 2.0  # a scrape waits this long at most for PostgreSQL, then says it is down


class Metrics:
    """The daemon's registry and the instruments the daemon and transport update."""

    def __init__(self) -> None:
        # no `*_created` series beside every counter and histogram: they double /metrics and
        # say only when this process started (a process-wide switch of prometheus-client)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.leader = Gauge("amosync_leader", "1 while this process is the leader", registry=r)
        self.job_runs = Counter(
            "amosync_job_runs", "Job runs by outcome", ["job", "status"], registry=r
        )
        self.job_duration = Histogram(
            "amosync_job_duration_seconds",
            "Job run time",
            ["job"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.requests = Counter(
            "amosync_amocrm_requests", "amoCRM answers", ["method", "status"], registry=r
        )
        self.rate_limited = Counter("amosync_amocrm_rate_limited", "amoCRM 429s", registry=r)
        self.rows = {
            name: Counter(f"amosync_rows_{name}", f"Rows {name}", registry=r)
            for name in ("pulled", "pushed", "deleted", "rejected")
        }
        self.hooks_received = Counter(
            "amosync_webhooks_received", "Webhook posts accepted", ["via"], registry=r
        )
        self.hooks_rejected = Counter(
            "amosync_webhooks_rejected", "Webhook posts refused", ["reason"], registry=r
        )
        self.hook_pulls = Counter(
            "amosync_webhook_pulls", "Pulls triggered by webhooks", registry=r
        )
        self.poll_interval = Gauge(
            "amosync_poll_interval_seconds", "Scheduled poll interval in effect", registry=r
        )

    def watch_webhooks(self, watch: HookState) -> None:
        """Report the webhooks' state and the poll interval at every scrape."""
        self.registry.register(HookCollector(watch))

    def watch_budget(self, limiter: RateBudget) -> None:
        """Report the rate limiter's allowed rate and pause at every scrape."""
        self.registry.register(BudgetCollector(limiter))

    def count_runs(self, runs: list[RunRow]) -> None:
        """Add what finished `sync_runs` rows report to the row counters."""
        for run in runs:
            self.rows["pulled"].inc(run.upserted if run.kind != "push" else 0)
            self.rows["deleted"].inc(run.deleted)
            self.rows["pushed"].inc(run.pushed)
            self.rows["rejected"].inc(run.errors)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RateBudget(Protocol):
    """What `BudgetCollector` reads (`sync.amo.ratelimit.RateLimiter`)."""

    @property
    def allowed_rps(self) -> float: ...

    def paused_for(self) -> float: ...

    @property
    def margin_s(self) -> float: ...


class HookState(Protocol):
    """What `HookCollector` reads (`sync.daemon.webhooks.watch.HookWatch`)."""

    def last_hook_age(self) -> float | None: ...

    def verdict(self) -> Any: ...


HOOK_STATES = {"healthy": 1, "quiet": 0, "degraded": -1}


class HookCollector(Collector):
    """The webhook watch's state, read when Prometheus scrapes."""

    def __init__(self, watch: HookState) -> None:
        self._watch = watch

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        age = self._watch.last_hook_age()
        if age is not None:
            yield _gauge("amosync_webhook_last_age_seconds", "Seconds since the last webhook", age)
        verdict = self._watch.verdict()
        yield _gauge("amosync_webhooks_healthy", "1 healthy, 0 quiet, -1 degraded",
                     HOOK_STATES.get(verdict.state, 0))  # fmt: skip


class BudgetCollector(Collector):
    """The rate limiter's state, read when Prometheus scrapes (no database involved)."""

    def __init__(self, limiter: RateBudget) -> None:
        self._limiter = limiter

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield _gauge("amosync_amocrm_allowed_rps", "Requests/s the amoCRM client allows itself now",
                     self._limiter.allowed_rps)  # fmt: skip
        yield _gauge("amosync_amocrm_paused_seconds", "Seconds left of a pause after a 429",
                     self._limiter.paused_for())  # fmt: skip
        yield _gauge("amosync_amocrm_rate_margin_seconds", "The rate window's safety margin",
                     self._limiter.margin_s)  # fmt: skip


class DatabaseCollector(Collector):
    """Gauges read from PostgreSQL when Prometheus scrapes, cached for `SCRAPE_CACHE_S`.

    The read runs on a thread of its own, one at a time: a scrape waits for it at most
    `SCRAPE_DEADLINE_S` from its start, then answers `amosync_database_up 0` (PostgreSQL that
    stops answering, with no error, must not hang /metrics; `statement_timeout` is the server's
    and cannot end a wait for a server or network path that says nothing). Later scrapes do not
    queue behind a read still waiting: they answer at once, until it ends."""

    def __init__(self, engine: Engine, token_expiry: Callable[[], float | None]) -> None:
        self._engine = engine
        self._static_expiry = token_expiry
        self._cache: tuple[float, list[Metric]] | None = None
        self._reading: _Read | None = None
        self._lock = threading.Lock()  # the cache and the read under way; never held to read

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not query a database that may not be there yet."""
        return []

    def collect(self) -> Iterator[Metric]:
        cached = self._cached_or_reading()
        if not isinstance(cached, _Read):
            yield from cached
            return
        families = cached.wait(cached.started + SCRAPE_DEADLINE_S - time.monotonic())
        if families is None:
            if cached.note_late():
                log.warning("metrics_database_unanswered", waited_s=SCRAPE_DEADLINE_S,
                            note="amosync_database_up 0 until PostgreSQL answers")  # fmt: skip
            families = [_database_up(0)]
        yield from families

    def _cached_or_reading(self) -> list[Metric] | _Read:
        """The cached families while fresh; else the read under way (started if none is)."""
        with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] <= SCRAPE_CACHE_S:
                return self._cache[1]
            if self._reading is None:
                self._reading = _Read(now)
                threading.Thread(target=self._refresh, args=(self._reading,), daemon=True,
                                 name="amosync-metrics-read").start()  # fmt: skip
            return self._reading

    def _refresh(self, reading: _Read) -> None:
        try:
            families = self._read()
        except Exception:  # a bug must not leave every later scrape waiting for this read
            log.exception("metrics_database_read_failed")
            families = [_database_up(0)]
        with self._lock:
            self._cache = (time.monotonic(), families)
            self._reading = None
        reading.done(families)

    def _read(self) -> list[Metric]:
        try:
            with self._engine.connect() as conn:
                # this transaction's only: the pooled session keeps the configured timeout
                conn.exec_driver_sql("SET LOCAL statement_timeout = 3000")
                families = list(self._families(conn))
        except SQLAlchemyError as exc:
            log.warning("metrics_database_unavailable", error=error_line(exc))
            return [_database_up(0)]
        return [_database_up(1), *families]

    def _families(self, conn: Any) -> Iterator[Metric]:
        now = time.time()
        success = queries.fetch_last_success(conn)
        last = GaugeMetricFamily(
            "amosync_last_success_timestamp_seconds", "Last succeeded run", labels=["kind"]
        )
        for kind, run in sorted(success.items()):
            if run.finished_at is not None:
                last.add_metric([kind], run.finished_at.timestamp())
        yield last
        pulls = [r.started_at.timestamp() for k, r in success.items() if k in ("pull", "full")]
        if pulls:
            yield _gauge("amosync_sync_lag_seconds", "Seconds since the last good pull began",
                         max(0.0, now - max(pulls)))  # fmt: skip
        yield _gauge("amosync_pending_changes", "Local edits not yet pushed",
                     queries.count_pending_changes(conn))  # fmt: skip
        yield _gauge("amosync_open_conflicts", "Unresolved conflicts",
                     queries.count_open_conflicts(conn))  # fmt: skip
        yield _gauge("amosync_pending_requests", "sync_requests not yet picked up",
                     queries.count_pending_requests(conn))  # fmt: skip
        by_status = GaugeMetricFamily(
            "amosync_contacts", "Live contacts by sync_status", labels=["sync_status"]
        )
        for status, count in sorted(queries.count_contacts_by_status(conn).items()):
            by_status.add_metric([status], count)
        yield by_status
        yield from self._token_families(conn)

    def _token_families(self, conn: Any) -> Iterator[Metric]:
        oauth = queries.fetch_oauth_times(conn)
        expiry = float(oauth[1]) if oauth else self._static_expiry()
        if expiry is not None:
            yield _gauge("amosync_token_expiry_timestamp_seconds", "Access token expiry", expiry)
        if oauth:
            yield _gauge("amosync_refresh_token_expiry_timestamp_seconds",
                         "OAuth refresh token expiry (90 days after issue)",
                         oauth[0] + REFRESH_TOKEN_LIFETIME_S)  # fmt: skip


class _Read:
    """One read of the database's gauges under way (`DatabaseCollector`)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self._families: list[Metric] | None = None
        self._done = threading.Event()
        self._late = False
        self._lock = threading.Lock()

    def done(self, families: list[Metric]) -> None:
        self._families = families
        self._done.set()

    def wait(self, seconds: float) -> list[Metric] | None:
        """Its families, or None if it has not ended within `seconds`."""
        return self._families if self._done.wait(max(0.0, seconds)) else None

    def note_late(self) -> bool:
        """True the first time a scrape gives up on it (to log that once)."""
        with self._lock:
            first, self._late = not self._late, True
            return first


def _database_up(value: int) -> GaugeMetricFamily:
    return _gauge("amosync_database_up", "1 when the scrape could read PostgreSQL", value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (amoCRM's long-lived tokens are JWTs), without verifying it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class _AmoTraffic:
    """Counts every answer of amoCRM and tells `Health` (a `TrafficObserver` of the client)."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self._metrics = metrics
        self._health = health

    def answered(self, method: str, status: int) -> None:
        self._metrics.requests.labels(method, str(status)).inc()
        if status == 429:
            self._metrics.rate_limited.inc()
        self._health.amocrm_answered(status)

    def unreachable(self, method: str, reason: str) -> None:
        self._metrics.requests.labels(method, "error").inc()
        self._health.amocrm_unreachable(reason)


def amocrm_transport(metrics: Metrics, health: Health) -> Transport:
    """The transport the daemon gives its amoCRM client (same pool limits as the client's)."""
    return observed_transport(_AmoTraffic(metrics, health))
