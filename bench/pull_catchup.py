"""Incremental catch-up (issue 12's target): one pull after a bulk edit, spread edits, creates and
deletions, at amoCRM's latency and rate limit.

    .venv/bin/python bench/pull_catchup.py            # 20,000 contacts, 600±200 ms, strict 7 rps

The account is mirrored first with a fast full resync (latency and limit off). Then, in the
minute before the pull (amoCRM's clock is set a minute behind ours, so all of it is in the past
when the pull starts, as it is on a real account): one bulk edit puts `--bulk` contacts into one
second, `--edits` more are edited over `--seconds` seconds, `--creates` contacts are created and
`--deletes` deleted. One incremental pull is timed: `amosync pull` as a process from its start
to its exit (with a generated config and this checkout first on `PYTHONPATH`; `--in-process`
calls `run_pull` here instead). It prints the wall time, the requests amoCRM saw by kind, the
target bound `1.5 x (ceil(changed / 250) + chat requests) / 7` and the list requests against
`1.2 x ceil(changed / 250) + 4`; then a second pull (nothing changed) shows that the bulk second
is not read again.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from pull_backlog import _config, admin
from pull_full import TOKEN, by_kind, emulator_and_database, server_counts, server_kinds, timeline
from pull_process import check_imports, run_cli, write_config

from sync.amo.client import AmoClient
from sync.config import DatabaseConfig, LoggingConfig
from sync.db.engine import create_engine
from sync.logs import configure_logging
from sync.pull import run_pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--bulk", type=int, default=4_000)
    parser.add_argument("--edits", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--deletes", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=400)
    parser.add_argument("--jitter-ms", type=float, default=400)
    parser.add_argument("--rate-limit", type=float, default=7)
    parser.add_argument("--max-rps", type=float, default=7)
    parser.add_argument("--timeline", action="store_true", help="print every request's time")
    parser.add_argument("--in-process", action="store_true", help="call run_pull in this process")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    fast = argparse.Namespace(contacts=args.contacts, latency_ms=0, jitter_ms=0, rate_limit=0)
    with emulator_and_database(fast, args.pg) as (port, db):
        run(args, port, db)


def run(args: argparse.Namespace, port: int, db: DatabaseConfig) -> None:
    engine = create_engine(db, pool_size=12)
    with AmoClient.connect(_config(port, db, max_rps=1000).amocrm, workers=8) as client:
        mirrored = run_pull(_config(port, db, max_rps=1000), engine, client, full=True)
    print(f"mirrored             {mirrored.fetched} contacts")
    changed = _scenario(port, args)
    admin(port, "PATCH", "/controls", _controls(args))
    time.sleep(1.1)  # the mirror's burst must leave amoCRM's 1-second window first
    config = _config(port, db, max_rps=args.max_rps)
    folder = tempfile.TemporaryDirectory()
    toml = write_config(
        Path(folder.name), port=port, db_url=db.url.reveal(), token=TOKEN, max_rps=args.max_rps
    )
    if not args.in_process:
        print(f"sync imported from   {check_imports()}")
    for label in ("catch-up pull", "next pull (idle)"):
        before, *_ = server_counts(port)
        started = time.monotonic()
        if args.in_process:
            with AmoClient.connect(config.amocrm, workers=8) as client:
                report = run_pull(config, engine, client)
            said = report.describe() + f" (mode {report.mode})"
        else:
            _, said, _peak = run_cli(toml, ["pull"])
        wall = time.monotonic() - started
        _, api, throttled, _size, kinds = server_kinds(port, before)
        print(f"--- {label}")
        print(f"pull said            {said}")
        where = "run_pull" if args.in_process else "process start to exit"
        print(f"wall time            {wall:.1f} s ({where})")
        print(f"requests (server)    {api}: {by_kind(kinds)}")
        print(f"429 responses        {throttled}")
        if args.timeline:
            timeline(port, before, started)
        if label == "catch-up pull":
            pages = math.ceil(changed / 250)
            bound = (pages + kinds["chats"]) / 7
            print(
                f"bound                ceil({changed}/250) = {pages} pages; "
                f"(pages + chats)/7 = {bound:.1f} s; wall/bound = {wall / bound:.2f} "
                "(target <= 1.5)"
            )
            print(
                f"list requests        {kinds['list']} against 1.2 x {pages} + 4 = "
                f"{1.2 * pages + 4:.1f}"
            )
    engine.dispose()
    folder.cleanup()


def _scenario(port: int, args: argparse.Namespace) -> int:
    """The changes, all in the minute before now by amoCRM's clock; returns how many."""
    admin(port, "POST", "/clock", {"action": "set", "at": time.time() - 60})
    bulk = admin(port, "POST", "/contacts/touch", {"count": args.bulk})
    per_second = -(-args.edits // max(1, args.seconds))
    edited = 0
    while edited < args.edits:
        admin(port, "POST", "/clock", {"action": "advance", "seconds": 1})
        answer = admin(
            port, "POST", "/contacts/touch", {"count": min(per_second, args.edits - edited)}
        )
        edited += len(answer["ids"]) if isinstance(answer, dict) else 0
    admin(port, "POST", "/clock", {"action": "advance", "seconds": 1})
    created = admin(port, "POST", "/contacts", [{"name": f"New {n}"} for n in range(args.creates)])
    ids = created["ids"] if isinstance(created, dict) else []
    bulk_ids = bulk["ids"] if isinstance(bulk, dict) else []
    for contact_id in bulk_ids[: args.deletes]:
        admin(port, "POST", f"/contacts/{contact_id}/delete", None)
    # the pull starts a few seconds after the last change: a change within SETTLE_S (2 s) of a
    # tie's read cannot be told from one during it and makes the pull read that second again
    admin(port, "POST", "/clock", {"action": "advance", "seconds": 3})
    print(
        f"scenario             bulk edit of {len(bulk_ids)} in one second, {edited} edits over "
        f"{args.seconds} s, {len(ids)} creates, {args.deletes} deletions"
    )
    return int(len(bulk_ids) + edited + len(ids) + args.deletes)


def _controls(args: argparse.Namespace) -> dict[str, object]:
    return {
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "rate_limit": args.rate_limit or None,
    }


if __name__ == "__main__":
    main()
