"""Apply and revert the alembic migrations on the configured schema.

The revisions live in the checkout's top-level `migrations/`, installed as the package
`sync.migrations`; alembic gets that package's directory, found by import (an editable install
maps the package there, a wheel carries it under `sync/`).

Each call runs in one transaction under an advisory lock, so two `amosync db upgrade` at once
are serialised and a failed migration leaves nothing half-done (PostgreSQL DDL is transactional).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine

from sync.config import DatabaseConfig
from sync.db.engine import create_engine, store_errors
from sync.db.locks import advisory_lock
from sync.errors import SchemaMissingError, UsageError

MIGRATIONS_PACKAGE = "sync.migrations"


def script_location() -> str:
    """The directory of the installed migrations (alembic's `script_location`)."""
    return str(files(MIGRATIONS_PACKAGE)).replace("%", "%%")  # alembic's config interpolates %


def alembic_config(connection: Connection, schema: str) -> AlembicConfig:
    """An alembic configuration bound to an open connection and a target schema."""
    config = AlembicConfig()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def current_revision(connection: Connection, schema: str) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


def head_revision() -> str:
    """The newest revision this version of amosync ships."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def require_schema(engine: Engine, db: DatabaseConfig) -> None:
    """Raise `SchemaMissingError` (one line naming `amosync db upgrade`) unless the configured
    schema is migrated to this version's head: every command but `db upgrade`, `run` and `demo`
    (which migrate) checks it before its first statement, so none fails on a missing table."""
    with store_errors(db), engine.connect() as conn:
        revision = current_revision(conn, db.schema)
    head = head_revision()
    if revision == head:
        return
    schema = f"schema {db.schema} in {_place(engine, db)}"
    if revision is None:
        problem = "has no sync tables yet"
    elif revision in _known_revisions():
        problem = f"is at revision {revision}, this amosync needs {head}"
    else:
        raise SchemaMissingError(
            f"{schema} is at revision {revision}, which this amosync does not know (a newer "
            "amosync migrated it): upgrade amosync"
        )
    raise SchemaMissingError(f"{schema} {problem}: run `amosync db upgrade` first")


def _place(engine: Engine, db: DatabaseConfig) -> str:
    if db.embedded:
        return f"the embedded PostgreSQL in {db.embedded_dir}"
    url = engine.url
    return f"database {url.database} on {url.host or 'localhost'}:{url.port or 5432}"


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def _scripts() -> ScriptDirectory:
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


def upgrade(db: DatabaseConfig, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the schema to `revision`; returns (before, after). A second run changes nothing."""
    with _locked(db) as conn:
        before = current_revision(conn, db.schema)
        _run(command.upgrade, conn, db.schema, revision)
        return before, current_revision(conn, db.schema)


def downgrade(db: DatabaseConfig, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the schema to `revision` ('base' removes every object the sync created)."""
    with _locked(db) as conn:
        before = current_revision(conn, db.schema)
        _run(command.downgrade, conn, db.schema, revision)
        return before, current_revision(conn, db.schema)


def _run(action: object, conn: Connection, schema: str, revision: str) -> None:
    try:
        action(alembic_config(conn, schema), revision)  # type: ignore[operator]
    except CommandError as exc:
        raise UsageError(f"cannot migrate to {revision!r}: {exc}") from exc
