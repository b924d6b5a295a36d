"""`amosync demo`: the whole sync end to end on a local emulator, in a few seconds.

    emulator (in this process, 120 contacts, amoCRM's 7 requests/s)  ⇄  schema amocrm_demo
    1 migrate  2 full pull  3 SQL edit → push  4 amoCRM edit → pull
    5 both sides edit → a conflict waits  6 it is resolved and pushed
    7 the daemon with webhooks on (`amosync webhooks register`, polls an hour apart): an amoCRM
      edit reaches the table within a second through the hook the emulator posts

The demo never touches the configured schema: it (re)creates `amocrm_demo` in the configured
database, or in the embedded PostgreSQL when `database.url` is empty, so it can be run again at
any time. Like `sync.cli`, this module is a composition root: it is the one place outside the
CLI that starts the emulator; the engine modules it drives never import it.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.clock import SystemClock
from sync.config import Config, Secret
from sync.core.models import Winner
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.run import build_jobs, start_http
from sync.daemon.webhooks.daemon_hooks import DaemonHooks
from sync.daemon.webhooks.subscription import register
from sync.db import samples
from sync.db.engine import create_engine, store_errors
from sync.db.migrate import downgrade, upgrade
from sync.db.outbox import list_conflicts, set_winner
from sync.emulator import Emulator, EmulatorSettings, serve
from sync.errors import SyncError
from sync.lines import count
from sync.pull import run_pull
from sync.pull.memo import PollMemo
from sync.push import run_push
from sync.push.conflict_view import render_conflicts

DEMO_SCHEMA = "amocrm_demo"
DEMO_CONTACTS = 120
Say = Callable[[str], None]


def demo_config(config: Config, base_url: str, token: str) -> Config:
    """The user's database settings on the demo schema, amoCRM pointed at the emulator."""
    return replace(
        config,
        amocrm=replace(config.amocrm, base_url=base_url, access_token=Secret(token),
                       oauth=replace(config.amocrm.oauth, client_id="", client_secret=Secret(""),
                                     refresh_token=Secret(""))),
        database=replace(config.database, schema=DEMO_SCHEMA),
        sync=replace(config.sync, conflict_policy="manual", conflict_fields=()),
    )  # fmt: skip


def run_demo(config: Config, say: Say, command: str = "amosync") -> None:
    """Run every step, telling `say` what happened; the lines to try next run `command` (how
    this amosync was started: `.venv/bin/amosync` after `make demo`)."""
    emulator = Emulator(EmulatorSettings(contacts=DEMO_CONTACTS, seed=42))
    with serve(emulator) as server:
        demo = demo_config(config, server.base_url, emulator.long_lived_token)
        trash = emulator.state()["trash"]
        say(f"amoCRM emulator on {server.base_url} with {DEMO_CONTACTS} contacts, {trash} of "
            "them in the trash (7 requests/s, like amoCRM)")  # fmt: skip
        _migrate(demo, say)
        engine = create_engine(demo.database)
        try:
            with store_errors(demo.database), AmoClient.connect(demo.amocrm) as client:
                _steps(_Run(demo, engine, client, emulator, say))
        finally:
            engine.dispose()
    _next(say, command)


def _migrate(demo: Config, say: Say) -> None:
    where = "the configured database"
    if demo.database.embedded:
        where = f"embedded PostgreSQL in {demo.database.embedded_dir}"
    downgrade(demo.database, "base")  # a fresh start on every run
    _before, after = upgrade(demo.database)
    say(f"1. Migrated {where}: schema {DEMO_SCHEMA} at revision {after}.")


@dataclass(frozen=True)
class _Run:
    config: Config
    engine: Engine
    client: AmoClient
    emulator: Emulator
    say: Say

    def remote_name(self, cid: int) -> Any:
        contact = self.emulator.contact(cid)
        return None if contact is None else contact.get("name")


def _steps(run: _Run) -> None:
    report = run_pull(run.config, run.engine, run.client, full=True)
    with run.engine.connect() as conn:
        total = samples.count_contacts(conn)
        first, second, third = samples.fetch_live_ids(conn, 3)
    trash = DEMO_CONTACTS - report.fetched
    why = f" ({trash} in the trash: the API does not list them)" if trash > 0 else ""
    run.say(f"2. Full pull: {report.fetched} of {DEMO_CONTACTS} contacts read{why} in "
            f"{report.requests} requests; {total} rows in {DEMO_SCHEMA}.contacts.")  # fmt: skip
    _local_edit(run, first)
    _remote_edit(run, second)
    _conflict(run, third)
    _hooked_edit(run, second)


def _local_edit(run: _Run, cid: int) -> None:
    with run.engine.begin() as conn:
        samples.rename_contact(conn, cid, "Renamed in PostgreSQL")
        pending = samples.fetch_brief(conn, cid)["sync_status"]
    report = run_push(run.config, run.engine, run.client)
    run.say(f"3. UPDATE contacts SET name = 'Renamed in PostgreSQL' WHERE id = {cid}: the row "
            f"is {pending}; push sent {count(report.pushed, 'change')}; amoCRM now has name "
            f"{run.remote_name(cid)!r}.")  # fmt: skip


def _remote_edit(run: _Run, cid: int) -> None:
    run.emulator.update_contacts([{"id": cid, "name": "Renamed in amoCRM"}])
    report = run_pull(run.config, run.engine, run.client)
    with run.engine.connect() as conn:
        row = samples.fetch_brief(conn, cid)
    read, overlap = count(report.fetched, "contact"), run.config.sync.overlap_s
    run.say(f"4. A CRM user renamed contact {cid} in amoCRM; the incremental pull read {read}: "
            f"every one changed since its cursor less {overlap} s of overlap, the push's own "
            f"write included; the row now says {row['name']!r} "
            f"({row['sync_status']}).")  # fmt: skip


def _conflict(run: _Run, cid: int) -> None:
    with run.engine.begin() as conn:
        samples.rename_contact(conn, cid, "Ann (edited in SQL)")
    run.emulator.update_contacts([{"id": cid, "name": "Ann (edited in amoCRM)"}])
    report = run_push(run.config, run.engine, run.client)
    with run.engine.connect() as conn:
        rows = list_conflicts(conn)
    found = count(report.conflicts, "conflict")
    run.say(f"5. Both sides renamed contact {cid}: push found {found}; with conflict_policy = "
            "manual it waits for a person:")  # fmt: skip
    for line in render_conflicts(rows, include_resolved=False).splitlines():
        run.say(f"     {line}")
    with run.engine.begin() as conn:
        set_winner(conn, int(rows[0]["id"]), Winner.LOCAL)
    run_push(run.config, run.engine, run.client)
    run.say(f"6. amosync conflicts resolve {rows[0]['id']} --keep local, then a push: amoCRM "
            f"now has name {run.remote_name(cid)!r}.")  # fmt: skip


def _hooked_edit(run: _Run, cid: int) -> None:
    """`amosync run` with webhooks on, in this process: the daemon's jobs, its HTTP port and the
    hook path; amoCRM (the emulator) posts the hook of a remote edit, the daemon pulls."""
    config = _daemon_config(run.config)
    registration = register(run.client, config.webhooks)
    health, metrics = Health(config.sync.poll_interval_s), Metrics()
    hooks = DaemonHooks(config, run.engine, metrics, health, run.client)
    http = start_http(config, health, metrics, run.engine, hooks)
    hooks.start()
    memo = PollMemo(config.sync.events_every_s)
    jobs = build_jobs(config, run.engine, run.client, memo, health)
    parts = Parts(config, run.engine, jobs, health, metrics, SystemClock(), hooks=hooks, memo=memo)
    stop = threading.Event()
    daemon = threading.Thread(target=Daemon(parts).run, args=(stop,), daemon=True)
    daemon.start()
    try:
        _wait(lambda: _leading(health), DAEMON_READY_S, "the daemon's first pull")
        time.sleep(config.webhooks.min_pull_gap_s)  # hook pulls keep this far from the last pull
        name = "Renamed in amoCRM, announced by a hook"
        started = time.monotonic()
        run.emulator.update_contacts([{"id": cid, "name": name}])
        _wait(lambda: _row_name(run, cid) == name, HOOKED_EDIT_S, "the hooked edit")
        took = time.monotonic() - started
        announced = {"event": "update", "id": cid}
        posts = [d for d in run.emulator.webhooks.dispatcher.deliveries()
                 if d["outcome"] == "delivered" and announced in d["entities"]]  # fmt: skip
    finally:
        stop.set()
        daemon.join(config.daemon.shutdown_timeout_s + 5)
        if http is not None:
            http.stop()
        hooks.close()
    poll = config.sync.poll_interval_s / 60
    run.say(f"7. amosync run with webhooks on, subscribed by `amosync webhooks register` "
            f"({registration.action}; polls {poll:g} minutes apart): a CRM user renamed contact "
            f"{cid}; amoCRM posted {count(len(posts), 'hook')}, the daemon pulled, and "
            f"{took:.2f} s after the edit the row said {_row_name(run, cid)!r}.")  # fmt: skip


DAEMON_READY_S = 60.0  # the demo daemon's first pull of 120 contacts takes well under a second
HOOKED_EDIT_S = 30.0


def _daemon_config(demo: Config) -> Config:
    """The demo's settings for a daemon that only a hook makes pull: polls an hour apart, its
    HTTP port on a free loopback port, a generated secret for the hook path."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return replace(
        demo,
        sync=replace(demo.sync, poll_interval_s=3600, push_interval_s=3600, full_resync_cron=""),
        daemon=replace(demo.daemon, http_host="127.0.0.1", http_port=port, shutdown_timeout_s=2),
        webhooks=replace(demo.webhooks, enabled=True, public_url=f"http://127.0.0.1:{port}",
                         secret=Secret(secrets.token_urlsafe(24)), poll_interval_s=0),
    )  # fmt: skip


def _leading(health: Health) -> bool:
    body = health.report()[1]
    return body["role"] == "leader" and body["last_pull_succeeded_at"] is not None


def _row_name(run: _Run, cid: int) -> Any:
    with run.engine.connect() as conn:
        return samples.fetch_brief(conn, cid)["name"]


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SyncError(f"the demo timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


def _next(say: Say, cmd: str) -> None:
    env = f"AMOSYNC_DATABASE__SCHEMA={DEMO_SCHEMA}"
    s = DEMO_SCHEMA
    say("Try next:")
    for line in (
        f'{cmd} db shell -c "SELECT id, name, sync_status FROM {s}.contacts '
        'ORDER BY updated_at DESC NULLS LAST LIMIT 5"',
        f'{cmd} db shell -c "SELECT contact_id, phone, enum_code FROM {s}.contact_phones"',
        f'{cmd} db shell -c "SELECT kind, status, fetched, upserted, pushed FROM {s}.sync_runs"',
        f"{env} {cmd} conflicts list --all",
        f"{env} {cmd} status",
        f"{cmd} emulator   # a standalone emulator to point amosync run at",
    ):
        say(f"  {line}")
