"""A bound on a server that stops answering in the middle of an operation.

libpq's `connect_timeout` bounds the connection and the server's `statement_timeout` bounds a
statement while the server still answers; TCP keepalives and `tcp_user_timeout` catch a path
that died. A server that accepted the session and then says nothing (hung, or behind a path
that holds its packets but still acknowledges them) is caught by none of them: a statement, a
commit or SQLAlchemy's first queries on a new connection would wait for its answer forever.

Every connection of an engine that `watch` was given is an `AnsweringConnection`: each wait of
psycopg for the server (all of them go through `Connection.wait`) is armed with a deadline, and
one watchdog thread per process shuts the socket down when a wait outlasts it. The wait then
fails at once and says why (`NoAnswer`: "no answer for 310 s (…)"); the connection
is closed. The deadline is the server's own `statement_timeout` plus `GRACE_S`, so a server
that still answers always ends a long statement itself first. Once a wait was cut, the engine's
next waits get `GRACE_S` only, until one is answered: a run that failed on a silent server
records its failure (or gives up on it) in seconds, not in another whole bound.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

GRACE_S = 10.0


class NoAnswer(psycopg.OperationalError):
    """The server said nothing for the whole bound of a wait (its socket was shut down)."""


class _Silent:
    """Whether an engine's server left a wait unanswered, and nothing was answered since."""

    def __init__(self) -> None:
        self.since: float | None = None


class AnsweringConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits for the server are bounded (see the module)."""

    answer_s: float = 0.0  # set on the engine's subclass (`watch`)
    silent: _Silent = _Silent()

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        bound = GRACE_S if self.silent.since is not None else self.answer_s
        self._cut = False
        _WATCH.arm(self, bound)
        try:
            result = super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError as exc:
            if not self._cut:
                raise
            self.silent.since = self.silent.since or time.monotonic()
            with contextlib.suppress(Exception):
                self.pgconn.finish()
            raise NoAnswer(
                f"no answer for {bound:g} s (a hung server, or a network path that holds its "
                "packets): connection closed"
            ) from exc
        finally:
            _WATCH.disarm(self)
        self.silent.since = None
        return result

    def cut(self) -> None:
        """Shut the socket down (from the watchdog's thread): the wait returns, failed."""
        self._cut = True
        with contextlib.suppress(Exception), socket.socket(fileno=os.dup(self.pgconn.socket)) as s:
            s.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread for the process: cuts the connections whose wait outlasted its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, AnsweringConnection]] = {}
        self._next: float | None = None  # the deadline the thread sleeps until
        self._thread: threading.Thread | None = None

    def arm(self, conn: AnsweringConnection, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            self._armed[id(conn)] = (deadline, conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="amosync-db-silence",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            if self._next is None or deadline < self._next:
                self._cond.notify()

    def disarm(self, conn: AnsweringConnection) -> None:
        with self._cond:
            self._armed.pop(id(conn), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, (deadline, conn) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        conn.cut()
                self._next = min((d for d, _ in self._armed.values()), default=None)
                self._cond.wait(None if self._next is None else self._next - now)


_WATCH = _Watchdog()


def watch(engine: Engine, statement_timeout_s: float) -> None:
    """Make the engine's connections `AnsweringConnection`s bounded at `statement_timeout_s`
    + `GRACE_S` (0: the server's statement timeout is off, and so is this bound)."""
    if statement_timeout_s <= 0:
        return
    kind: type[AnsweringConnection] = type(
        "AnsweringConnection",
        (AnsweringConnection,),
        {"answer_s": statement_timeout_s + GRACE_S, "silent": _Silent()},
    )

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        return kind.connect(*cargs, **cparams)

    event.listen(engine, "do_connect", connect)
