"""`amosync run`: the composition root — lock, scheduler, signals, health and metrics.

    ┌──────────── amosync run (one process) ────────────────────────────────────┐
    │ main thread: Daemon.run (sync.daemon.leader)                              │
    │   standby ──try pg_try_advisory_lock every ≤ poll/2──► leader             │
    │   leader: BackgroundScheduler (daemon.schedule) ── pull / push / full ──► │
    │           JobRunner (one job at a time, never raises)   sync.pull/push    │
    │   each second and before each job: leader lock held?  SIGTERM → stop      │
    │ thread amosync-listen (leader): LISTEN requests → full resync at once;    │
    │   LISTEN changes → thread amosync-debounce → PushSoon: push job now       │
    │   LISTEN hooks (a standby's webhooks) → Inbox                             │
    │ thread amosync-http: /healthz /livez /metrics (daemon.server, .health,    │
    │   .metrics); POST /webhooks/amocrm/<secret> → Inbox (daemon.webhooks):    │
    │   debounce → leader: PullSoon moves the pull job to now (rate-bounded);   │
    │   standby: NOTIFY the leader                                              │
    └───────────────────────────────────────────────────────────────────────────┘

Stop (SIGTERM/SIGINT): no new job starts; requests waiting for a start or a retry (a 429's
pause) give up at once; a running job gets `daemon.shutdown_timeout_s` to finish its
transaction; if it has not, the process exits anyway and PostgreSQL rolls the open transaction
back when the connection closes. Exit code 0 either way, well within 15 s. A stop that
PostgreSQL keeps waiting (no answer, no error: a hung server or a frozen network path) is cut
short `STOP_MARGIN_S` after the shutdown timeout (at most `STOP_LIMIT_S` after the signal):
`shutdown_stuck` says where the process waited, and the exit code is 1 (`bound_the_stop`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.amo.responses import MAX_RETRY_AFTER_S
from sync.cli_stop import exit_now
from sync.clock import SystemClock
from sync.config import Config
from sync.daemon.health import Health, StoredPages
from sync.daemon.leader import STANDBY_RETRY_MAX_S, Daemon, Parts
from sync.daemon.metrics import DatabaseCollector, Metrics, amocrm_transport, jwt_expiry
from sync.daemon.schedule import Jobs
from sync.daemon.server import Endpoints, HttpServer
from sync.daemon.token_probe import probing
from sync.daemon.webhooks.daemon_hooks import DaemonHooks
from sync.db.migrate import upgrade
from sync.errors import StoreError, UsageError
from sync.logs import get_logger
from sync.pull import run_pull, serve_request
from sync.pull.memo import PollMemo
from sync.push import run_push
from sync.wiring import amo_client, database_engine

log = get_logger("sync.daemon")

STOP_MARGIN_S = 3.0  # a stop still under way this long after the shutdown timeout is stuck
STOP_LIMIT_S = 14.5  # and whatever the timeout, a stop never takes longer than this


# --- signals and process exit ------------------------------------------------------------------


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT ask for a clean stop; a second one exits at once (still status 0)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            exit_now(code=0)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def bound_the_stop(stop: threading.Event, timeout_s: float) -> None:
    """The last resort of a stop: once `stop` is set, a process still there after `timeout_s`
    plus `STOP_MARGIN_S` (at most `STOP_LIMIT_S`) logs what its main thread is blocked in and
    exits with status 1. What blocks it is PostgreSQL that stops answering with the connection
    open (a hung server, a frozen network path): no error ever comes, and no timeout of the
    driver ends the wait. Exiting is safe: the leader's and the runs' advisory locks are session
    locks and end with their connections, and a push's in-flight records are made for kill -9."""

    def watch() -> None:
        stop.wait()
        waited = min(timeout_s + STOP_MARGIN_S, STOP_LIMIT_S)
        time.sleep(waited)
        log.error("shutdown_stuck", waited_s=waited, blocked_in=blocked_in(main_thread),
                  note="exiting anyway: PostgreSQL ends the sessions and their locks")  # fmt: skip
        exit_now(code=1)

    main_thread = threading.main_thread().ident
    threading.Thread(target=watch, name="amosync-stop-watch", daemon=True).start()


def blocked_in(thread_id: int | None) -> str:
    """Where a thread is now: its innermost calls in the sync's own code (innermost first,
    the first with its file and line), and the library call it waits in."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return "unknown (the thread is gone)"
    ours: list[str] = []
    innermost = f"{_where(frame)} {frame.f_code.co_qualname}"
    while frame is not None and len(ours) < 4:
        if _ours(frame.f_code.co_filename):
            name = frame.f_code.co_qualname
            ours.append(f"{name} ({_where(frame)})" if not ours else name)
        frame = frame.f_back
    return f"{' < '.join(ours) or 'no code of the sync'}; waiting in {innermost}"


_SYNC_DIR = Path(__file__).resolve().parent.parent  # the `sync` package


def _ours(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(_SYNC_DIR)


def _where(frame: FrameType) -> str:
    path = Path(frame.f_code.co_filename).resolve()
    shown = path.relative_to(_SYNC_DIR.parent) if _ours(str(path)) else Path(*path.parts[-2:])
    return f"{shown.as_posix()}:{frame.f_lineno}"


def stop_requests_on(stop: threading.Event, client: AmoClient) -> None:
    """Once `stop` is set, requests waiting for a start or a retry (a 429's pause) give up at
    once, so the running job ends within the shutdown timeout instead of being abandoned."""

    def watch() -> None:
        stop.wait()
        client.session.stop()

    threading.Thread(target=watch, name="amosync-stop", daemon=True).start()


# --- composition -------------------------------------------------------------------------------


def build_jobs(
    config: Config,
    engine: Engine,
    client: AmoClient,
    memo: PollMemo | None = None,
    health: Health | None = None,
) -> Jobs:
    """The leader's jobs: pull and push as the CLI runs them, on the daemon's client; its
    incremental pulls share a `PollMemo`, so idle polls skip what they may (`sync.pull.memo`).
    Each first tries a long-lived token amoCRM refused once more (`sync.daemon.token_probe`);
    with `health`, each page a pull stores keeps the pull fresh there (`StoredPages`)."""
    memo = memo or PollMemo(config.sync.events_every_s)
    session = client.session  # each job first tries a refused long-lived token once more
    stored = StoredPages(health) if health is not None else None
    pull = partial(run_pull, config, engine, client, progress=stored)
    serve = partial(serve_request, config, engine, client, progress=stored)
    return Jobs(
        pull=probing(session, partial(pull, memo=memo)),
        push=probing(session, partial(run_push, config, engine, client)),
        full=probing(session, partial(pull, full=True)),
        requested=probing(session, serve),
    )


def run_daemon(config: Config) -> None:
    """`amosync run`: serve until SIGTERM/SIGINT, then stop cleanly (exit status 0)."""
    config.require_amocrm_auth()
    os.environ.setdefault("PGCONNECT_TIMEOUT", "5")  # a dead database must not hang a probe
    stop = threading.Event()
    install_signal_handlers(stop)
    bound_the_stop(stop, config.daemon.shutdown_timeout_s)
    health = Health(config.sync.poll_interval_s, config.daemon.unhealthy_after_polls)
    metrics = Metrics()
    metrics.poll_interval.set(config.sync.poll_interval_s)
    engine = database_engine(config)
    hooks = DaemonHooks(config, engine, metrics, health) if config.webhooks.enabled else None
    http = start_http(config, health, metrics, engine, hooks)  # before anything may wait
    if hooks is not None:
        hooks.start()
    client = amo_client(config, engine, transport=amocrm_transport(metrics, health))
    client.session.backoff.max_pause_s = MAX_RETRY_AFTER_S  # amoCRM's retry_after waited out
    if hooks is not None:
        hooks.client = client  # for the subscription check
    metrics.watch_budget(client.session.limiter)
    stop_requests_on(stop, client)
    clean = True
    try:
        if config.daemon.migrate and not migrate_when_possible(config, stop, health):
            return
        memo = PollMemo(config.sync.events_every_s)
        jobs = build_jobs(config, engine, client, memo, health)
        parts = Parts(config, engine, jobs, health, metrics, SystemClock(), hooks=hooks, memo=memo)
        clean = Daemon(parts).run(stop)
    finally:
        if http is not None:
            http.stop()
        if hooks is not None:
            hooks.close()
        log.info("daemon_stopped", clean=clean)
        if not clean:
            exit_now(code=0)
        client.close()
        engine.dispose()


def start_http(
    config: Config,
    health: Health,
    metrics: Metrics,
    engine: Engine,
    hooks: DaemonHooks | None = None,
) -> HttpServer | None:
    """The /healthz, /livez and /metrics server, and the webhook with `hooks` (None when
    `daemon.http_port` is 0)."""
    token = config.amocrm.access_token.reveal()
    metrics.registry.register(DatabaseCollector(engine, lambda: jwt_expiry(token)))
    if not config.daemon.http_port:
        return None
    silence = max(30.0, 3 * STANDBY_RETRY_MAX_S)
    route = hooks.route() if hooks is not None else None
    endpoints = Endpoints(health.report, lambda: health.alive(silence), metrics.exposition, route)
    try:
        server = HttpServer(config.daemon.http_host, config.daemon.http_port, endpoints)
    except OSError as exc:
        where = f"{config.daemon.http_host}:{config.daemon.http_port}"
        raise UsageError(
            f"cannot serve /healthz on {where} (daemon.http_port): {exc.strerror}"
        ) from exc
    server.start()
    log.info("http_listening", host=config.daemon.http_host, port=server.port,
             webhook=route is not None)  # fmt: skip
    return server


def migrate_when_possible(config: Config, stop: threading.Event, health: Health) -> bool:
    """Apply migrations, waiting for PostgreSQL while it is down; False if stopped first."""
    delay = 1.0
    while not stop.is_set():
        health.beat()
        try:
            before, after = upgrade(config.database)
        except StoreError as exc:
            if not exc.transient:
                raise
            health.database_failed(str(exc))
            log.warning("database_unavailable", error=str(exc), retry_in_s=delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        health.database_ok()
        if before != after:
            log.info("database_migrated", schema=config.database.schema, before=before, after=after)
        return True
    return False
