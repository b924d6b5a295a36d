"""A statement that gave up waiting for a lock says who holds it.

The sync's sessions run with `lock_timeout` and `statement_timeout` (`database.*_timeout_s`).
When PostgreSQL cancels one of its statements (SQLSTATE 55P03 lock_not_available, or 57014 from
the statement timeout while a conflicting lock is held), a fresh connection reads `pg_locks` and
`pg_stat_activity` for the sessions holding locks on the schema's tables, and the driver error
becomes a transient `LockWaitError` whose one line names the holder:

    waiting for a lock on amocrm.contacts held by pid 1234 (psql, idle in transaction for 42 s)

and `db_lock_wait` is logged with the same facts. `retrying` runs a transaction again after a
back-off (1, 2, 4 s) while it keeps giving up on a lock: push records what amoCRM accepted that
way, so an analyst's long lock delays the record instead of failing the run. Anything else fails
the daemon's job, which runs again at its next interval.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from sync.db.catalog import pg_class, pg_locks, pg_namespace, pg_stat_activity, this_database
from sync.db.diag import driver_message, sqlstate
from sync.errors import LockWaitError, StoreError
from sync.logs import get_logger

log = get_logger("sync.db.lockwait")
T = TypeVar("T")

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# Strongest first: the likelier blocker of a sync statement.
_MODES = (
    "AccessExclusiveLock", "ExclusiveLock", "ShareRowExclusiveLock", "ShareLock",
    "ShareUpdateExclusiveLock", "RowExclusiveLock", "RowShareLock", "AccessShareLock",
)  # fmt: skip
_l, _a, _c, _n = pg_locks, pg_stat_activity, pg_class, pg_namespace
_HOLDERS = (
    sa.select(
        (_n.c.nspname + "." + _c.c.relname).label("relation"),
        _c.c.relname,
        _l.c.mode,
        _a.c.pid,
        sa.func.coalesce(_a.c.application_name, "").label("application_name"),
        sa.func.coalesce(_a.c.state, "").label("state"),
        sa.cast(
            sa.func.floor(
                sa.extract(
                    "epoch",
                    sa.func.now()
                    - sa.func.coalesce(_a.c.xact_start, _a.c.query_start, _a.c.backend_start),
                )
            ),
            sa.Integer,
        ).label("seconds"),
    )
    .select_from(_l)
    .join(_c, _c.c.oid == _l.c.relation)
    .join(_n, _n.c.oid == _c.c.relnamespace)
    .join(_a, _a.c.pid == _l.c.pid)
    .where(_l.c.granted, _l.c.locktype == "relation", _n.c.nspname == sa.bindparam("schema"))
    .where(_l.c.database == this_database())
    .where(_l.c.pid != sa.func.pg_backend_pid(), _l.c.pid != sa.bindparam("own"))
)
_DIAGNOSE_OPTIONS = "-c statement_timeout=5000 -c lock_timeout=1000"


@dataclass(frozen=True)
class Holder:
    """A session holding a lock on one of the schema's tables."""

    relation: str
    relname: str
    mode: str
    pid: int
    application_name: str
    state: str
    seconds: int

    def describe(self) -> str:
        who = self.application_name or "no application_name"
        return (
            f"waiting for a lock on {self.relation} held by pid {self.pid} "
            f"({who}, {self.state or 'state unknown'} for {self.seconds} s)"
        )


def watch(engine: Engine, schema: str, statement_timeout_s: float) -> None:
    """Turn the engine's lock and statement timeouts into `LockWaitError` / `StoreError`."""

    def on_error(context: ExceptionContext) -> None:
        exc = context.sqlalchemy_exception
        if isinstance(exc, DBAPIError) and sqlstate(exc) in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):
            where = Waiting(schema, _waited_on(context), _own_pid(context))
            error = timeout_error(exc, engine.url, where, statement_timeout_s)
            if error is not None:
                raise error from exc

    event.listen(engine, "handle_error", on_error)


@dataclass(frozen=True)
class Waiting:
    """What the cancelled statement was: the schema, its text, its session's pid."""

    schema: str
    statement: str
    own_pid: int


def timeout_error(
    exc: DBAPIError, url: URL, where: Waiting, statement_timeout_s: float
) -> StoreError | None:
    """The error to raise for a lock or statement timeout (None: not one of ours)."""
    message = driver_message(exc)
    lock_timeout = sqlstate(exc) == LOCK_NOT_AVAILABLE
    if not lock_timeout and "statement timeout" not in message:
        return None  # cancelled by a person or the shutdown: keep the driver's error
    holder = find_holder(url, where, any_mode=lock_timeout)
    if holder is not None:
        log.warning("db_lock_wait", error=holder.describe(), pid=holder.pid, state=holder.state,
                    application_name=holder.application_name, held_s=holder.seconds,
                    relation=holder.relation, mode=holder.mode)  # fmt: skip
        return LockWaitError(holder.describe(), pid=holder.pid)
    if lock_timeout:
        log.warning("db_lock_wait", error=message)
        return LockWaitError(f"waiting for a lock held by another session: {message}")
    return StoreError(
        f"a statement ran longer than database.statement_timeout_s = {statement_timeout_s:g} s "
        f"and was cancelled: {message}",
        transient=True,
    )


def find_holder(url: URL, where: Waiting, *, any_mode: bool) -> Holder | None:
    """The likeliest blocker, read on a fresh short-lived connection (None if none or unknown)."""
    diagnose = sa.create_engine(
        url,
        poolclass=NullPool,
        connect_args={"application_name": "amosync-diagnose", "connect_timeout": 5,
                      "options": _DIAGNOSE_OPTIONS},
    )  # fmt: skip
    try:
        with diagnose.connect() as conn:
            holders = _holders(conn, where.schema, where.own_pid)
    except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the first error
        return None
    finally:
        diagnose.dispose()
    if not any_mode:  # a slow statement is no lock wait unless someone holds a real lock
        holders = [h for h in holders if h.mode not in ("AccessShareLock", "RowExclusiveLock")]
    return min(holders, key=lambda h: _rank(h, where.statement), default=None)


def _holders(conn: Connection, schema: str, own_pid: int) -> list[Holder]:
    rows = conn.execute(_HOLDERS, {"schema": schema, "own": own_pid}).mappings()
    return [Holder(**dict(row)) for row in rows]


def _rank(holder: Holder, waited_on: str) -> tuple[bool, bool, int, int]:
    """Tables the statement names first, then other programs, stronger modes, older."""
    named = re.search(rf"\b{re.escape(holder.relname)}\b", waited_on) is not None
    ours = holder.application_name.startswith("amosync")
    strength = _MODES.index(holder.mode) if holder.mode in _MODES else len(_MODES)
    return (not named, ours, strength, -holder.seconds)


def _waited_on(context: ExceptionContext) -> str:
    """The statement and PostgreSQL's context line (it names the relation of a row lock)."""
    exc = context.sqlalchemy_exception
    diag = getattr(getattr(exc, "orig", None), "diag", None)
    return f"{context.statement or ''} {getattr(diag, 'context', None) or ''}"


def _own_pid(context: ExceptionContext) -> int:
    """The failed session's pid: its transaction still holds its own locks until rollback."""
    try:
        driver: Any = context.connection.connection.driver_connection  # type: ignore[union-attr]
        return int(driver.info.backend_pid)
    except Exception:  # noqa: BLE001 - no connection (a connect error): nothing to exclude
        return 0


def retrying(action: Callable[[], T], sleep: Callable[[float], None], *, attempts: int = 4) -> T:
    """`action()` (one whole transaction), run again after 1, 2, 4 s while it raises
    `LockWaitError`; the last failure propagates."""
    for attempt in range(attempts - 1):
        try:
            return action()
        except LockWaitError as exc:
            delay = float(2**attempt)
            log.warning("db_lock_wait_retry", attempt=attempt + 1, retry_in_s=delay, error=str(exc))
            sleep(delay)
    return action()
