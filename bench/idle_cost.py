"""Issue 15 idle cost: how many requests an idle daemon sends per poll, and per hour.

    .venv/bin/python bench/idle_cost.py [--contacts 2000] [--poll-s 0.5] [--polls 60]

Runs the real daemon (`sync.daemon.Daemon` with the jobs `amosync run` builds) against the
emulator served on 127.0.0.1 for `--polls` poll intervals of `--poll-s`, counted from its start:
one simulated hour at the default 60 s poll is 60 polls. The periods of the configuration are
scaled by the same factor (`--poll-s` / 60): the push interval and `sync.events_interval_s` (its
default, 3 x the poll interval, scales by itself), so the run is an hour of the default
configuration, compressed (the account flag, re-read hourly, is read once, by the first poll).
A full pull runs first; nothing changes in amoCRM meanwhile. Each poll still lists the contacts
of the last `sync.overlap_s` before the cursor (at least the newest one: the cursor is its
`updated_at` + 1), versions already stored.

Printed: requests the emulator logged (by path), pull runs, requests per poll and the projection
to one hour at the default 60 s poll (before issue 15: 4 a poll, 240 an hour). Needs a
PostgreSQL: $AMOSYNC_TEST_DATABASE_URL, else postgres@127.0.0.1:5432 (a scratch database is
created and dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa
from scratch import drop_database, scratch_database

from sync.amo.client import AmoClient
from sync.clock import SystemClock
from sync.config import AmoCrmConfig, Config, DatabaseConfig, LoggingConfig, Secret, SyncConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.run import build_jobs
from sync.db.engine import create_engine
from sync.db.migrate import upgrade
from sync.emulator import Emulator, EmulatorSettings, serve
from sync.logs import configure_logging
from sync.pull import run_pull

DEFAULT_POLL_S = 60.0


def main() -> None:
    args = _args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    admin, db_url = scratch_database()
    emulator = Emulator(EmulatorSettings(contacts=args.contacts, seed=5, rate_limit=None))
    try:
        with serve(emulator) as server:
            _run(args, emulator, server.base_url, db_url)
    finally:
        drop_database(admin, db_url)


def _config(args: argparse.Namespace, base_url: str, db_url: sa.URL) -> Config:
    scale = args.poll_s / DEFAULT_POLL_S
    database = DatabaseConfig(url=Secret(db_url.render_as_string(hide_password=False)))
    amo = AmoCrmConfig(base_url=base_url, access_token=Secret(args.token), max_rps=1000.0)
    sync: dict[str, Any] = {
        "poll_interval_s": args.poll_s,
        "push_interval_s": SyncConfig.push_interval_s * scale,
        "full_resync_cron": "",
    }
    names = {f.name for f in dataclasses.fields(SyncConfig)}
    default_events = getattr(SyncConfig, "events_interval_s", None)
    if "events_interval_s" in names and default_events is not None:  # a fixed default (issue 15)
        sync["events_interval_s"] = default_events * scale
    # unset (the default since the contract audit): 3 x poll_interval_s, which scales by itself
    return Config(amocrm=amo, database=database, sync=SyncConfig(**sync))


def _run(args: argparse.Namespace, emulator: Emulator, base_url: str, db_url: sa.URL) -> None:
    args.token = emulator.long_lived_token
    config = _config(args, base_url, db_url)
    upgrade(config.database)
    engine = create_engine(config.database)
    client = AmoClient.connect(config.amocrm, workers=config.sync.pull_workers)
    try:
        run_pull(config, engine, client, full=True)
        print(f"contacts: {args.contacts}  poll: {args.poll_s} s x {args.polls} polls "
              f"(one simulated hour = {int(3600 / DEFAULT_POLL_S)} polls at the default "
              f"{DEFAULT_POLL_S:.0f} s)  config: {_keys(config)}")  # fmt: skip
        _idle(args, config, engine, client, emulator)
    finally:
        client.close()
        engine.dispose()


def _keys(config: Config) -> dict[str, float]:
    names = ("poll_interval_s", "push_interval_s", "events_every_s", "events_interval_s")
    values = {n: getattr(config.sync, n, None) for n in names}
    return {n: round(value, 4) for n, value in values.items() if value is not None}


def _idle(
    args: argparse.Namespace,
    config: Config,
    engine: sa.Engine,
    client: AmoClient,
    emulator: Emulator,
) -> None:
    parts = Parts(config, engine, build_jobs(config, engine, client), Health(args.poll_s),
                  Metrics(), SystemClock())  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(parts).run, args=(stop,), daemon=True)
    first = _pulls(engine)
    emulator.clear_requests()
    thread.start()
    time.sleep(args.polls * args.poll_s)
    stop.set()
    thread.join(30)
    polls = _pulls(engine) - first  # pull runs started (and finished: stop waits for them)
    log = emulator.requests()
    _print(log, polls)


def _pulls(engine: sa.Engine) -> int:
    sql = "SELECT count(*) FROM amocrm.sync_runs WHERE kind = 'pull'"
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(sql)) or 0)


def _print(log: list[dict[str, Any]], polls: int) -> None:
    paths = Counter(f"{r['method']} {r['path']}" for r in log)
    per_poll = len(log) / max(polls, 1)
    print(f"polls: {polls}  requests: {len(log)} {dict(paths)}")
    print(f"requests/poll: {per_poll:.2f}   projected requests/hour at the default "
          f"{DEFAULT_POLL_S:.0f} s poll: {per_poll * 3600 / DEFAULT_POLL_S:.0f}")  # fmt: skip


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--poll-s", type=float, default=0.5, help="the scaled poll interval")
    parser.add_argument("--polls", type=int, default=60, help="60 = one simulated hour")
    return parser.parse_args()


if __name__ == "__main__":
    main()
