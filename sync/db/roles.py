"""The read-only role for BI tools (`amosync db grant-reader`).

    amosync db grant-reader                    # role amocrm_reader (NOLOGIN, a group role)
    CREATE ROLE metabase LOGIN PASSWORD '…' IN ROLE amocrm_reader;   -- then, per BI user

The role may read every table and view of the sync's schema except `sync_state`, which holds the
OAuth tokens. It cannot write anything: no INSERT/UPDATE/DELETE grants, and
`default_transaction_read_only` is set on it. Running the command again is harmless and also
grants tables that later migrations added (run it after `amosync db upgrade`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Tables a reader must not see, with the reason (shown by the command).
PRIVATE_TABLES = {"sync_state": "holds the OAuth tokens"}


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def grant_reader(conn: Connection, schema: str, role: str) -> list[str]:
    """Create `role` if missing and grant it read access to `schema`; the tables granted."""
    quoted_role, quoted_schema = _quote(conn, role), _quote(conn, schema)
    exists = conn.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
    if not exists:
        conn.execute(sa.text(f"CREATE ROLE {quoted_role} NOLOGIN"))
    conn.execute(sa.text(f"ALTER ROLE {quoted_role} SET default_transaction_read_only = on"))
    database = _quote(conn, str(conn.scalar(sa.text("SELECT current_database()"))))
    conn.execute(sa.text(f"GRANT CONNECT ON DATABASE {database} TO {quoted_role}"))
    conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}"))
    names = _relations(conn, schema)
    for name in names:
        target = f"{quoted_schema}.{_quote(conn, name)}"
        if name in PRIVATE_TABLES:
            conn.execute(sa.text(f"REVOKE ALL ON {target} FROM {quoted_role}"))
        else:
            conn.execute(sa.text(f"GRANT SELECT ON {target} TO {quoted_role}"))
    return [name for name in names if name not in PRIVATE_TABLES]


def _relations(conn: Connection, schema: str) -> list[str]:
    """Tables, views and materialised views of the schema."""
    query = sa.text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :s AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY c.relname"
    )
    return list(conn.scalars(query, {"s": schema}))
