"""PostgreSQL's own catalog views the sync reads (locks, sessions), as Core tables.

They live in `pg_catalog`, named explicitly, so the engine's `schema_translate_map` (which puts
the sync's schema-less tables in the configured schema) never touches them. Only the columns the
sync reads are declared.
"""

from __future__ import annotations

import sqlalchemy as sa


def _view(name: str, *columns: str | sa.ColumnClause[object]) -> sa.TableClause:
    return sa.table(
        name,
        *(sa.column(c) if isinstance(c, str) else c for c in columns),
        schema="pg_catalog",
    )


pg_locks = _view(
    "pg_locks",
    "locktype",
    "granted",
    "pid",
    "database",
    "relation",
    "mode",
    "objsubid",
    sa.column("classid", sa.BigInteger),
    sa.column("objid", sa.BigInteger),
)
pg_stat_activity = _view(
    "pg_stat_activity",
    "pid",
    "application_name",
    "client_addr",
    "state",
    "backend_start",
    "xact_start",
    "query_start",
)
pg_database = _view("pg_database", "oid", "datname")
pg_class = _view("pg_class", "oid", sa.column("relname", sa.Text), "relnamespace", "relkind")
pg_namespace = _view("pg_namespace", "oid", sa.column("nspname", sa.Text))
pg_roles = _view("pg_roles", sa.column("rolname", sa.Text))
pg_attribute = _view(
    "pg_attribute", "attrelid", sa.column("attname", sa.Text), "attnum", "attisdropped"
)


def this_database() -> sa.ScalarSelect[object]:
    """The oid of the database the session is connected to (pg_locks rows carry it)."""
    query = sa.select(pg_database.c.oid).where(pg_database.c.datname == sa.func.current_database())
    return query.scalar_subquery()
