"""Issue 15 target: a local UPDATE is in amoCRM within p95 <= 1.5 s (600 ms latency, 7 rps).

    .venv/bin/python bench/push_latency.py [--edits 30] [--latency-ms 600] [--contacts 500]

The emulator runs in its own process (`amosync emulator`, 600 ms on every answer, the strict
7 requests/s window); the daemon (`sync.daemon.Daemon` with the jobs `amosync run` builds and the
default intervals: pull every 60 s, push every 15 s, debounce 0.3 s / 1 s) runs here against a
scratch database. After its first pull and push, one contact at a time is renamed with a plain
SQL UPDATE; the delay is from the UPDATE's commit to the arrival of the PATCH that carries it at
the emulator (its request log, same machine clock). Each edit waits 0.5-2.5 s (at random) after
the previous one arrived, so the edits fall anywhere in the push and poll intervals and some meet
a running pull. Printed: p50, p95, max,
and the requests by kind. Needs a PostgreSQL: $AMOSYNC_TEST_DATABASE_URL, else
postgres@127.0.0.1:5432 (a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import httpx
import sqlalchemy as sa
from scratch import drop_database, emulator_process, scratch_database

from sync.amo.client import AmoClient
from sync.clock import SystemClock
from sync.config import AmoCrmConfig, Config, DatabaseConfig, LoggingConfig, Secret, SyncConfig
from sync.daemon.health import Health
from sync.daemon.leader import Daemon, Parts
from sync.daemon.metrics import Metrics
from sync.daemon.run import build_jobs
from sync.db.engine import create_engine
from sync.db.migrate import upgrade
from sync.logs import configure_logging

TOKEN = "bench-token"
LISTENING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND query LIKE 'LISTEN %changes%'"
)
_ADMIN = httpx.Client(timeout=60)


def main() -> None:
    args = _args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    admin, db_url = scratch_database()
    server = _start_emulator(args)
    try:
        _run(args, db_url)
    finally:
        server.terminate()
        server.wait(timeout=30)
        drop_database(admin, db_url)


def _start_emulator(args: argparse.Namespace) -> subprocess.Popen[str]:
    options = ["--port", str(args.port), "--contacts", str(args.contacts), "--seed", "11",
               "--latency-ms", str(args.latency_ms), "--rate-limit", "7", "--block-after", "0",
               "--token", TOKEN]  # fmt: skip
    return emulator_process(options)


def _run(args: argparse.Namespace, db_url: sa.URL) -> None:
    base_url = f"http://127.0.0.1:{args.port}"
    database = DatabaseConfig(url=Secret(db_url.render_as_string(hide_password=False)))
    amo = AmoCrmConfig(base_url=base_url, access_token=Secret(TOKEN), max_rps=7.0)
    config = Config(amocrm=amo, database=database, sync=SyncConfig(full_resync_cron=""))
    upgrade(database)
    engine = create_engine(database)
    client = AmoClient.connect(amo, workers=config.sync.pull_workers)
    parts = Parts(config, engine, build_jobs(config, engine, client), Health(60), Metrics(),
                  SystemClock())  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(parts).run, args=(stop,), daemon=True)
    thread.start()
    try:
        ready(engine)
        _ADMIN.delete(f"{base_url}/_emulator/requests")
        delays = [one_edit(engine, base_url, n, pick(engine, n)) for n in range(args.edits)]
        _print(args, base_url, delays)
    finally:
        stop.set()
        thread.join(30)
        client.close()
        engine.dispose()


def ready(engine: sa.Engine) -> None:
    done = "SELECT count(DISTINCT kind) FROM amocrm.sync_runs WHERE status = 'succeeded'"
    with engine.connect() as conn:
        while conn.scalar(sa.text(done)) != 2 or conn.scalar(sa.text(LISTENING)) == 0:
            conn.rollback()
            time.sleep(0.1)


def pick(engine: sa.Engine, number: int) -> int:
    sql = "SELECT id FROM amocrm.contacts WHERE NOT is_deleted ORDER BY id OFFSET :n LIMIT 1"
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(sql), {"n": number}) or 0)


def one_edit(engine: sa.Engine, base_url: str, number: int, contact: int) -> float:
    """Rename `contact` by SQL; seconds from its commit until amoCRM received the PATCH."""
    time.sleep(random.uniform(0.5, 2.5))  # spread over the push and poll intervals
    with engine.begin() as conn:
        sql = "UPDATE amocrm.contacts SET name = :n WHERE id = :i"
        conn.execute(sa.text(sql), {"n": f"latency {number}", "i": contact})
    committed = time.time()
    while True:
        arrived = _patch_arrival(base_url, contact)
        if arrived is not None:
            return arrived - committed
        time.sleep(0.02)


def _patch_arrival(base_url: str, contact: int) -> float | None:
    for entry in _log(base_url):
        if entry["method"] == "PATCH" and any(e.get("id") == contact for e in entry["body"] or ()):
            return float(entry["arrived_at"])
    return None


def _log(base_url: str) -> list[dict[str, Any]]:
    log = _ADMIN.get(f"{base_url}/_emulator/requests").json()
    return list(log.get("requests", log) if isinstance(log, dict) else log)


def _print(args: argparse.Namespace, base_url: str, delays: list[float]) -> None:
    ordered = sorted(delays)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    kinds = Counter(f"{r['method']} {r['path']} {r['status']}" for r in _log(base_url))
    print(f"edits: {len(delays)}  latency: {args.latency_ms} ms  rate limit: 7 rps  "
          f"cpu cores: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}")  # fmt: skip
    verdict = "PASS" if p95 <= 1.5 else "FAIL"
    print(f"UPDATE -> PATCH at amoCRM: p50 {statistics.median(delays):.2f} s  p95 {p95:.2f} s  "
          f"max {max(delays):.2f} s   target p95 <= 1.5 s -> {verdict}")  # fmt: skip
    print(f"requests: {dict(kinds)}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--latency-ms", type=float, default=600)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--port", type=int, default=8913)
    return parser.parse_args()


if __name__ == "__main__":
    main()
