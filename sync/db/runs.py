"""Operations state of pull: cursors in `sync_state`, `sync_runs` rows, `sync_requests`, the
custom field cache and the single-instance lock. Every statement of these tables is here.

Cursor keys in `sync_state` (values are JSON objects):
    pull.contacts   {"updated_at": unix s}  every contact updated before this is stored
    pull.events     {"created_at": unix s}  every deletion/restore event before this is applied
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.db.locks import SessionLock, advisory_key, run_lock
from sync.mapping import FieldDef, field_def

CONTACTS_CURSOR = "pull.contacts"
EVENTS_CURSOR = "pull.events"
RUN_COUNTERS = ("fetched", "upserted", "deleted", "requests")


class RunStore:
    """Bookkeeping SQL for one schema (a validated identifier)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.s = f'"{schema}"'

    # --- cursors ------------------------------------------------------------------------------

    def get_state(self, conn: Connection, key: str) -> dict[str, Any] | None:
        sql = f"SELECT value FROM {self.s}.sync_state WHERE key = :k"
        value = conn.scalar(sa.text(sql), {"k": key})
        return dict(value) if isinstance(value, Mapping) else None

    def set_state(self, conn: Connection, key: str, value: Mapping[str, Any]) -> None:
        sql = f"""
            INSERT INTO {self.s}.sync_state (key, value, updated_at)
            VALUES (:k, CAST(:v AS jsonb), now())
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"""
        conn.execute(sa.text(sql), {"k": key, "v": json.dumps(dict(value))})

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, conn: Connection, kind: str) -> int:
        sql = f"INSERT INTO {self.s}.sync_runs (kind) VALUES (:kind) RETURNING id"
        return int(conn.scalar(sa.text(sql), {"kind": kind}) or 0)

    def finish_run(
        self,
        conn: Connection,
        run_id: int,
        status: str,
        counts: Mapping[str, int],
        error: str | None = None,
    ) -> None:
        sets = ", ".join(f"{name} = :{name}" for name in RUN_COUNTERS)
        # a run already marked failed (abandoned by a run that took the lock) never turns succeeded
        sql = f"""
            UPDATE {self.s}.sync_runs SET finished_at = now(), status = :status, error = :error,
            {sets} WHERE id = :id AND (status = 'running' OR :status <> 'succeeded')"""
        values = {name: int(counts.get(name, 0)) for name in RUN_COUNTERS}
        conn.execute(sa.text(sql), {"id": run_id, "status": status, "error": error, **values})

    def abandon_stale_runs(self, conn: Connection, kinds: Sequence[str]) -> int:
        """Runs left 'running' by a killed process (the caller holds the lock for those kinds)."""
        sql = f"""
            UPDATE {self.s}.sync_runs SET status = 'failed', finished_at = now(),
            error = 'interrupted: the run stopped, or lost its lock, before it finished'
            WHERE status = 'running' AND kind = ANY(:kinds) RETURNING id"""
        return len(conn.execute(sa.text(sql), {"kinds": list(kinds)}).all())

    # --- requests -----------------------------------------------------------------------------

    def claim_request(self, conn: Connection) -> int | None:
        """Take the oldest pending full-resync request (skipping ones another process holds)."""
        sql = f"""
            UPDATE {self.s}.sync_requests SET status = 'running', started_at = now()
            WHERE id = (SELECT id FROM {self.s}.sync_requests WHERE status = 'pending'
                        ORDER BY requested_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
            RETURNING id"""
        value = conn.scalar(sa.text(sql))
        return None if value is None else int(value)

    def release_request(self, conn: Connection, request_id: int) -> None:
        """Put a claimed request back (it could not be served now)."""
        sql = f"""
            UPDATE {self.s}.sync_requests SET status = 'pending', started_at = NULL
            WHERE id = :id AND status = 'running'"""
        conn.execute(sa.text(sql), {"id": request_id})

    def finish_request(
        self, conn: Connection, request_id: int, run_id: int | None, error: str | None
    ) -> None:
        """Close a request; other pending requests are served by the same run, so close them.

        Only a request still `running` is closed: one its run already closed `done` stays done
        whatever fails after (releasing a lock, a second report of the same failure)."""
        status = "failed" if error else "done"
        sql = f"""
            UPDATE {self.s}.sync_requests SET status = :status, finished_at = now(),
            run_id = :run, error = :error
            WHERE (id = :id AND status = 'running')
            OR (:status = 'done' AND status = 'pending' AND requested_at <= (
                SELECT started_at FROM {self.s}.sync_requests WHERE id = :id))"""
        conn.execute(
            sa.text(sql), {"id": request_id, "run": run_id, "status": status, "error": error}
        )

    # --- custom field definitions ------------------------------------------------------------

    def load_fields(self, conn: Connection) -> dict[int, FieldDef]:
        sql = f"SELECT id, name, code, type, enums FROM {self.s}.contact_custom_fields"
        rows = conn.execute(sa.text(sql)).mappings()
        return {int(r["id"]): field_def(dict(r)) for r in rows}

    def save_fields(self, conn: Connection, raw_fields: Sequence[Mapping[str, Any]]) -> None:
        """Replace the cached definitions with amoCRM's current list."""
        rows = [
            {k: f.get(k) for k in ("id", "name", "code", "type", "sort", "is_api_only", "enums")}
            for f in raw_fields
        ]
        conn.execute(sa.text(f"DELETE FROM {self.s}.contact_custom_fields"))
        sql = f"""
            INSERT INTO {self.s}.contact_custom_fields
                (id, name, code, type, sort, is_api_only, enums, fetched_at)
            SELECT id, name, code, type, sort, is_api_only, enums, now()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS n(id bigint, name text, code text,
                type text, sort integer, is_api_only boolean, enums jsonb)"""
        conn.execute(sa.text(sql), {"rows": json.dumps(rows)})


PULL_LOCK_LOST = "the run is not recorded as succeeded; the next pull goes on from the cursor"


def pull_lock_key(schema: str) -> int:
    return advisory_key(f"amosync-pull:{schema}")


@contextmanager
def pull_lock(engine: Engine, schema: str) -> Iterator[SessionLock | None]:
    """Hold the single-pull lock for the block (a session advisory lock on its own connection,
    released when the block ends or the process dies). Yields None if another holds it.

    Pull writes only to PostgreSQL, idempotently, and its cursor only moves forward, so a pull
    that lost its lock harms nothing by finishing its page; it checks the lock before it records
    itself succeeded."""
    with run_lock(engine, pull_lock_key(schema), name="pull", consequence=PULL_LOCK_LOST) as lock:
        yield lock
