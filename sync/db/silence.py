"""A bound on a server that stops answering in the middle of an operation.

libpq's `connect_timeout` bounds the connection and the server's `statement_timeout` bounds a
statement while the server still answers; TCP keepalives and `tcp_user_timeout` catch a path
that died. A server that accepted the session and then says nothing (hung, or behind a path
that holds its packets but still acknowledges them) is caught by none of them: a statement, a
commit or SQLAlchemy's first queries on a new connection would wait for its answer forever.

Every connection of an engine that `watch` was given is an `AnsweringConnection`: each wait of
psycopg for the server (all of them go through `Connection.wait`) is armed with a deadline, and
one watchdog thread per process shuts the socket down when a wait outlasts it. The wait then
fails at once and says why (`NoAnswer`: "no answer for 310 s (…)"); the connection is closed.
The deadline is the server's own `statement_timeout` plus `GRACE_S`, so a server that still
answers always ends a long statement itself first.

Two kinds of wait are not cut at their deadline but checked (`ask`): a second
connection asks the server whether this connection's statement is still running
(`pg_stat_activity`). If it is, the wait goes on; if the server does not answer that either, or
finished the statement and the answer never arrived, the wait is cut.
- A migration's (`watch(..., unbounded_statements=True)`): it runs with no `statement_timeout`
  (a migration on a big table takes as long as it takes), so it is checked every
  `statement_timeout_s` + `GRACE_S` and never cut while the server works on it.
- After a wait of the engine was cut, the engine's next waits are checked after `GRACE_S`
  already, until one is answered: a run that failed on a silent server records its failure (or
  gives up on it) in seconds, not in another whole bound, while a legitimate long wait right
  after a silent spell (an advisory lock held by another process's token refresh) is checked,
  found running, and keeps its whole bound.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

GRACE_S = 10.0
# the second connection's session: its one statement is instant, and waits for no lock
_CHECK_OPTIONS = "-c statement_timeout=5000 -c lock_timeout=1000"
_IDLE = frozenset({"idle", "idle in transaction", "idle in transaction (aborted)"})
_HOLDS_ITS_PACKETS = "a hung server, or a network path that holds its packets"


class NoAnswer(psycopg.OperationalError):
    """The server said nothing for the whole bound of a wait (its socket was shut down)."""


class Verdict(Enum):
    """What the server says, on a second connection, of a connection's long wait."""

    WORKING = "working"  # on its statement (or it answers, and cannot tell)
    FINISHED = "finished"  # the session is idle or gone: the answer is on the way, or lost
    SILENT = "silent"  # the second connection got no answer either


@dataclass(frozen=True)
class Reach:
    """How a second connection reaches a connection's server, and its backend's pid."""

    args: tuple[Any, ...]
    params: dict[str, Any] = field(repr=False)  # holds the password
    pid: int


class _Silent:
    """Whether an engine's server left a wait unanswered, and nothing was answered since."""

    def __init__(self) -> None:
        self.since: float | None = None


class AnsweringConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits for the server are bounded (see the module)."""

    answer_s: float = 0.0  # set on the engine's subclass (`watch`)
    unbounded_statements = False  # a migration's: at `answer_s` the server is asked, not cut
    may_check = True  # False for the checking connection itself
    silent: _Silent = _Silent()
    reach: Reach | None = None  # how a second connection reaches the server
    _cut_reason: str | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        after_cut = self.silent.since is not None
        bound = GRACE_S if after_cut or not self.may_check else self.answer_s
        self._cut_reason = None
        _WATCH.arm(self, bound, check=self.may_check and (after_cut or self.unbounded_statements))
        try:
            result = super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError as exc:
            reason = self._cut_reason
            if reason is None:
                raise
            self.silent.since = self.silent.since or time.monotonic()
            with contextlib.suppress(Exception):
                self.pgconn.finish()
            raise NoAnswer(f"{reason} ({_HOLDS_ITS_PACKETS}): connection closed") from exc
        finally:
            _WATCH.disarm(self)
        self.silent.since = None
        return result

    def cut(self, reason: str) -> None:
        """Shut the socket down (from the watchdog's threads): the wait returns, failed."""
        self._cut_reason = reason
        with contextlib.suppress(Exception), socket.socket(fileno=os.dup(self.pgconn.socket)) as s:
            s.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True, eq=False)
class _Wait:
    """One armed wait: cut (or checked, `check`) at `deadline`; `started` for its whole bound."""

    conn: AnsweringConnection
    started: float
    deadline: float
    check: bool


class _Watchdog:
    """One thread for the process: cuts the connections whose wait outlasted its deadline, or
    hands the wait to a checking thread of its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, _Wait] = {}
        self._checking: dict[int, _Wait] = {}  # waits a second connection is asking about
        self._next: float | None = None  # the deadline the thread sleeps until
        self._thread: threading.Thread | None = None

    def arm(self, conn: AnsweringConnection, seconds: float, *, check: bool) -> None:
        now = time.monotonic()
        with self._cond:
            self._put(_Wait(conn, now, now + seconds, check))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="amosync-db-silence",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def disarm(self, conn: AnsweringConnection) -> None:
        with self._cond:
            self._armed.pop(id(conn), None)
            self._checking.pop(id(conn), None)  # a check under way finds it gone and stops

    def _put(self, wait: _Wait) -> None:
        self._armed[id(wait.conn)] = wait
        if self._next is None or wait.deadline < self._next:
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, wait in list(self._armed.items()):
                    if wait.deadline > now:
                        continue
                    del self._armed[key]
                    if wait.check:
                        self._checking[key] = wait
                        threading.Thread(target=self._check, args=(wait,),
                                         name="amosync-db-check", daemon=True).start()  # fmt: skip
                    else:
                        wait.conn.cut(f"no answer for {_seconds(wait.deadline - wait.started)} s")
                self._next = min((w.deadline for w in self._armed.values()), default=None)
                self._cond.wait(None if self._next is None else self._next - now)

    def _check(self, wait: _Wait) -> None:
        """Ask the server (on a second connection) about `wait`, then cut it or let it go on."""
        conn = wait.conn
        verdict = ask(conn.reach)
        with self._cond:
            if self._checking.get(id(conn)) is not wait:
                return  # answered (or failed) meanwhile
            del self._checking[id(conn)]
            now = time.monotonic()
            waited = f"no answer for {_seconds(now - wait.started)} s"
            if verdict is Verdict.SILENT:
                conn.cut(f"{waited}, nor to a second connection")
            elif verdict is Verdict.FINISHED:
                # the server is done with it: its answer is on the way, or was lost there
                self._put(_Wait(conn, wait.started, now + GRACE_S, check=False))
            else:
                conn.silent.since = None  # the server answers: not a silent spell (any more)
                self._put(self._going_on(wait, now))

    @staticmethod
    def _going_on(wait: _Wait, now: float) -> _Wait:
        """The server is working on `wait`: checked again after a whole bound (a migration), or
        cut at its whole bound (the server's statement_timeout ends it before that)."""
        answer_s = wait.conn.answer_s
        if wait.conn.unbounded_statements:
            return _Wait(wait.conn, wait.started, now + answer_s, check=True)
        return _Wait(wait.conn, wait.started, max(now, wait.started + answer_s), check=False)


_WATCH = _Watchdog()


def _seconds(span: float) -> str:
    """A wait's length as its line says it: 12, 12.5, 322.4."""
    return f"{round(span, 1):g}"


def watch(
    engine: Engine, statement_timeout_s: float, *, unbounded_statements: bool = False
) -> None:
    """Make the engine's connections `AnsweringConnection`s bounded at `statement_timeout_s`
    + `GRACE_S` (0: the server's statement timeout is off, and so is this bound).
    `unbounded_statements`: the engine's sessions run with no statement timeout (migrations):
    a wait that long is checked with the server instead of cut (see the module)."""
    if statement_timeout_s <= 0:
        return
    kind: type[AnsweringConnection] = type(
        "AnsweringConnection",
        (AnsweringConnection,),
        {"answer_s": statement_timeout_s + GRACE_S, "silent": _Silent(),
         "unbounded_statements": unbounded_statements},
    )  # fmt: skip

    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        conn = kind.connect(*cargs, **cparams)
        conn.reach = Reach(tuple(cargs), dict(cparams), conn.info.backend_pid)
        return conn

    event.listen(engine, "do_connect", connect)


class CheckingConnection(AnsweringConnection):
    """The second connection of a check: its own waits are cut at `GRACE_S`, never checked."""

    may_check = False
    silent = _Silent()


def ask(reach: Reach | None) -> Verdict:
    """Ask the server, on a second connection (bounded at `GRACE_S` beyond its connect), what
    the backend `reach.pid` is doing."""
    if reach is None:
        return Verdict.SILENT
    params = {**reach.params, "options": _CHECK_OPTIONS, "application_name": "amosync-check"}
    try:
        with CheckingConnection.connect(*reach.args, **params, autocommit=True) as second:
            row = second.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", [reach.pid]
            ).fetchone()
    except psycopg.Error as exc:  # a refusal (too many clients, …) is an answer: it lives
        return Verdict.WORKING if exc.sqlstate else Verdict.SILENT
    if row is None or row[0] in _IDLE:
        return Verdict.FINISHED
    return Verdict.WORKING  # active, or another role's session whose state it does not show
