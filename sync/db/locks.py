"""Leader election: one PostgreSQL session-level advisory lock per account (schema).

The daemon that holds the lock is the leader and runs the jobs; any other daemon on the same
schema is a hot standby that retries `try_acquire` until the lock is free. The lock lives as long
as the one connection that took it: when the leader process dies (even `kill -9`), PostgreSQL ends
its session and frees the lock at once. For a leader whose *host* vanishes, the session sets
server-side TCP keepalives so PostgreSQL notices within about 30 s.

The lock connection comes from its own unpooled engine (client-side keepalives and a TCP user
timeout, so the leader also notices a dead network path within ~30 s): `release` closes it.
`alive` runs a trivial query on it; if that fails the session (and so the lock) is gone and the
caller must stop acting as leader.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from sync.db.engine import driver_message
from sync.logs import get_logger

log = get_logger("sync.db.locks")

LEADER_APPLICATION = "amosync-leader"
# Server-side keepalives of the lock session (ignored on Unix sockets): a vanished leader host
# frees the lock after ~idle + interval * count seconds.
_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 4}


def leader_lock_key(schema: str) -> int:
    """The advisory lock key (signed 64-bit) of one account's leader lock."""
    digest = hashlib.blake2b(f"amosync-leader:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def holder_name() -> str:
    """How this process names itself in `pg_stat_activity.application_name`."""
    return f"{LEADER_APPLICATION} {socket.gethostname()}:{os.getpid()}"[:63]


class LeaderLock:
    """The leader lock of one schema, held on a dedicated connection."""

    def __init__(self, engine: Engine, schema: str) -> None:
        self._engine = _lock_engine(engine)
        self.schema = schema
        self.key = leader_lock_key(schema)
        self._conn: Connection | None = None
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"LeaderLock(schema={self.schema!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this process is (now) the leader.

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
            self._conn = conn
            return True

    def alive(self) -> bool:
        """True while the lock session answers; False (and the lock forgotten) once it does not."""
        with self._mutex:
            if self._conn is None:
                return False
            try:
                self._conn.execute(sa.text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError as exc:
                log.warning("leader_lock_lost", schema=self.schema, error=driver_message(exc))
                _close_quietly(self._conn)
                self._conn = None
                return False

    def release(self) -> None:
        """Give the lock up (closing its session); harmless when not held."""
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


def _lock_engine(engine: Engine) -> Engine:
    """Unpooled connections for the lock, with client-side TCP keepalives and a user timeout,
    so a leader cut off from PostgreSQL notices within ~30 s too (libpq ignores these on Unix
    sockets, where the kernel reports a dead peer at once)."""
    return sa.create_engine(
        engine.url,
        poolclass=NullPool,
        connect_args={
            "application_name": holder_name(),
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
