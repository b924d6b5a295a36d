"""Incremental pull of a backlog: how fast `run_pull` catches up after many contacts changed.

    # 5,000 of 20,000 contacts changed over 10 seconds; 600±200 ms latency, strict 7 rps
    .venv/bin/python bench/pull_backlog.py --contacts 20000 --backlog 5000 --seconds 10

The account is first mirrored with a fast full resync (latency and limit off). Then `--backlog`
contacts are touched in amoCRM, spread over `--seconds` seconds of its clock (bulk imports put
thousands into one second, which the walk reads by id), the latency and the rate limit are
switched on, and one incremental pull is timed. The keyset walk is sequential by nature (each
page starts where the last one ended), so its bound is the round trip per page rather than the
rate limit; the benchmark prints the wall time against `requests / 7` to show how close to the
rate limit it gets.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

from pull_full import TOKEN, emulator_and_database, server_log

from sync.amo.client import AmoClient
from sync.config import AmoCrmConfig, Config, DatabaseConfig, LoggingConfig, Secret, SyncConfig
from sync.db.engine import create_engine
from sync.logs import configure_logging
from sync.pull import run_pull


def admin(port: int, method: str, path: str, body: object) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_emulator{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=10, help="amoCRM seconds the backlog spans")
    parser.add_argument("--latency-ms", type=float, default=400)
    parser.add_argument("--jitter-ms", type=float, default=400)
    parser.add_argument("--rate-limit", type=float, default=7)
    parser.add_argument("--max-rps", type=float, default=7)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    fast = argparse.Namespace(contacts=args.contacts, latency_ms=0, jitter_ms=0, rate_limit=0)
    with emulator_and_database(fast, args.pg) as (port, db):
        run(args, port, db)


def run(args: argparse.Namespace, port: int, db: DatabaseConfig) -> None:
    config = _config(port, db, max_rps=1000)
    engine = create_engine(db, pool_size=10)
    with AmoClient.connect(config.amocrm, workers=8) as client:
        mirrored = run_pull(config, engine, client, full=True)
    print(f"mirrored             {mirrored.fetched} contacts")
    _make_backlog(port, args.backlog, args.seconds)
    admin(port, "PATCH", "/controls", _controls(args))
    time.sleep(1.1)  # the mirror's burst must leave amoCRM's 1-second window first
    config = _config(port, db, max_rps=args.max_rps)
    before = len(server_log(port))
    started = time.monotonic()
    with AmoClient.connect(config.amocrm, workers=8) as client:
        report = run_pull(config, engine, client)
    wall = time.monotonic() - started
    api = [r for r in server_log(port)[before:] if str(r.get("path", "")).startswith("/api/v4")]
    print(f"incremental pull     {report.fetched} contacts read ({report.mode} walk)")
    print(f"wall time            {wall:.1f} s")
    print(f"requests (server)    {len(api)}  (pull counted {report.requests})")
    floor = len(api) / 7
    print(f"requests / 7         {floor:.1f} s  (ratio wall/(req/7) = {wall / floor:.2f})")
    print(f"429 responses        {sum(1 for r in api if r.get('status') == 429)}")
    print(f"catch-up             {report.fetched / wall:.0f} contacts/s")
    engine.dispose()


def _make_backlog(port: int, backlog: int, seconds: int) -> None:
    per_second = -(-backlog // max(1, seconds))
    state = admin(port, "GET", "/state", None)
    live = int(state["contacts"]) if isinstance(state, dict) else backlog
    touched = 0
    while touched < min(backlog, live):
        admin(port, "POST", "/clock", {"action": "advance", "seconds": 1})
        count = min(per_second, backlog - touched)
        answer = admin(port, "POST", "/contacts/touch", {"count": count})
        touched += len(answer["ids"]) if isinstance(answer, dict) else 0
    admin(port, "POST", "/clock", {"action": "advance", "seconds": 2})
    print(f"backlog              {touched} contacts touched over {seconds} s of amoCRM's clock")


def _controls(args: argparse.Namespace) -> dict[str, object]:
    return {
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "rate_limit": args.rate_limit or None,
    }


def _config(port: int, db: DatabaseConfig, *, max_rps: float) -> Config:
    amo = AmoCrmConfig(
        base_url=f"http://127.0.0.1:{port}",
        access_token=Secret(TOKEN),
        max_rps=max_rps,
        timeout_s=60,
    )
    return Config(amocrm=amo, database=db, sync=SyncConfig())


if __name__ == "__main__":
    main()
