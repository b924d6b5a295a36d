"""A bound on how long a short command waits for PostgreSQL's answers, whatever it waits in.

libpq's `connect_timeout` bounds the connection; the server's `lock_timeout` and
`statement_timeout` bound statements on a server that still answers. A server that accepted the
connection and then says nothing (hung, or behind a network path that holds the packets but
still acknowledges them) is bounded by none of them: a statement, SQLAlchemy's first-connect
queries or a commit would wait for its answer forever. `answered_within` runs a short command's
whole use of the database (engine, schema check, reads) on a thread of its own and gives up on
it after a bound, with one line that says so; the thread is left waiting (a daemon thread: the
process exits without it, and PostgreSQL drops the session when the socket closes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from sync.config import DatabaseConfig
from sync.db.engine import CONNECT_TIMEOUT_S, place
from sync.errors import StoreError

T = TypeVar("T")

# Beyond the longest wait the server itself ends (a lock wait, a connect): time to answer.
ANSWER_GRACE_S = 10.0


def short_command_bound(db: DatabaseConfig) -> float:
    """Seconds a short command (`status`) gives PostgreSQL to answer everything it asks: its
    lock wait (`database.lock_timeout_s`) or a connect (`CONNECT_TIMEOUT_S`), whichever is
    longer, plus `ANSWER_GRACE_S` (20 s by default)."""
    return max(db.lock_timeout_s, CONNECT_TIMEOUT_S) + ANSWER_GRACE_S


def answered_within(seconds: float, db: DatabaseConfig, work: Callable[[], T]) -> T:
    """`work()` (everything a short command does with PostgreSQL), or `StoreError` when it has
    not returned within `seconds`. Its own failures propagate as they are; a signal (SIGTERM,
    Ctrl-C) still reaches the caller while it waits."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as it is
            failure.append(exc)

    thread = threading.Thread(target=run, name="amosync-db-bounded", daemon=True)
    thread.start()
    thread.join(seconds)
    if failure:
        raise failure[0]
    if outcome:
        return outcome[0]
    raise StoreError(
        f"PostgreSQL at {place(db)} did not answer within {seconds:g} s (a hung server, or a "
        "network path that holds its packets)",
        transient=True,
    )
