"""The pull's database sink alone: CPU per step in this process and in PostgreSQL's backend.

    .venv/bin/python bench/pull_store.py --contacts 20000

Reads `--contacts` contacts (every embedded entity, and their chat links) from `amosync
emulator` in a subprocess once, keeps the pages as JSON bytes, then stores them page by page on
ONE connection into a fresh database, as the pull's writer does (parse, `to_rows`,
`ContactStore.store_page` with `sync_origin`, the seen list, commit), in three passes:

  1. empty tables (a first full resync);
  2. the same versions again (the scheduled resync over full tables: nothing changes);
  3. every contact one second newer with its name and one custom field value changed, and one
     tag of every tenth contact gone (an incremental pull of edited contacts).

For each pass it prints contacts/s of the sink alone and the CPU seconds of this process
(parsing, mapping, storing) and of the PostgreSQL backend (read from /proc, so other load on
the machine does not count), the backend's split by statement. There is no HTTP or thread in
the timed part: the numbers add up to what a full resync pays per contact outside the fetch.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from pull_full import TOKEN, drop_database, free_port, fresh_database, launch_emulator
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from sync.amo.client import AmoClient
from sync.config import AmoCrmConfig, LoggingConfig, Secret
from sync.core.mapping import FieldDef, chat_rows, field_def, to_rows
from sync.db import staging
from sync.db.contacts import ContactStore
from sync.db.engine import create_engine, sync_origin
from sync.heap import fewer_collections
from sync.logs import configure_logging

WITH = ("leads", "customers", "catalog_elements")
RELATIONS = ["custom_values", "tags", "companies", *WITH]
TICKS = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    pages, chats, fields = read_account(args.contacts)
    count = sum(len(orjson.loads(p)) for p in pages)
    print(f"{count} contacts in {len(pages)} pages, {sum(map(len, pages)) / 2**20:.1f} MB JSON")
    db, name = fresh_database(args.pg)
    try:
        engine = create_engine(db, pool_size=1)
        passes: list[tuple[str, Callable[[bytes], bytes]]] = [
            ("1 empty tables", lambda p: p),
            ("2 same versions again", lambda p: p),
            ("3 every contact edited", edited),
        ]
        with fewer_collections():  # as a pull runs
            for title, change in passes:
                timed_pass(
                    title,
                    engine,
                    pages=[change(p) for p in pages],
                    chats=chats,
                    fields=fields,
                    schema=db.schema,
                )
        engine.dispose()
    finally:
        drop_database(args.pg, name)


def read_account(contacts: int) -> tuple[list[bytes], list[dict[str, Any]], dict[int, FieldDef]]:
    """Every contact page (as JSON bytes), every chat link and the field definitions."""
    port = free_port()
    options = ["--contacts", str(contacts), "--rate-limit", "0", "--token", TOKEN]
    emulator = launch_emulator(port, options)
    try:
        amo = AmoCrmConfig(
            base_url=f"http://127.0.0.1:{port}",
            access_token=Secret(TOKEN),
            max_rps=1000,
            timeout_s=60,
        )
        with AmoClient.connect(amo) as client:
            raw = [f for page in client.iter_custom_fields() for f in page.items]
            pages = [
                orjson.dumps(page.items)
                for page in client.iter_contacts(with_=WITH, order=("id", "asc"))
            ]
            links: list[dict[str, Any]] = []
            for page in pages:
                ids = [int(c["id"]) for c in orjson.loads(page)]
                for found in client.iter_chats(contact_ids=ids):
                    links += found.items
    finally:
        emulator.terminate()
        emulator.wait(30)
    return pages, chat_rows(links), {f.id: f for f in map(field_def, raw)}


def edited(page: bytes) -> bytes:
    """The page one second later: name and the first custom value changed, a tag gone."""
    items = orjson.loads(page)
    for item in items:
        item["updated_at"] = int(item["updated_at"]) + 1
        item["name"] = f"{item.get('name')} (edited)"
        for cf in (item.get("custom_fields_values") or [])[:1]:
            for value in (cf.get("values") or [])[:1]:
                value["value"] = f"{value.get('value')}!"
        tags = (item.get("_embedded") or {}).get("tags") or []
        if tags and int(item["id"]) % 10 == 0:
            tags.pop()
    return orjson.dumps(items)


def timed_pass(
    title: str,
    engine: Engine,
    *,
    pages: list[bytes],
    chats: list[dict[str, Any]],
    fields: dict[int, FieldDef],
    schema: str,
) -> None:
    store = ContactStore(schema)
    spent: dict[str, float] = defaultdict(float)
    with engine.connect() as conn:
        backend = int(conn.scalar(sa.text("SELECT pg_backend_pid()")) or 0)
        statements = StatementCpu(conn, backend)
        copy, staging.copy_rows = staging.copy_rows, statements.copies(staging.copy_rows)
        conn.commit()
        by_contact: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for link in chats:
            by_contact[link["contact_id"]].append(link)
        pg_before, started, count = backend_cpu(backend), time.monotonic(), 0
        for page in pages:
            with cpu(spent, "parse"):
                items = orjson.loads(page)
            with cpu(spent, "to_rows"):
                rows = to_rows(items, fields, WITH)
                links = [x for i in rows.ids for x in by_contact.get(i, ())]
            with cpu(spent, "store_page"):
                sync_origin(conn)
                store.store_page(
                    conn, rows, fields, with_relations=RELATIONS, chats=links, chat_ids=rows.ids
                )
                store.mark_seen(conn, 1, rows.ids)
                conn.commit()
            count += len(items)
        wall = time.monotonic() - started
        pg = backend_cpu(backend) - pg_before
        statements.close()
        staging.copy_rows = copy
    here = sum(spent.values())
    print(f"--- pass {title}: {count / wall:,.0f} contacts/s of the sink alone ({wall:.1f} s)")
    print(f"  per 100k contacts, CPU s: this process {here * 1e5 / count:.2f}, PostgreSQL "
          f"{pg * 1e5 / count:.2f}")  # fmt: skip
    print("  this process: " + ", ".join(f"{k} {v * 1e5 / count:.2f}" for k, v in spent.items()))
    measured = 0.0
    for what, (calls, seconds) in statements.top():
        measured += seconds
        print(f"  PG {seconds * 1e5 / count:6.2f} s/100k  {calls:6d} x  {what}")
    print(f"  PG {(pg - measured) * 1e5 / count:6.2f} s/100k  commits and the rest")


@contextmanager
def cpu(spent: dict[str, float], key: str) -> Iterator[None]:
    """Adds the thread CPU time of the block to `spent[key]`."""
    start = time.thread_time()
    yield
    spent[key] += time.thread_time() - start


_STAT_FILES: dict[int, int] = {}


def backend_cpu(pid: int) -> float:
    """CPU seconds the PostgreSQL backend `pid` has used (it runs on this machine). Read often
    (twice a statement), so the file stays open: its cost must not blur this process's CPU."""
    fd = _STAT_FILES.get(pid)
    if fd is None:
        fd = _STAT_FILES[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    fields = os.pread(fd, 1024, 0).rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class StatementCpu:
    """The backend's CPU per kind of statement on one connection (clock-tick resolution per
    statement, exact enough summed over thousands)."""

    def __init__(self, conn: Connection, backend: int) -> None:
        self.conn, self.backend = conn, backend
        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.start = 0.0
        event.listen(conn, "before_cursor_execute", self._before)
        event.listen(conn, "after_cursor_execute", self._after)

    def _before(self, *args: Any) -> None:
        self.start = backend_cpu(self.backend)

    def _after(self, _conn: Any, _cursor: Any, statement: str, *args: Any) -> None:
        entry = self.stats[kind(statement)]
        entry[0] += 1
        entry[1] += backend_cpu(self.backend) - self.start

    def copies(self, copy: Callable[..., None]) -> Callable[..., None]:
        """`copy` (`sync.db.staging.copy_rows`) with its backend CPU counted as `COPY table`."""

        def counted(conn: Connection, table: str, *args: Any, **options: Any) -> None:
            start = backend_cpu(self.backend)
            copy(conn, table, *args, **options)
            entry = self.stats[f"COPY {table}"]
            entry[0] += 1
            entry[1] += backend_cpu(self.backend) - start

        return counted

    def top(self) -> Iterator[tuple[str, tuple[int, float]]]:
        for what, (calls, seconds) in sorted(self.stats.items(), key=lambda kv: -kv[1][1]):
            yield what, (int(calls), seconds)

    def close(self) -> None:
        event.remove(self.conn, "before_cursor_execute", self._before)
        event.remove(self.conn, "after_cursor_execute", self._after)


def kind(statement: str) -> str:
    """A statement's verb and table, e.g. `INSERT contact_tags`."""
    text = " ".join(statement.split())
    found = re.search(r"\b(INSERT INTO|DELETE FROM|UPDATE|MERGE INTO)\s+(\S+)", text)
    if found:
        return f"{found.group(1).split()[0]} {found.group(2).split('.')[-1].strip(chr(34))}"
    found = re.search(r"\bFROM\s+(\S+)", text)
    return f"SELECT {found.group(1).split('.')[-1].strip(chr(34))}" if found else text[:40]


if __name__ == "__main__":
    main()
