"""Advisory locks, all with one key scheme: `lock_key(schema, name)` is the signed 64-bit
BLAKE2b digest of `amosync-<name>:<schema>`. Every lock of the sync is named here:

    leader   session lock of the daemon that runs the jobs      LeaderLock
    pull     session lock of one pull run                       session_lock (sync.db.runs)
    push     session lock of one push run                       session_lock (sync.db.runs)
    migrate  transaction lock of `amosync db upgrade`           advisory_lock (sync.db.migrate)
    <key>    transaction lock of a token refresh (`sync_state`  advisory_lock (sync.db.tokens)
             key, amocrm_oauth_tokens)

The leader and pull keys are the ones every earlier release used. The push, migrate and token
locks had keys of their own schemes before; until no such release runs anywhere, a new process
takes that released key as well (`released_keys`, after its own, in the same session or
transaction), so an old and a new process still exclude each other during a rolling upgrade
(docs/operations.md, "Upgrading").

Leader election: one PostgreSQL session-level advisory lock per account (schema).

The daemon that holds the lock is the leader and runs the jobs; any other daemon on the same
schema is a hot standby that retries `try_acquire` until the lock is free. The lock lives as long
as the one connection that took it: when the leader process dies (even `kill -9`), PostgreSQL ends
its session and frees the lock at once. For a leader whose *host* vanishes, the session sets
server-side TCP keepalives so PostgreSQL notices within about 30 s.

The lock connection comes from its own unpooled engine (client-side keepalives and a TCP user
timeout, so the leader also notices a dead network path within ~30 s): `release` closes it.
`alive` asks pg_locks on it whether this very backend still holds the key; if not (or if the
query fails) the lock is gone and the caller must stop acting as leader.

`SessionLock` is the same mechanism for any run that must not run twice at once (push, pull):
`ensure_held()` right before each write raises `LockLostError` once the lock's session is gone,
so a run that lost its lock stops before it could repeat what a second run is already doing.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from sync.db import silence
from sync.db.catalog import pg_locks, this_database
from sync.db.engine import client_args, driver_message, lock_taken, wait_for_lock
from sync.errors import LockLostError
from sync.logs import get_logger

ANSWER_S = 5.0  # what a lock session's statement may take before the silence bound counts
log = get_logger("sync.db.locks")

LEADER_APPLICATION = "amosync-leader"
# Server-side keepalives of the lock session (ignored on Unix sockets): a vanished leader host
# frees the lock after ~idle + interval * count seconds.
_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}


def lock_key(schema: str, name: str) -> int:
    """The advisory lock key of the lock `name` of one account (schema): the one key scheme."""
    return advisory_key(f"amosync-{name}:{schema}")


def leader_lock_key(schema: str) -> int:
    """The advisory lock key (signed 64-bit) of one account's leader lock."""
    return lock_key(schema, "leader")


def advisory_key(text: str) -> int:
    """A signed 64-bit advisory lock key for a text (BLAKE2b; `lock_key` says which text)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def released_keys(schema: str, name: str) -> tuple[int, ...]:
    """The key releases before the one scheme used for this lock, when it was another (taken
    too, so old and new processes exclude each other; drop once no such release runs)."""
    if name in ("leader", "pull"):
        return ()  # unchanged
    if name == "push":
        return (zlib.crc32(f"amosync:{schema}:push".encode()),)
    if name == "migrate":
        return ()  # hashtext(), computed by PostgreSQL: see advisory_lock
    high = zlib.crc32(f"amosync:{schema}:{name}".encode())  # a sync_state row's lock (tokens)
    low = zlib.crc32(f"amosync:{schema}:{name}"[::-1].encode())
    value = (high << 32) | low
    return (value - (1 << 64) if value >= 1 << 63 else value,)


def advisory_lock(connection: Connection, schema: str, name: str) -> None:
    """Wait for the transaction-level lock `name` of the schema, however long another amosync
    process holds it (for a known, bounded time); the commit or rollback releases it. The rest
    of the transaction keeps the configured `lock_timeout`."""
    wait_for_lock(connection)
    keys: list[Any] = [lock_key(schema, name), *released_keys(schema, name)]
    if name == "migrate":  # what releases before the one scheme took for `db upgrade`
        keys.append(sa.cast(sa.func.hashtext(f"amosync-migrate:{schema}"), sa.BigInteger))
    for key in keys:
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    lock_taken(connection)


def holder_name() -> str:
    """How this process names itself in `pg_stat_activity.application_name`."""
    return _application("leader")


class SessionLock:
    """A session-level advisory lock held on a dedicated connection, which can tell whether it
    still holds the lock.

    `check` asks `pg_locks`, on that very connection, whether this backend holds the key: a
    terminated backend, a failover or a pooler that handed out another backend all answer "no"
    (or fail, which counts as "no"). Once lost, the lock stays lost (`lost` says why) until
    `try_acquire` takes it again. `ensure_held` raises `LockLostError` when it is gone: call it
    immediately before each write that must not happen twice.
    """

    def __init__(
        self, engine: Engine, key: int, *, name: str, consequence: str, also: Sequence[int] = ()
    ) -> None:
        self._engine = _lock_engine(engine, _application(name))
        self.key = key
        self.also = tuple(also)  # released keys of the same lock, taken after `key`
        self.name = name
        self.consequence = consequence
        self.lost: str | None = None
        self._conn: Connection | None = None
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this process holds it (now).

        Database errors propagate (as the driver's exceptions); the caller retries later.
        """
        with self._mutex:
            if self._conn is not None:
                return True
            conn = self._engine.connect()
            try:
                got = all(_try_lock(conn, key) for key in (self.key, *self.also))
                if got:
                    _mark_session(conn)
            except BaseException:
                _close_quietly(conn)
                raise
            if not got:
                _close_quietly(conn)  # the session ends: a key it did take is free again
                return False
            self._conn, self.lost = conn, None
            return True

    def check(self) -> bool:
        """True while this session still holds the lock; False (and the lock forgotten) once
        it does not or the session fails to answer."""
        with self._mutex:
            if self._conn is None:
                return False
            try:
                held = bool(self._conn.scalar(_held_here(self.key)))
                self._conn.commit()
            except DBAPIError as exc:
                return self._forget(driver_message(exc))
            return True if held else self._forget("this session no longer holds it")

    def ensure_held(self) -> None:
        """Raise `LockLostError` unless the lock is still held (see `check`)."""
        if not self.check():
            raise LockLostError(self.name, self.consequence)

    def release(self) -> None:
        """Give the lock up (closing its session); harmless when not held or already lost."""
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            for key in (self.key, *self.also):
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            conn.commit()
        except DBAPIError:
            pass  # the session is gone, and with it the lock
        finally:
            _close_quietly(conn)

    def dispose(self) -> None:
        """Close the lock's own engine (after `release`)."""
        self._engine.dispose()

    def _forget(self, reason: str) -> bool:
        if self._conn is not None:
            _close_quietly(self._conn)
        self._conn, self.lost = None, reason
        return False


@dataclass(frozen=True)
class LockWait:
    """How long a command waits for a run lock another process holds (the CLI's `pull`, `push`
    and `sync` behind the daemon's run), polling every `every` seconds; `note` is called once,
    when the wait begins. The daemon never waits: its own jobs must not queue behind it."""

    seconds: float
    note: Callable[[], None] | None = None
    every: float = 0.5
    sleep: Callable[[float], None] = time.sleep


def session_lock(
    engine: Engine, schema: str, name: str, *, consequence: str, wait: LockWait | None = None
) -> AbstractContextManager[SessionLock | None]:
    """Hold the session lock `name` of the schema for the block (None when another session
    holds it, after `wait`); released quietly, even when its session is gone."""
    also = released_keys(schema, name)
    key = lock_key(schema, name)
    return run_lock(engine, key, name=name, consequence=consequence, also=also, wait=wait)


@contextmanager
def run_lock(
    engine: Engine,
    key: int,
    *,
    name: str,
    consequence: str,
    also: Sequence[int] = (),
    wait: LockWait | None = None,
) -> Iterator[SessionLock | None]:
    """`session_lock` by key (kept for callers that still pass `lock_key(schema, name)`)."""
    lock = SessionLock(engine, key, name=name, consequence=consequence, also=also)
    try:
        yield lock if _acquire(lock, wait) else None
    finally:
        lock.release()
        lock.dispose()


def _acquire(lock: SessionLock, wait: LockWait | None) -> bool:
    if lock.try_acquire() or wait is None or wait.seconds <= 0:
        return lock.held
    if wait.note is not None:
        wait.note()
    deadline = time.monotonic() + wait.seconds
    while time.monotonic() < deadline:
        wait.sleep(min(wait.every, max(0.0, deadline - time.monotonic())))
        if lock.try_acquire():
            return True
    return False


class LeaderLock(SessionLock):
    """The leader lock of one schema, held on a dedicated connection named after this process."""

    def __init__(self, engine: Engine, schema: str) -> None:
        consequence = "this daemon stops leading and runs no further job"
        super().__init__(engine, leader_lock_key(schema), name="leader", consequence=consequence)
        self.schema = schema

    def __repr__(self) -> str:
        return f"LeaderLock(schema={self.schema!r}, held={self.held})"

    def alive(self) -> bool:
        """True while the lock is still held by this process (see `check`)."""
        return self.check()


def advisory_held(key: int) -> sa.ColumnElement[bool]:
    """The `pg_locks` rows of the granted advisory lock `key` (bigint form) in this database."""
    parts = key_parts(key)
    return sa.and_(
        pg_locks.c.locktype == "advisory",
        pg_locks.c.granted,
        pg_locks.c.objsubid == 1,
        pg_locks.c.classid == parts["hi"],
        pg_locks.c.objid == parts["lo"],
        pg_locks.c.database == this_database(),
    )


def _held_here(key: int) -> sa.Select[tuple[bool]]:
    mine = sa.select(pg_locks.c.pid).where(
        advisory_held(key), pg_locks.c.pid == sa.func.pg_backend_pid()
    )
    return sa.select(mine.exists())


def _try_lock(conn: Connection, key: int) -> bool:
    return bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))


def key_parts(key: int) -> dict[str, int]:
    """pg_locks shows a bigint advisory key as two unsigned halves (classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


def _application(name: str) -> str:
    return f"amosync-{name} {socket.gethostname()}:{os.getpid()}"[:63]


def _lock_engine(engine: Engine, application: str) -> Engine:
    """Unpooled connections for the lock, with client-side TCP keepalives, a user timeout and a
    connect timeout (`client_args`), so a leader cut off from PostgreSQL notices within ~30 s
    too (libpq ignores the keepalives on Unix sockets, where the kernel reports a dead peer at
    once)."""
    lock_engine = sa.create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={"application_name": application, **client_args(engine.url)},
    )
    # a server that acknowledges and then says nothing defeats the keepalives: the lock's
    # statements are instant, so a wait longer than ANSWER_S + silence.GRACE_S is cut (a run
    # that failed on a silent server hung releasing its lock)
    silence.watch(lock_engine, ANSWER_S)
    return lock_engine


def _mark_session(conn: Connection) -> None:
    """Server-side keepalives of the lock session (its name, for `amosync status`, is set at
    connect time)."""
    for name, value in _KEEPALIVES.items():
        conn.execute(sa.text(f"SET {name} = {int(value)}"))
    conn.commit()


def _close_quietly(conn: Connection) -> None:
    try:
        # The lock session must not go back to the pool still holding the lock.
        conn.invalidate()
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways
        log.debug("leader_lock_close_failed")
