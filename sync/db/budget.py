"""The account's rate budget shared by every process: one `sync_state` row, changed under a row
lock (implements `sync.amo.budget.BudgetStore`; what the value means is `sync.amo.budget`'s).

`update(change)` is one short transaction on a connection of its own (never one from the pull's
or push's pool, which may all be busy waiting for this very budget): `SELECT … FOR UPDATE` the
row with PostgreSQL's `clock_timestamp()`, let `change` turn the value into a new one, write it
back, commit. The row lock serialises processes; PostgreSQL's clock is the one clock they
share, even on different hosts. Where our clock stood when PostgreSQL's was read is only known
to within half the round trip around the read, and that round trip includes the wait for the
row lock and any time the process was not scheduled (on a loaded host 100-400 ms): taken at its
midpoint, one process read the shared schedule up to 190 ms off the other's (measured), more
than the schedule's margin, and their starts bunched. So the offset between the two clocks is
the one from the tightest round trip so far (`ClockOffset`), not the latest. A process claims
a few request starts per transaction (see `sync.amo.ratelimit`), so at 7 requests/s the row
sees a couple of updates a second.

No table of its own: the state is a few numbers in the existing key/value table (key
`amocrm_rate_budget`), so no migration is needed and a lost row only costs a fresh schedule.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from sync.db import silence
from sync.db.diag import driver_message
from sync.db.engine import client_args
from sync.db.schema import sync_state
from sync.errors import StoreError

BUDGET_KEY = "amocrm_rate_budget"
# milliseconds: the row lock is held for one claim; a statement that waits longer fails, and
# the rate limiter falls back to half the budget until the database answers again
SESSION_OPTIONS = "-c lock_timeout=2000 -c statement_timeout=5000"
STATEMENT_TIMEOUT_S = 5.0  # as in SESSION_OPTIONS: a server still answering ends a wait first

# how fast our monotonic clock may drift from PostgreSQL's (NTP slews the latter by at most
# 500 ppm): what an offset measured that long ago may be off by, beside its round trip
DRIFT = 0.0005

T = TypeVar("T")
Value = Mapping[str, Any]
Change = Callable[[Value | None, float], tuple[T, Value]]


class ClockOffset:
    """Our monotonic clock minus PostgreSQL's, from the round trip that pinned it best.

    Each read gives an offset good to within half its round trip; an older one loses `DRIFT`
    per second. The best bound wins; a reading that cannot agree with the best one within both
    bounds means a clock was stepped, and starts afresh from it."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._error = math.inf  # how far `offset` may be off, as of `_at`
        self._at = 0.0

    def observe(self, before: float, shared: float, after: float) -> float:
        """PostgreSQL's clock read `shared` between our `before` and `after`: the best offset."""
        offset, error = (before + after) / 2 - shared, (after - before) / 2
        aged = self._error + DRIFT * max(0.0, after - self._at)
        if error <= aged or abs(offset - self.offset) > error + aged:
            self.offset, self._error, self._at = offset, error, after
        return self.offset


class BudgetRow:
    """The shared rate budget of the engine's schema."""

    def __init__(
        self,
        engine: Engine,
        key: str = BUDGET_KEY,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        translate = engine.get_execution_options().get("schema_translate_map") or {}
        schema = translate.get(None) or "public"
        url = engine.url
        self.name = f"{url.host or 'local'}:{url.port or ''}/{url.database}/{schema}/{key}"
        self._key = key
        self._engine = sa.create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                **client_args(url),  # keepalives: a path that died is noticed, as on every one
                "application_name": "amosync-budget",
                "options": SESSION_OPTIONS,
                "connect_timeout": 5,
            },
            execution_options={"schema_translate_map": dict(translate)},
        )
        # a server silent after the connect: every request thread waits on this row, and no
        # other connection of the run is waiting then, so only this bound ends the run
        silence.watch(self._engine, STATEMENT_TIMEOUT_S)
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._row_ready = False  # made sure of on this connection (reset when it is dropped)
        self._closed = False  # `close` ran and no `update` since: a late `warm` does nothing
        self._monotonic = monotonic
        self._clock = ClockOffset()  # survives a dropped connection: the clocks are the same

    def __repr__(self) -> str:
        return f"BudgetRow({self.name!r})"

    def update(self, change: Change[T]) -> tuple[T, float, float]:
        """`change(value, now)` → (result, new value), under the row lock; returns
        `(result, now, local)` with `local` this process's `time.monotonic()` at `now`."""
        with self._lock:
            self._closed = False
            try:
                return self._update(change)
            except SQLAlchemyError as exc:
                self._drop()
                message = driver_message(exc) if isinstance(exc, DBAPIError) else str(exc)
                raise StoreError(
                    f"PostgreSQL failed while sharing the rate budget: {message}", transient=True
                ) from exc

    def warm(self) -> None:
        """Open the connection and make sure the row exists, ahead of the first claim (the CLI
        runs this in a thread while the run prepares, so the first request waits for one
        round trip, not a connect). Best effort: any failure is left for the first `update` to
        report, and a store closed meanwhile (the command already failed) is not reopened."""
        with self._lock:
            if self._closed:
                return
            try:
                conn = self._connection()
                with conn.begin():
                    self._ensure_row(conn)
            except Exception:  # noqa: BLE001 - a warm-up: `update` reports what is wrong
                self._drop()

    def _update(self, change: Change[T]) -> tuple[T, float, float]:
        conn = self._connection()
        with conn.begin():
            self._ensure_row(conn)
            before = self._monotonic()
            value, now = self._read(conn)
            local = now + self._clock.observe(before, now, self._monotonic())
            result, new = change(value if isinstance(value, Mapping) else None, now)
            conn.execute(
                sa.update(sync_state)
                .where(sync_state.c.key == self._key)
                .values(value=dict(new), updated_at=sa.func.now())
            )
        return result, now, local

    def _read(self, conn: Connection) -> tuple[Any, float]:
        clock = sa.extract("epoch", sa.func.clock_timestamp())
        row = conn.execute(
            sa.select(sync_state.c.value, clock)
            .where(sync_state.c.key == self._key)
            .with_for_update()
        ).one()
        return row[0], float(row[1])

    def _ensure_row(self, conn: Connection) -> None:
        """Insert the row unless this connection already made sure of it."""
        if self._row_ready:
            return
        statement = insert(sync_state).values(key=self._key, value={})
        conn.execute(statement.on_conflict_do_nothing(index_elements=[sync_state.c.key]))
        self._row_ready = True

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._engine.connect()
        return self._conn

    def _drop(self) -> None:
        # the row's INSERT may not have committed: make sure of it again on the next connection
        self._row_ready = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except SQLAlchemyError:
                pass  # it is gone either way

    def close(self) -> None:
        """Let the connection go; the next `update` opens another."""
        with self._lock:
            self._closed = True
            self._drop()
            self._engine.dispose()
