"""Apply and revert the alembic migrations on the configured schema.

The revisions live in the checkout's top-level `migrations/`, installed as the package
`sync.migrations`; alembic gets that package's directory, found by import (an editable install
maps the package there, a wheel carries it under `sync/`).

Each call runs in one transaction under an advisory lock, so two `amosync db upgrade` at once
are serialised and a failed migration leaves nothing half-done (PostgreSQL DDL is transactional).

Every command checks the schema first (`require_schema`); when it is at the head this version
ships, the check reads the version table and the revision files' headers without importing
alembic (a few hundred ms of every command's start-up); anything else takes alembic's word.
A schema with nothing of the sync in it (a fresh install: no version, none of its tables) is
migrated there and then, exactly as `amosync db upgrade` would (`prepare_schema`); one at an
older revision is left for an explicit `db upgrade` (upgrading real data is a decision).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from sync.config import DatabaseConfig
from sync.db.engine import create_engine, store_errors
from sync.db.locks import advisory_lock
from sync.errors import SchemaMissingError, UsageError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

MIGRATIONS_PACKAGE = "sync.migrations"
_HEADER = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*(?:#.*)?$", re.MULTILINE)


def script_location() -> str:
    """The directory of the installed migrations (alembic's `script_location`)."""
    return str(files(MIGRATIONS_PACKAGE)).replace("%", "%%")  # alembic's config interpolates %


def alembic_config(connection: Connection, schema: str) -> AlembicConfig:
    """An alembic configuration bound to an open connection and a target schema."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def current_revision(connection: Connection, schema: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


def head_revision() -> str:
    """The newest revision this version of amosync ships."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def prepare_schema(engine: Engine, db: DatabaseConfig) -> str | None:
    """`require_schema` for a command, except that a fresh schema (`_fresh`) is first migrated
    to the head as `amosync db upgrade` does, under its lock; returns that head, None when the
    schema needed nothing."""
    if _at_shipped_head(engine, db):
        return None  # the common case, without importing alembic
    with store_errors(db), engine.connect() as conn:
        fresh = _fresh(conn, db.schema)
    migrated = None
    if fresh:
        before, after = upgrade(db, fresh_only=True)
        migrated = after if after != before else None
    require_schema(engine, db)
    return migrated


def require_schema(engine: Engine, db: DatabaseConfig) -> None:
    """Raise `SchemaMissingError` (one line naming `amosync db upgrade`) unless the configured
    schema is migrated to this version's head: every command but `db upgrade`, `run` and `demo`
    (which migrate) checks it before its first statement, so none fails on a missing table."""
    if _at_shipped_head(engine, db):
        return  # the common case, without importing alembic
    with store_errors(db), engine.connect() as conn:
        revision = current_revision(conn, db.schema)
        ours = revision is None and not _fresh(conn, db.schema)
    head = head_revision()
    if revision == head:
        return
    schema = f"schema {db.schema} in {_place(engine, db)}"
    if ours:
        problem = "has tables of the sync but no migration revision (alembic_version)"
    elif revision is None:
        problem = "has no sync tables yet"
    elif revision in _known_revisions():
        problem = f"is at revision {revision}, this amosync needs {head}"
    else:
        raise SchemaMissingError(
            f"{schema} is at revision {revision}, which this amosync does not know (a newer "
            "amosync migrated it): upgrade amosync"
        )
    raise SchemaMissingError(f"{schema} {problem}: run `amosync db upgrade` first")


def _at_shipped_head(engine: Engine, db: DatabaseConfig) -> bool:
    with store_errors(db), engine.connect() as conn:
        shipped = shipped_head()
        return shipped is not None and _stored_revision(conn, db.schema) == shipped


def _fresh(conn: Connection, schema: str) -> bool:
    """Nothing of the sync in `schema` (which may not exist): no revision, none of its tables."""
    from sync.db.schema import metadata

    if current_revision(conn, schema) is not None:
        return False
    found = conn.scalar(
        text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = ANY(:names)"
        ),
        {"schema": schema, "names": [table.name for table in metadata.sorted_tables]},
    )
    return not found


def _place(engine: Engine, db: DatabaseConfig) -> str:
    if db.embedded:
        return f"the embedded PostgreSQL in {db.embedded_dir}"
    url = engine.url
    return f"database {url.database} on {url.host or 'localhost'}:{url.port or 5432}"


def _stored_revision(conn: Connection, schema: str) -> str | None:
    """The one revision in the schema's version table, or None (no table, none, several)."""
    table = conn.dialect.identifier_preparer.quote_schema(schema) + ".alembic_version"
    if conn.scalar(text("SELECT to_regclass(:table)"), {"table": table}) is None:
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


@cache
def shipped_head() -> str | None:
    """The head revision, read from the revision files' `revision` / `down_revision` lines (no
    alembic): the one revision no other names as its parent; None if that is not one."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (files(MIGRATIONS_PACKAGE) / "versions").iterdir():
        if not path.name.endswith(".py") or path.name.startswith("__"):
            continue
        for key, value in _HEADER.findall(path.read_text(encoding="utf-8")):
            named = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (revisions if key == "revision" else parents).update(named)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def _scripts() -> ScriptDirectory:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", script_location())
    return ScriptDirectory.from_config(config)


@contextmanager
def _locked(db: DatabaseConfig) -> Iterator[Connection]:
    engine = create_engine(db, statement_timeout=False)  # a migration may legitimately run long
    try:
        with store_errors(db), engine.begin() as conn:
            advisory_lock(conn, db.schema, "migrate")  # behind another `db upgrade`
            yield conn
    finally:
        engine.dispose()


def upgrade(
    db: DatabaseConfig, revision: str = "head", *, fresh_only: bool = False
) -> tuple[str | None, str | None]:
    """Upgrade the schema to `revision`; returns (before, after). A second run changes nothing.
    `fresh_only`: only a schema with nothing of the sync in it (decided under the lock)."""
    with _locked(db) as conn:
        from alembic import command

        before = current_revision(conn, db.schema)
        if fresh_only and not _fresh(conn, db.schema):
            return before, before  # another process migrated it, or it is not fresh after all
        _run(command.upgrade, conn, db.schema, revision)
        return before, current_revision(conn, db.schema)


def downgrade(db: DatabaseConfig, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the schema to `revision` ('base' removes every object the sync created)."""
    with _locked(db) as conn:
        from alembic import command

        before = current_revision(conn, db.schema)
        _run(command.downgrade, conn, db.schema, revision)
        return before, current_revision(conn, db.schema)


def _run(action: object, conn: Connection, schema: str, revision: str) -> None:
    from alembic.util.exc import CommandError

    try:
        action(alembic_config(conn, schema), revision)  # type: ignore[operator]
    except CommandError as exc:
        raise UsageError(f"cannot migrate to {revision!r}: {exc}") from exc
