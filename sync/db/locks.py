"""Leader election: one PostgreSQL session-level advisory lock per account (schema).

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
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from sync.db.engine import driver_message
from sync.errors import LockLostError
from sync.logs import get_logger

log = get_logger("sync.db.locks")

LEADER_APPLICATION = "amosync-leader"
# Server-side keepalives of the lock session (ignored on Unix sockets): a vanished leader host
# frees the lock after ~idle + interval * count seconds.
_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}


def leader_lock_key(schema: str) -> int:
    """The advisory lock key (signed 64-bit) of one account's leader lock."""
    return advisory_key(f"amosync-leader:{schema}")


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory lock key for a name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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

    def __init__(self, engine: Engine, key: int, *, name: str, consequence: str) -> None:
        self._engine = _lock_engine(engine, _application(name))
        self.key = key
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
                got = bool(conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}))
                if got:
                    _mark_session(conn)
            except BaseException:
                _close_quietly(conn)
                raise
            if not got:
                _close_quietly(conn)
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
                held = bool(self._conn.scalar(_HELD, key_parts(self.key)))
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
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
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


@contextmanager
def run_lock(
    engine: Engine, key: int, *, name: str, consequence: str
) -> Iterator[SessionLock | None]:
    """Hold a run's lock for the block (None when another session holds it); released quietly,
    even when its session is gone."""
    lock = SessionLock(engine, key, name=name, consequence=consequence)
    try:
        yield lock if lock.try_acquire() else None
    finally:
        lock.release()
        lock.dispose()


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


_HELD = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND objsubid = 1 AND classid = :hi AND objid = :lo)"
)


def key_parts(key: int) -> dict[str, int]:
    """pg_locks shows a bigint advisory key as two unsigned halves (classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


def _application(name: str) -> str:
    return f"amosync-{name} {socket.gethostname()}:{os.getpid()}"[:63]


def _lock_engine(engine: Engine, application: str) -> Engine:
    """Unpooled connections for the lock, with client-side TCP keepalives and a user timeout,
    so a leader cut off from PostgreSQL notices within ~30 s too (libpq ignores these on Unix
    sockets, where the kernel reports a dead peer at once)."""
    return sa.create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={
            "application_name": application,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        },
    )


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
