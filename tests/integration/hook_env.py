"""A daemon with webhooks, in process: its real jobs, HTTP server and hook endpoint, against the
emulator over HTTP and real PostgreSQL; hooks are posted to it over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.clock import SystemClock
from sync.config import Config, DaemonConfig, DatabaseConfig, Secret, SyncConfig, WebhooksConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.run import build_jobs, start_http
from sync.daemon.server import HttpServer
from sync.daemon.webhooks.daemon_hooks import DaemonHooks
from sync.emulator import Emulator
from sync.pull.memo import PollMemo
from tests.integration.amo_emulator import amo_config, client_for

SECRET = "hook-secret-0123456789abcdef"
HOUR = 3600.0
FORM = "application/x-www-form-urlencoded"
HOOK_EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]


def wait(what: str, check: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql), params)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, path: str, body: bytes, content_type: str | None = FORM) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def hook_body(emulator: Emulator, ids: list[int], event: str = "update") -> bytes:
    """What amoCRM posts for `ids` now: their current updated_at, plus the usual extras."""
    pairs: list[tuple[str, str]] = []
    for n, contact in enumerate(ids):
        current = emulator.contact(contact) or {}
        p = f"contacts[{event}][{n}]"
        pairs += [(f"{p}[id]", str(contact)), (f"{p}[type]", "contact"),
                  (f"{p}[name]", str(current.get("name"))),
                  (f"{p}[updated_at]", str(current.get("updated_at", "")))]  # fmt: skip
    pairs += [("account[id]", "1"), ("account[subdomain]", "emulator")]
    return urlencode(pairs).encode()


@dataclass
class HookDaemon:
    config: Config
    hooks: DaemonHooks
    metrics: Metrics
    health: Health
    http: HttpServer
    daemon: Daemon
    emulator: Emulator

    @property
    def port(self) -> int:
        return self.http.port

    def post_hook(self, ids: list[int], event: str = "update") -> int:
        status, _ = post(self.port, f"/webhooks/amocrm/{SECRET}", hook_body(self.emulator, ids,
                                                                            event))  # fmt: skip
        return status

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def hook_pulls(self) -> float:
        return self.sample("amosync_webhook_pulls_total")


def make_config(db: DatabaseConfig, url: str, token: str, **webhooks: Any) -> Config:
    hooks: dict[str, Any] = {"enabled": True, "secret": Secret(SECRET), "poll_interval_s": HOUR,
                             "announce_grace_s": 1.0, "min_pull_gap_s": 0.5}  # fmt: skip
    sync: dict[str, Any] = {"poll_interval_s": HOUR, "push_interval_s": HOUR,
                            "full_resync_cron": "", "overlap_s": 5, "pull_workers": 4}  # fmt: skip
    sync.update(webhooks.pop("sync", {}))
    hooks.update(webhooks)
    return Config(
        amocrm=amo_config(url, token),
        database=db,
        sync=SyncConfig(**sync),
        daemon=DaemonConfig(http_port=free_port(), requests_poll_s=HOUR, shutdown_timeout_s=5),
        webhooks=WebhooksConfig(**hooks),
    )


@contextmanager
def hook_daemon(
    config: Config, engine: Engine, emulator: Emulator, url: str, *, leader: bool = True
) -> Iterator[HookDaemon]:
    """`amosync run` in a thread with webhooks on. With `leader`, waits until it leads with its
    first pull and push done and its listener LISTENing, then clears the emulator's log."""
    client: AmoClient = client_for(emulator, url, workers=4)
    http_port = config.daemon.http_port
    # the subscription `amosync webhooks register` makes, so the leader's check of it finds the
    # hook enabled; the emulator's own deliveries are lost: these tests post every hook themselves
    emulator.webhooks.dispatcher.set_controls({"loss_rate": 1.0})
    destination = f"http://127.0.0.1:{http_port}/webhooks/amocrm/{SECRET}"
    emulator.webhooks.subscribe({"destination": destination, "settings": HOOK_EVENTS}, 0)
    health = Health(config.sync.poll_interval_s)
    metrics = Metrics()
    hooks = DaemonHooks(config, engine, metrics, health, client)
    http = start_http(config, health, metrics, engine, hooks)
    assert http is not None
    hooks.start()
    memo = PollMemo(config.sync.events_every_s)
    parts = Parts(config, engine, build_jobs(config, engine, client, memo), health, metrics,
                  SystemClock(), hooks=hooks, memo=memo)  # fmt: skip
    daemon = Daemon(parts)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        if leader:
            done = "SELECT count(DISTINCT kind) FROM amocrm.sync_runs WHERE status = 'succeeded'"
            wait("the first pull and push", lambda: scalar(engine, done) == 2)
            listening = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND query LIKE 'LISTEN %hooks%'")  # fmt: skip
            wait("the listener", lambda: scalar(engine, listening) >= 1)
            emulator.clear_requests()
        yield HookDaemon(config, hooks, metrics, health, http, daemon, emulator)
    finally:
        stop.set()
        thread.join(15)
        http.stop()
        hooks.close()
        client.close()
