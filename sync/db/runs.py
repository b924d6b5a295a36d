"""The operations tables, for pull and push alike: cursors and other state in `sync_state`, the
`sync_runs` rows, `sync_requests`, the custom field cache, and the run locks. Every statement on
these tables is here, whoever calls it (push's run rows too).

One clock: every timestamp these tables hold is the database's `now()` (the transaction's start),
never the process's clock, so `started_at` and `finished_at` of pull and push runs compare with
each other and with `sync_requests` whatever host wrote them.

Cursor keys in `sync_state` (values are JSON objects):
    pull.contacts   {"updated_at": unix s}  every contact updated before this is stored
    pull.events     {"created_at": unix s}  every deletion/restore event before this is applied
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Executable

from sync.core.mapping import FieldDef, field_def
from sync.core.models import RequestKind, RequestStatus, RunKind, RunStatus
from sync.db.locks import LockWait, SessionLock, lock_key, session_lock
from sync.db.schema import contact_custom_fields, sync_requests, sync_runs, sync_state
from sync.errors import SyncError

CONTACTS_CURSOR = "pull.contacts"
EVENTS_CURSOR = "pull.events"
PULL_COUNTERS = ("fetched", "upserted", "deleted", "requests")
PUSH_COUNTERS = ("pushed", "conflicts", "errors", "requests")
RUN_COUNTERS = tuple(dict.fromkeys((*PULL_COUNTERS, *PUSH_COUNTERS)))
INTERRUPTED = "interrupted: the run stopped, or lost its lock, before it finished"
_FIELD_COLUMNS = ("id", "name", "code", "type", "sort", "is_api_only", "enums")


class RunStore:
    """The operations tables of one schema (a validated identifier): every statement runs with
    that schema, whatever the connection's engine maps (Core with `schema_translate_map`)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        return f"RunStore(schema={self.schema!r})"

    def _run(self, conn: Connection, statement: Executable, params: Any = None) -> sa.Result[Any]:
        return _execute(conn, statement, params, self.schema)

    # --- sync_state ---------------------------------------------------------------------------

    def get_state(self, conn: Connection, key: str) -> dict[str, Any] | None:
        return read_state(conn, key, schema=self.schema)

    def set_state(
        self,
        conn: Connection,
        key: str,
        value: Mapping[str, Any],
        *,
        counted: RunCounts | None = None,
    ) -> None:
        """Store `value` under `key`; `counted`: also add to a run's counters, in the same
        statement (`add_counts`)."""
        also = None if counted is None else _counted(*counted)
        write_state(conn, key, value, schema=self.schema, also=also)

    # --- sync_runs ----------------------------------------------------------------------------

    def start_run(self, conn: Connection, kind: str) -> int:
        """A new `running` row of `kind` (pull, full, push), started now (the database's)."""
        statement = (
            sa.insert(sync_runs)
            .values(kind=RunKind(kind), started_at=sa.func.now())
            .returning(sync_runs.c.id)
        )
        return int(self._run(conn, statement).scalar_one())

    def finish_run(
        self,
        conn: Connection,
        run_id: int,
        status: str,
        counts: Mapping[str, int],
        error: str | None = None,
    ) -> None:
        """Close a run with its counters (those not given are 0). A run already marked failed
        (abandoned by a run that took the lock) never turns succeeded."""
        status = RunStatus(status)
        statement = sa.update(sync_runs).where(sync_runs.c.id == run_id)
        if status == RunStatus.SUCCEEDED:
            statement = statement.where(sync_runs.c.status == RunStatus.RUNNING)
        values = {name: int(counts.get(name, 0)) for name in RUN_COUNTERS}
        statement = statement.values(
            finished_at=sa.func.now(), status=status, error=error, **values
        )
        self._run(conn, statement)

    def add_counts(self, conn: Connection, run_id: int, counts: Mapping[str, int]) -> None:
        """Add to a running run's counters what the caller's transaction did (see
        `RunCounts`), so they are true whenever it commits: a run killed with -9 leaves the
        counts of what it stored, not zeros (audit). `finish_run` then sets the final ones."""
        self._run(conn, _counted(run_id, counts))

    def abandon_stale_runs(self, conn: Connection, kinds: Sequence[str]) -> int:
        """Runs left 'running' by a killed process (the caller holds the lock for those kinds)."""
        statement = (
            sa.update(sync_runs)
            .where(sync_runs.c.status == RunStatus.RUNNING)
            .where(sync_runs.c.kind.in_([RunKind(k) for k in kinds]))
            .values(status=RunStatus.FAILED, finished_at=sa.func.now(), error=INTERRUPTED)
            .returning(sync_runs.c.id)
        )
        return len(self._run(conn, statement).all())

    # --- sync_requests ------------------------------------------------------------------------

    def claim_request(self, conn: Connection) -> int | None:
        """Take the oldest pending full-resync request (skipping ones another process holds)."""
        oldest = (
            sa.select(sync_requests.c.id)
            .where(sync_requests.c.status == RequestStatus.PENDING)
            .order_by(sync_requests.c.requested_at, sync_requests.c.id)
            .with_for_update(skip_locked=True)
            .limit(1)
            .scalar_subquery()
        )
        statement = (
            sa.update(sync_requests)
            .where(sync_requests.c.id == oldest)
            .values(status=RequestStatus.RUNNING, started_at=sa.func.now())
            .returning(sync_requests.c.id)
        )
        value = self._run(conn, statement).scalar()
        return None if value is None else int(value)

    def reopen_requests(self, conn: Connection, keep: int | None = None) -> int:
        """Put back to `pending` the requests left `running` by a run that is gone (a process
        killed between claiming and finishing one); the caller holds the pull lock, so no other
        run serves them. `keep`: the request the caller itself is serving."""
        others = [] if keep is None else [sync_requests.c.id != keep]
        return self._back_to_pending(conn, *others)

    def put_back_request(self, conn: Connection, request_id: int) -> bool:
        """A request whose run was cut short by a stop is `pending` again (it was not done, nor
        did it fail): the next leader serves it. True if it was still `running`."""
        return self._back_to_pending(conn, sync_requests.c.id == request_id) > 0

    def _back_to_pending(self, conn: Connection, *where: sa.ColumnElement[bool]) -> int:
        """The `running` requests `where` selects, `pending` again; how many they were."""
        statement = (
            sa.update(sync_requests)
            .where(sync_requests.c.status == RequestStatus.RUNNING, *where)
            .values(status=RequestStatus.PENDING, started_at=None)
            .returning(sync_requests.c.id)
        )
        return len(self._run(conn, statement).all())

    def finish_request(
        self, conn: Connection, request_id: int, run_id: int | None, error: str | None
    ) -> None:
        """Close a request; other pending requests are served by the same run, so close them.

        Only a request still open is closed: one its run already closed `done` stays done
        whatever fails after (releasing a lock, a second report of the same failure)."""
        status = RequestStatus.FAILED if error else RequestStatus.DONE
        open_ = sync_requests.c.status.in_([RequestStatus.RUNNING, RequestStatus.PENDING])
        this = sa.and_(sync_requests.c.id == request_id, open_)  # pending: reopened meanwhile
        if status == RequestStatus.DONE:
            started = sa.select(sync_requests.c.started_at).where(sync_requests.c.id == request_id)
            asked_before = sa.and_(
                sync_requests.c.status == RequestStatus.PENDING,
                sync_requests.c.requested_at <= started.scalar_subquery(),
            )
            this = sa.or_(this, asked_before)
        statement = (
            sa.update(sync_requests)
            .where(this)
            .values(status=status, finished_at=sa.func.now(), run_id=run_id, error=error)
        )
        self._run(conn, statement)

    # --- custom field definitions ------------------------------------------------------------

    def load_fields(self, conn: Connection) -> dict[int, FieldDef]:
        columns = [contact_custom_fields.c[name] for name in ("id", "name", "code", "type")]
        query = sa.select(*columns, contact_custom_fields.c.enums)
        rows = self._run(conn, query).mappings()
        return {int(r["id"]): field_def(dict(r)) for r in rows}

    def save_fields(self, conn: Connection, raw_fields: Sequence[Mapping[str, Any]]) -> None:
        """Replace the cached definitions with amoCRM's current list."""
        rows = [{k: f.get(k) for k in _FIELD_COLUMNS} for f in raw_fields]
        self._run(conn, sa.delete(contact_custom_fields))
        if rows:
            statement = sa.insert(contact_custom_fields).values(fetched_at=sa.func.now())
            self._run(conn, statement, rows)


# (run id, counters): pull's per-page counts ("fetched", "upserted", "deleted") are added to the
# row; "requests" is the run's total so far (requests go out beside the pages: it only grows)
RunCounts = tuple[int, Mapping[str, int]]
_TOTALS = ("requests",)


def _counted(run_id: int, counts: Mapping[str, int]) -> sa.Update:
    values = {
        name: sa.func.greatest(sync_runs.c[name], int(n))
        if name in _TOTALS
        else sync_runs.c[name] + int(n)
        for name, n in counts.items()
    }
    return sa.update(sync_runs).where(sync_runs.c.id == run_id).values(values)


# --- module level: the same statements on the connection's own schema map ----------------------


def _execute(
    conn: Connection, statement: Executable, params: Any = None, schema: str | None = None
) -> sa.Result[Any]:
    if schema is None:  # the engine's schema_translate_map (sync.db.engine.create_engine)
        return conn.execute(statement, params)
    options = {"schema_translate_map": {None: schema}}
    return conn.execute(statement, params, execution_options=options)


def read_state(conn: Connection, key: str, *, schema: str | None = None) -> dict[str, Any] | None:
    """The `sync_state` value under `key` (a JSON object), None when there is none."""
    query = sa.select(sync_state.c.value).where(sync_state.c.key == key)
    value = _execute(conn, query, schema=schema).scalar()
    return dict(value) if isinstance(value, Mapping) else None


def write_state(
    conn: Connection,
    key: str,
    value: Mapping[str, Any],
    *,
    schema: str | None = None,
    also: sa.Update | None = None,
) -> None:
    """Store `value` under `key` (insert or replace), stamped now; `also`: an UPDATE run by the
    same statement (a data-modifying CTE: no round trip of its own)."""
    statement = insert(sync_state).values(key=key, value=dict(value), updated_at=sa.func.now())
    statement = statement.on_conflict_do_update(
        index_elements=[sync_state.c.key],
        set_={"value": statement.excluded.value, "updated_at": sa.func.now()},
    )
    if also is not None:
        statement = statement.add_cte(also.cte("also"))
    _execute(conn, statement, schema=schema)


def delete_state(conn: Connection, key: str, *, schema: str | None = None) -> None:
    _execute(conn, sa.delete(sync_state).where(sync_state.c.key == key), schema=schema)


def add_request(conn: Connection, kind: str = RequestKind.FULL) -> int:
    """Ask for a full resync (the daemon's trigger NOTIFYs it); returns the request id."""
    statement = (
        sa.insert(sync_requests).values(kind=RequestKind(kind)).returning(sync_requests.c.id)
    )
    return int(conn.execute(statement).scalar_one())


PULL_LOCK_LOST = "the run is not recorded as succeeded; the next pull goes on from the cursor"


def pull_lock_key(schema: str) -> int:
    return lock_key(schema, "pull")


PULL_BUSY = "another pull is running on this database schema; try again later"
PUSH_BUSY = "another push is running on this database schema; try again later"


@contextmanager
def pull_lock(
    engine: Engine, schema: str, wait: LockWait | None = None
) -> Iterator[SessionLock | None]:
    """Hold the single-pull lock for the block (a session advisory lock on its own connection,
    released when the block ends or the process dies). Yields None if another holds it.

    Pull writes only to PostgreSQL, idempotently, and its cursor only moves forward, so a pull
    that lost its lock harms nothing by finishing its page; it checks the lock before it records
    itself succeeded."""
    with session_lock(engine, schema, "pull", consequence=PULL_LOCK_LOST, wait=wait) as lock:
        yield lock


PUSH_LOCK_LOST = "stopping before the next write so no edit is sent twice"


def push_lock_key(schema: str) -> int:
    return lock_key(schema, "push")


@contextmanager
def push_lock(engine: Engine, schema: str, wait: LockWait | None = None) -> Iterator[SessionLock]:
    """Hold the push lock (one push at a time per schema) for the block, or fail (at once, or
    after `wait`).

    The lock sits on its own connection; the run calls `ensure_held()` before every write to
    amoCRM, so a push whose lock session was ended stops before a second push could repeat it.
    """
    with session_lock(engine, schema, "push", consequence=PUSH_LOCK_LOST, wait=wait) as lock:
        if lock is None:
            raise SyncError(PUSH_BUSY)
        yield lock
