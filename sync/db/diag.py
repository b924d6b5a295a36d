"""What a database error may say to a person: PostgreSQL's one-line message, never the SQL.

SQLAlchemy's `str(exc)` carries the whole statement (`[SQL: …]`) and its parameters
(`[parameters: …]`), and psycopg's own text a `DETAIL:` line with the key values: contact
e-mails and phones. Every path that stores, logs or shows a database error uses `error_line`.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError

from sync.errors import StoreError, SyncError, disk_full


def driver_message(exc: DBAPIError) -> str:
    """The first line of PostgreSQL's own message for a driver error: no SQL, no parameters."""
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    text = primary or str(exc.orig) or type(exc.orig).__name__
    return text.strip().splitlines()[0]


# relation / schema does not exist: the schema is not migrated (to this version) yet
NOT_MIGRATED_SQLSTATES = ("42P01", "3F000")
NOT_MIGRATED_HINT = "the schema is not migrated: run `amosync db upgrade` first"


def not_migrated(exc: BaseException) -> str | None:
    """`relation "amocrm.sync_runs" does not exist: the schema is not migrated: run `amosync db
    upgrade` first` for a missing table or schema; None for any other error."""
    if sqlstate(exc) not in NOT_MIGRATED_SQLSTATES:
        return None
    assert isinstance(exc, DBAPIError)
    return f"{driver_message(exc)}: {NOT_MIGRATED_HINT}"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (None for anything else)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None


def error_line(exc: BaseException) -> str:
    """One line for `sync_runs.error`, a log event's `error` or the CLI: no SQL, no values.
    A full disk says so, whichever layer noticed it."""
    full = disk_full(exc)
    if full:
        return full
    if isinstance(exc, DBAPIError):
        return f"PostgreSQL: {not_migrated(exc) or driver_message(exc)}"
    if isinstance(exc, SyncError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def store_error(exc: DBAPIError) -> StoreError:
    """A driver error that escaped the `sync.db` boundary, as the `StoreError` it should be
    (caused by it, so what was said of the driver error, `was_logged` or `disk_full`, holds)."""
    transient = isinstance(exc, OperationalError)
    error = StoreError(f"PostgreSQL failed: {driver_message(exc)}", transient=transient)
    error.__cause__ = exc
    return error
