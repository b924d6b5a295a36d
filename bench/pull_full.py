"""Full resync benchmark: `amosync pull --full` (or `run_pull(full=True)`) against `amosync
emulator` in a subprocess.

    # the rate-limited target: 20,000 contacts, 600±200 ms latency, strict 7 rps; times the
    # command `amosync pull --full` from its start to its exit (--cli, the default here)
    .venv/bin/python bench/pull_full.py --contacts 20000 --latency-ms 400 --jitter-ms 400 \\
        --rate-limit 7 --max-rps 7
    # the same with updated_at packed into one day (or spread over years), beside the old
    # order[id] walk of commit 6d7e778 run as a process against the same emulator
    .venv/bin/python bench/pull_full.py --spread-days 1 --old-walk 6d7e778 --passes 1
    # ingest speed and memory: latency and rate limit off (in-process, the default here)
    .venv/bin/python bench/pull_full.py --contacts 100000 --rate-limit 0 --max-rps 1000

`--cli` runs the command with a generated config and this checkout first on `PYTHONPATH`, and
prints its wall time from spawn to exit, the requests amoCRM saw by kind, 429s, the ratio to
`(list + chat requests) / 7` and the old walk's cost: measured with `--old-walk COMMIT`, else
modelled as issue 12 measured it (⌈N/250⌉ list + ⌈N/250⌉ chat requests at 0.77 of the rate
bound). `--in-process` calls `run_pull` in this process (ingest rate, CPU split, peak RSS).

The emulator runs in its own process (so its JSON rendering does not compete with the pull for
this process's GIL). A fresh database is created on `--pg` (default: the local server the tests
use), migrated, and dropped afterwards. Runs `--passes` full resyncs in a row (default 2: the
first fills empty tables, the second re-reads everything over full tables, as the scheduled
resync does). For each it prints the rows stored per relation table, the wall time, the API
requests the server saw and the target `1.25 x requests / 7`, the 429s, contacts per second and
this process's peak RSS: the pull's own, since the emulator's request log (tens of MB at
1,000,000 contacts) is fetched and counted in a child process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from sync.amo.client import AmoClient
from sync.config import AmoCrmConfig, Config, DatabaseConfig, LoggingConfig, Secret, SyncConfig
from sync.db.budget import BudgetRow
from sync.db.engine import create_engine
from sync.db.migrate import upgrade
from sync.heap import fewer_malloc_arenas
from sync.logs import configure_logging
from sync.pull import run_pull

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pull_process import check_imports, old_walk_tree, run_cli, write_config

AMOSYNC = str(Path(sys.executable).with_name("amosync"))
TOKEN = "bench-token"
RELATION_TABLES = (
    "contact_custom_field_values",
    "contact_tags",
    "contact_companies",
    "contact_leads",
    "contact_customers",
    "contact_catalog_elements",
    "contact_chats",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    return launch_emulator(
        port,
        ["--contacts", str(args.contacts), "--latency-ms", str(args.latency_ms),
         "--jitter-ms", str(args.jitter_ms), "--rate-limit", str(args.rate_limit),
         "--token", TOKEN, "--block-after", "1000000",
         "--spread-days", str(getattr(args, "spread_days", 365))],
    )  # fmt: skip


def launch_emulator(port: int, options: list[str]) -> subprocess.Popen[bytes]:
    """`amosync emulator --port PORT OPTIONS` in its own process, once it answers."""
    command = [AMOSYNC, "emulator", "--port", str(port), *options]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/state", timeout=5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the emulator did not start")


def server_log(port: int) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/_emulator/requests"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = json.load(response)
    return data if isinstance(data, list) else data.get("requests", [])


# Counts the emulator's request log from entry `skip` on: entries, API requests, 429s, bytes,
# and the API requests by kind (list pages, by-id reads, chat lookups, everything else).
_COUNT_LOG = """
import json, re, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as response:
    body = response.read()
data = json.loads(body)
log = data if isinstance(data, list) else data.get("requests", [])
api = [r for r in log[int(sys.argv[2]):] if str(r.get("path", "")).startswith("/api/v4")]
kinds = {"list": 0, "by_id": 0, "chats": 0, "other": 0}
for r in api:
    path, query = str(r.get("path")), str(r.get("query", ""))
    if path == "/api/v4/contacts/chats":
        kinds["chats"] += 1
    elif path == "/api/v4/contacts" and "filter[id]" not in query:
        kinds["list"] += 1
    elif path == "/api/v4/contacts" or re.fullmatch(r"/api/v4/contacts/\\d+", path):
        kinds["by_id"] += 1
    else:
        kinds["other"] += 1
print(json.dumps([len(log), len(api), sum(r.get("status") == 429 for r in api), len(body), kinds]))
"""


def server_counts(port: int, skip: int = 0) -> tuple[int, int, int, int]:
    """(log entries, API requests and 429s from entry `skip` on, log size in bytes)."""
    entries, api, throttled, size, _kinds = server_kinds(port, skip)
    return entries, api, throttled, size


def server_kinds(port: int, skip: int = 0) -> tuple[int, int, int, int, dict[str, int]]:
    """`server_counts` and the API requests by kind, counted in a child process. The log of a
    1,000,000-contact resync is tens of MB of JSON (every chat lookup's query names 250 contact
    ids); parsed here, it would sit in this process's peak RSS, which is meant to be the pull's
    alone."""
    url = f"http://127.0.0.1:{port}/_emulator/requests"
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_LOG, url, str(skip)],
        capture_output=True,
        check=True,
        text=True,
        timeout=300,
    )
    entries, api, throttled, size, kinds = json.loads(out.stdout)
    return int(entries), int(api), int(throttled), int(size), dict(kinds)


def fresh_database(pg: str) -> tuple[DatabaseConfig, str]:
    admin = sa.create_engine(make_url(pg), isolation_level="AUTOCOMMIT")
    name = f"amosync_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(pg).set(database=name)
    db = DatabaseConfig(url=Secret(url.render_as_string(hide_password=False)), schema="amocrm")
    upgrade(db)
    return db, name


def drop_database(pg: str, name: str) -> None:
    admin = sa.create_engine(make_url(pg), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=400)
    parser.add_argument("--jitter-ms", type=float, default=400)
    parser.add_argument("--rate-limit", type=float, default=7)
    parser.add_argument("--max-rps", type=float, default=7)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--passes", type=int, default=2, help="full resyncs in a row")
    parser.add_argument("--timeline", action="store_true", help="print every request's time")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--spread-days", type=float, default=365,
        help="the seed's updated_at spread over this many days (365 * 5: years; 1: one day)",
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cli", action="store_true", help="time `amosync pull --full` processes")
    mode.add_argument("--in-process", action="store_true", help="call run_pull in this process")
    parser.add_argument("--old-walk", metavar="COMMIT", help="also run that commit's pull --full")
    args = parser.parse_args()
    fewer_malloc_arenas()  # as `amosync` does at its start (sync.heap)
    configure_logging(LoggingConfig(level="warning", format="json"))
    cli = args.cli or (not args.in_process and args.rate_limit > 0)
    with emulator_and_database(args, args.pg) as (port, db):
        if cli:
            run_processes(args, port, db)
        else:
            run(args, port, db)


@contextmanager
def emulator_and_database(
    emulator_args: argparse.Namespace, pg: str
) -> Iterator[tuple[int, DatabaseConfig]]:
    """An emulator subprocess on a free port and a fresh migrated database; both go after."""
    port = free_port()
    emulator = start_emulator(emulator_args, port)
    try:
        db, name = fresh_database(pg)
        try:
            yield port, db
        finally:
            drop_database(pg, name)
    finally:
        emulator.terminate()
        try:
            emulator.wait(30)
        except subprocess.TimeoutExpired:
            emulator.kill()


def run(args: argparse.Namespace, port: int, db: DatabaseConfig) -> None:
    amo = AmoCrmConfig(
        base_url=f"http://127.0.0.1:{port}",
        access_token=Secret(TOKEN),
        max_rps=args.max_rps,
        timeout_s=60,
    )
    config = Config(amocrm=amo, database=db, sync=SyncConfig(pull_workers=args.workers))
    engine = create_engine(db, pool_size=args.workers + 2)
    # the rate budget shared through PostgreSQL, as the CLI and the daemon build the client
    client = AmoClient.connect(amo, workers=args.workers, budget=BudgetRow(engine))
    with client:
        for number in range(1, args.passes + 1):
            # pass 1 fills empty tables; later passes re-read every contact over full tables
            # (the scheduled full resync: every relation row is diffed, few change)
            print(f"--- pass {number}: {'empty tables' if number == 1 else 'tables filled'}")
            measure(args, port, config, engine, client)
    engine.dispose()


def run_processes(args: argparse.Namespace, port: int, db: DatabaseConfig) -> None:
    """`amosync pull --full` as a process, `--passes` times; then the old walk if asked."""
    print(f"sync imported from   {check_imports()}")
    engine = create_engine(db, pool_size=2)
    with tempfile.TemporaryDirectory() as folder:
        url = db.url.reveal()
        config = write_config(
            Path(folder), port=port, db_url=url, token=TOKEN, max_rps=args.max_rps,
            workers=args.workers,
        )  # fmt: skip
        for number in range(1, args.passes + 1):
            print(f"--- pass {number} (process): {'empty tables' if number == 1 else 'filled'}")
            measure_process(args, port, config, engine, db.schema)
        if args.old_walk:
            old_walk(args, port, folder)
    engine.dispose()


def measure_process(
    args: argparse.Namespace, port: int, config: Path, engine: Engine, schema: str
) -> None:
    before, *_ = server_counts(port)
    spawned = time.monotonic()
    wall, line, peak_mb = run_cli(config, ["pull", "--full"])
    _, api, throttled, _size, kinds = server_kinds(port, before)
    if args.timeline:
        timeline(port, before, spawned)
    print(f"amosync said         {line}")
    print(f"relation rows        {relation_rows(engine, schema)}")
    print(f"wall time            {wall:.1f} s (process start to exit)")
    print(f"requests (server)    {api}: " + by_kind(kinds))
    print_bound(wall, kinds, 1.15)
    print(f"429 responses        {throttled}")
    print(f"peak RSS (process)   {peak_mb:.0f} MB")
    print(f"old order[id] walk   {old_model(args):.1f} s modelled (issue 12: 0.77 of the bound)")


def old_model(args: argparse.Namespace) -> float:
    """The old walk's cost as issue 12 measured it: ceil(N/250) list + ceil(N/250) chat
    requests at 0.77 of the rate bound (29.7 s for 80 + 80 at 7 rps)."""
    pages = math.ceil(args.contacts / 250)
    return float(2 * pages / args.max_rps / 0.77)


def old_walk(args: argparse.Namespace, port: int, folder: str) -> None:
    """The old commit's `amosync pull --full` against the same emulator, into a database of its
    own (migrated by its own code)."""
    tree = old_walk_tree(args.old_walk, Path(folder) / "old")
    admin = sa.create_engine(make_url(args.pg), isolation_level="AUTOCOMMIT")
    name = f"amosync_bench_old_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
        config = write_config(
            tree, port=port, db_url=url, token=TOKEN, max_rps=args.max_rps, workers=args.workers
        )
        print(f"--- the old walk ({args.old_walk}), sync imported from {check_imports(tree)}")
        run_cli(config, ["db", "upgrade"], checkout=tree)
        before, *_ = server_counts(port)
        wall, line, peak_mb = run_cli(config, ["pull", "--full"], checkout=tree)
        _, api, throttled, _size, kinds = server_kinds(port, before)
        print(f"amosync said         {line}")
        print(f"wall time            {wall:.1f} s (process start to exit)")
        print(f"requests (server)    {api}: " + by_kind(kinds) + f"; 429s {throttled}")
        print(f"peak RSS (process)   {peak_mb:.0f} MB")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(
    args: argparse.Namespace, port: int, config: Config, engine: Engine, client: AmoClient
) -> None:
    before, *_ = server_counts(port)
    cpu_before = cpu_seconds(port, engine)
    started = time.monotonic()
    report = run_pull(config, engine, client, full=True)
    wall = time.monotonic() - started
    cpu_after = cpu_seconds(port, engine)
    cpu: dict[str, float] = {}
    for (name, pid), spent in cpu_after.items():
        cpu[name] = cpu.get(name, 0.0) + spent - cpu_before.get((name, pid), 0.0)
    _, api, throttled, log_bytes, kinds = server_kinds(port, before)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"contacts stored      {report.fetched} ({report.upserted} written)")
    print(f"relation rows        {relation_rows(engine, config.database.schema)}")
    print(f"wall time            {wall:.1f} s (run_pull; the CLI adds its start-up)")
    print(f"requests (server)    {api}  (pull counted {report.requests}): " + by_kind(kinds))
    print_bound(wall, kinds, 1.15)
    if getattr(args, "timeline", False):
        timeline(port, before, started)
    print(f"429 responses        {throttled}")
    print(f"ingest               {report.fetched / wall:.0f} contacts/s")
    print(f"peak RSS (this proc) {peak_mb:.0f} MB")
    print(f"request log          {log_bytes / 2**20:.1f} MB (read in a child process)")
    print("CPU seconds          " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    cpus = os.cpu_count() or 1
    # the machine is shared: what the three processes' CPU allows with every core to themselves
    bound = report.fetched * cpus / max(sum(cpu.values()), 1e-9)
    print(f"CPU-bound rate       {bound:.0f} contacts/s (contacts x {cpus} cpus / CPU seconds)")
    print(f"cpus                 {os.cpu_count()} (shared with other engineers' jobs)")


def timeline(port: int, skip: int, started: float) -> None:
    """Each API request: when it arrived (s after the pull began), what it asked."""
    offset = time.time() - time.monotonic()
    for entry in server_log(port)[skip:]:
        query = str(entry.get("query", ""))
        for noise in ("&with=leads,customers,catalog_elements", "&limit=250"):
            query = query.replace(noise, "")
        at = float(str(entry["arrived_at"])) - offset - started
        print(f"  {at:6.2f} {entry['status']} {entry['path']} {query[:110]}")


def by_kind(kinds: dict[str, int]) -> str:
    return ", ".join(f"{name} {number}" for name, number in kinds.items())


def print_bound(wall: float, kinds: dict[str, int], factor: float) -> None:
    """The target's bound: (list + chat requests) / 7 per second, and wall against it."""
    bound = (kinds["list"] + kinds["chats"]) / 7
    ratio = wall / bound if bound else float("nan")
    print(
        f"bound (list+chats)/7 {bound:.1f} s  ratio wall/bound = {ratio:.2f} "
        f"(target <= {factor}); other requests {kinds['other']}, by id {kinds['by_id']}"
    )


def cpu_seconds(port: int, engine: Engine) -> dict[tuple[str, int], float]:
    """CPU time used so far by this process, the emulator and PostgreSQL (Linux /proc).

    "postgres" counts the backends connected to this benchmark's database (the pool keeps its
    backends alive, so a difference over a pass is what it cost; autovacuum workers that come
    and go are not in it), not the whole server: other jobs on the machine use the same one.
    "pg server" is the server's shared processes (WAL writer, checkpointer, …), which work for
    every database on it. Keyed by (name, pid): a backend that ends during a pass takes its
    CPU with it, but must not take its earlier CPU off the others'."""
    spent = {("pull", os.getpid()): sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    with engine.connect() as conn:
        ours = set(
            conn.scalars(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
        )
        shared = set(
            conn.scalars(sa.text("SELECT pid FROM pg_stat_activity WHERE datname IS NULL"))
        )
    ticks = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pid = int(proc.name)
        name = "postgres" if pid in ours else "pg server" if pid in shared else None
        if f"--port {port} " in command and "emulator" in command:
            name = "emulator"
        if name:
            spent[name, pid] = (int(fields[11]) + int(fields[12])) / ticks
    return spent


def relation_rows(engine: Engine, schema: str) -> str:
    """Rows per relation table: the ingest rate counts contacts *with* all of these."""
    counts = []
    with engine.connect() as conn:
        for table in RELATION_TABLES:
            counted = conn.scalar(sa.text(f'SELECT count(*) FROM "{schema}".{table}'))
            counts.append(f"{table.removeprefix('contact_')} {counted}")
    return ", ".join(counts)


if __name__ == "__main__":
    main()
