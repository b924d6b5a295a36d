"""Shared budget: the account allows fewer requests/s than the client's `max_rps` (other
integrations use the rest), and amoCRM blocks a client that keeps getting 429s.

    .venv/bin/python bench/shared_budget.py            # 5,000 contacts, 3 rps allowed, max_rps 7
    # issue 12's report: 2 rps allowed, the emulator's default block (the 30th 429 ever), 3 runs
    .venv/bin/python bench/shared_budget.py --account-rps 2 --block-after 30 --block-window-s 0 \
        --runs 3

`amosync emulator` runs in its own process with 600±200 ms latency, its own 7 rps per client
and an account-wide limit of `--account-rps` (3) across every client; it blocks (403 until
reset) at the `--block-after`-th 429 within a minute (10, a third of the emulator's default,
which counts 30 ever). One `pull --full` runs with the product's client as the CLI builds it
(`sync.wiring.amo_client`: the rate budget shared through PostgreSQL, AIMD on 429). Printed:
wall time, requests the server saw and their statuses, the 429s, whether the client was
blocked, the most requests in any second, and the rate the client allowed itself at the end.
Target (issue 12): at most 20 x 429 and never a block.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections import Counter

import sqlalchemy as sa
from pull_full import launch_emulator
from sqlalchemy.engine import make_url

from sync.config import AmoCrmConfig, Config, DatabaseConfig, LoggingConfig, Secret, SyncConfig
from sync.db.migrate import upgrade
from sync.emulator import busiest_window
from sync.errors import SyncError
from sync.logs import configure_logging
from sync.pull import run_pull
from sync.wiring import amo_client, database_engine

TOKEN = "bench-token"


def main() -> None:
    args = _args()
    configure_logging(LoggingConfig(level="warning", format="console"))  # the 429 warnings
    port = _free_port()
    emulator = _start_emulator(args, port)
    admin = sa.create_engine(make_url(args.pg), isolation_level="AUTOCOMMIT")
    name = f"amosync_bench_budget_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        db = DatabaseConfig(url=Secret(make_url(args.pg).set(database=name).render_as_string(
            hide_password=False)))  # fmt: skip
        upgrade(db)
        _run(args, port, db)
    finally:
        emulator.terminate()
        emulator.wait(30)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _run(args: argparse.Namespace, port: int, db: DatabaseConfig) -> None:
    amo = AmoCrmConfig(base_url=f"http://127.0.0.1:{port}", access_token=Secret(TOKEN),
                       max_rps=args.max_rps, timeout_s=60)  # fmt: skip
    config = Config(amocrm=amo, database=db, sync=SyncConfig(pull_workers=args.workers))
    engine = database_engine(config)
    seen = 0
    for number in range(1, args.runs + 1):
        started = time.monotonic()
        with amo_client(config, engine) as client:  # a new process each time, as the CLI is
            try:
                report = run_pull(config, engine, client, full=True)
                outcome = f"ok, {report.fetched} stored"
            except SyncError as exc:
                outcome = f"FAILED: {exc}"
            wall = time.monotonic() - started
            allowed = client.session.limiter.allowed_rps
        log = _server_log(port)
        print(f"--- run {number} of {args.runs}")
        _print(args, log[seen:], wall, allowed, outcome)
        seen = len(log)
    engine.dispose()


Log = list[dict[str, object]]


def _print(args: argparse.Namespace, log: Log, wall: float, allowed: float, outcome: str) -> None:
    api = [r for r in log if str(r.get("path", "")).startswith("/api/v4")]
    statuses = Counter(int(str(r["status"])) for r in api)
    served = statuses[200] + statuses[204]
    window = f"within {args.block_window_s:g} s" if args.block_window_s else "ever"
    print(f"account allows       {args.account_rps:g} rps (client max_rps {args.max_rps:g}), "
          f"block at the {args.block_after}th 429 {window}")  # fmt: skip
    print(f"pull --full          {args.contacts} contacts: {outcome}")
    print(f"wall time            {wall:.1f} s  ({served} answered requests = "
          f"{served / wall:.2f} rps against {args.account_rps:g} allowed)")  # fmt: skip
    print(f"requests (server)    {len(api)}  {dict(sorted(statuses.items()))}")
    print(f"429 responses        {statuses[429]}  (target <= 20)")
    print(f"blocked (403)        {'YES' if statuses[403] else 'no'}")
    print(f"most in any 1 s      {busiest_window(api)}")
    print(f"allowed rate at end  {allowed:.2f} rps")
    print(f"cpus                 {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")


def _start_emulator(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    return launch_emulator(
        port,
        ["--contacts", str(args.contacts), "--latency-ms", str(args.latency_ms),
         "--jitter-ms", str(args.jitter_ms), "--rate-limit", "7",
         "--account-rate-limit", str(args.account_rps), "--block-after", str(args.block_after),
         "--block-window-s", str(args.block_window_s), "--token", TOKEN],
    )  # fmt: skip


def _server_log(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/requests", timeout=60) as r:
        data = json.load(r)
    return data if isinstance(data, list) else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--account-rps", type=float, default=3)
    parser.add_argument("--max-rps", type=float, default=7)
    parser.add_argument("--block-after", type=int, default=10)
    parser.add_argument("--block-window-s", type=float, default=60, help="0 = every 429 ever")
    parser.add_argument("--runs", type=int, default=1, help="full resyncs one after another")
    parser.add_argument("--latency-ms", type=float, default=400)
    parser.add_argument("--jitter-ms", type=float, default=400)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    return parser.parse_args()


if __name__ == "__main__":
    main()
