"""The schema this version of the code expects, built from nothing: the tables, indexes and
constraints of `sync.db.schema.metadata`, then the functions, triggers and views of
`sync.db.capture`, `sync.db.cf_check` and `sync.db.views`.

Migrations never use this: a revision is frozen history and holds its own SQL. A database
upgraded revision by revision must end up equal to one built here
(tests/integration/test_migrations_frozen.py compares them object by object), so a change to a
table, trigger, function or view ships as a new revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.db import capture, cf_check, outbox_guard, views
from sync.db.schema import metadata


def routine_statements(schema: str) -> list[str]:
    """The functions, triggers, views and view comments, in the order they can be created."""
    return (
        capture.create_statements(schema)
        + outbox_guard.create_statements(schema)
        + cf_check.create_statements(schema)
        + views.create_statements(schema)
    )


def create_all(conn: Connection, schema: str) -> None:
    """Create the whole schema `schema` as this code expects it (in the caller's transaction)."""
    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    conn.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
    metadata.create_all(conn)
    for statement in routine_statements(schema):
        conn.execute(sa.text(statement))
