"""The read-only role for BI tools (`amosync db grant-reader`).

    amosync db grant-reader                    # role amocrm_reader (NOLOGIN, a group role)
    CREATE ROLE metabase LOGIN PASSWORD '…' IN ROLE amocrm_reader;   -- then, per BI user

The role may read every table and view of the sync's schema except `sync_state`, which holds the
OAuth tokens, and the `error` column of `sync_runs` and `sync_requests` (an error may quote
contact data; the reader still sees every other column of the run history: name the columns,
`SELECT *` on those two tables is refused). It cannot write anything: no INSERT/UPDATE/DELETE
grants, and `default_transaction_read_only` is set on it. Running the command again is harmless
and also grants tables that later migrations added (run it after `amosync db upgrade`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import Connection

from sync.db.catalog import pg_attribute, pg_class, pg_namespace, pg_roles

# Tables a reader must not see, with the reason (shown by the command).
PRIVATE_TABLES = {"sync_state": "holds the OAuth tokens"}
# Columns a reader must not see (the rest of the table is granted column by column).
PRIVATE_COLUMNS = {"sync_runs": ("error",), "sync_requests": ("error",)}


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def grant_reader(conn: Connection, schema: str, role: str) -> list[str]:
    """Create `role` if missing and grant it read access to `schema`; the tables granted."""
    quoted_role, quoted_schema = _quote(conn, role), _quote(conn, schema)
    exists = conn.scalar(sa.select(sa.literal(1)).where(pg_roles.c.rolname == role))
    if not exists:
        conn.execute(sa.text(f"CREATE ROLE {quoted_role} NOLOGIN"))
    conn.execute(sa.text(f"ALTER ROLE {quoted_role} SET default_transaction_read_only = on"))
    database = _quote(conn, str(conn.scalar(sa.select(sa.func.current_database()))))
    conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {database} TO {quoted_role}"))
    conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}"))
    names = _relations(conn, schema)
    for name in names:
        target = f"{quoted_schema}.{_quote(conn, name)}"
        conn.execute(sa.text(f"REVOKE ALL ON {target} FROM {quoted_role}"))  # column grants too
        if name in PRIVATE_TABLES:
            continue
        columns = _public_columns(conn, schema, name)
        conn.execute(sa.text(f"GRANT SELECT {columns}ON {target} TO {quoted_role}"))
    return [name for name in names if name not in PRIVATE_TABLES]


def _public_columns(conn: Connection, schema: str, table: str) -> str:
    """`(a, b, …) ` of the columns a reader may see, or "" for the whole table."""
    hidden = PRIVATE_COLUMNS.get(table)
    if not hidden:
        return ""
    relation = sa.cast(f"{_quote(conn, schema)}.{_quote(conn, table)}", REGCLASS)
    query = (
        sa.select(pg_attribute.c.attname)
        .where(pg_attribute.c.attrelid == relation, pg_attribute.c.attnum > 0)
        .where(sa.not_(pg_attribute.c.attisdropped))
        .order_by(pg_attribute.c.attnum)
    )
    names = conn.scalars(query)
    return "(" + ", ".join(_quote(conn, n) for n in names if n not in hidden) + ") "


def _relations(conn: Connection, schema: str) -> list[str]:
    """Tables, views and materialised views of the schema."""
    query = (
        sa.select(pg_class.c.relname)
        .join(pg_namespace, pg_namespace.c.oid == pg_class.c.relnamespace)
        .where(pg_namespace.c.nspname == schema, pg_class.c.relkind.in_(("r", "v", "m", "p")))
        .order_by(pg_class.c.relname)
    )
    return list(conn.scalars(query))
