"""Everything a full resync stores, as one ordered text dump: compare two checkouts' pulls.

    PYTHONPATH=. .venv/bin/python bench/pull_dump.py --contacts 20000 --out /tmp/before.txt
    ... change the pull ...
    PYTHONPATH=. .venv/bin/python bench/pull_dump.py --contacts 20000 --out /tmp/after.txt
    cmp /tmp/before.txt /tmp/after.txt

Runs `run_pull(full=True)` against `amosync emulator` (latency and rate limit off, the seed's
default) into a fresh database, then writes every row of the contact tables (`contacts`, the
relation tables, `contact_chats`, `contact_custom_fields`), each table ordered by all of its
columns, every value as PostgreSQL's text of it. The columns that say *when* the pull ran
(`synced_at`, `fetched_at`) are left out; so are the `sync_*` tables (runs, cursor, budget),
whose rows are times and counts of the run. The seed is fixed (its times end at the
emulator's `data_epoch`, not at its clock), so two runs store the same account.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import sqlalchemy as sa
from pull_full import emulator_and_database, run

from sync.config import LoggingConfig
from sync.logs import configure_logging

TABLES = (
    "contacts",
    "contact_custom_field_values",
    "contact_tags",
    "contact_companies",
    "contact_leads",
    "contact_customers",
    "contact_catalog_elements",
    "contact_chats",
    "contact_custom_fields",
)
WHEN = ("synced_at", "fetched_at")  # when the pull ran, not what it stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning", format="json"))
    settings = argparse.Namespace(
        contacts=args.contacts, latency_ms=0, jitter_ms=0, rate_limit=0, max_rps=1000,
        workers=8, passes=1, spread_days=365,
    )  # fmt: skip
    with emulator_and_database(settings, args.pg) as (port, db):
        run(settings, port, db)
        engine = sa.create_engine(db.url.reveal())
        with engine.connect() as conn, args.out.open("w", encoding="utf-8") as out:
            for table in TABLES:
                dump_table(conn, db.schema, table, out)
        engine.dispose()
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"dump {args.out}: sha256 {digest}")


def dump_table(conn: sa.Connection, schema: str, table: str, out: object) -> None:
    columns = [
        name
        for name in conn.scalars(
            sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = :s "
                "AND table_name = :t ORDER BY ordinal_position"
            ),
            {"s": schema, "t": table},
        )
        if name not in WHEN
    ]
    shown = ", ".join(f'"{c}"::text' for c in columns)
    order = ", ".join(f'"{c}"::text' for c in columns)
    rows = conn.execute(sa.text(f'SELECT {shown} FROM "{schema}"."{table}" ORDER BY {order}'))
    assert hasattr(out, "write")
    out.write(f"== {table} ({', '.join(columns)})\n")
    for row in rows:
        out.write("\t".join("\\N" if v is None else repr(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
