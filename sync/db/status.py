"""Read-only queries behind `amosync status`, `/healthz` and `/metrics`.

Everything here is a small read of the operations tables (`sync_runs`, `sync_state`,
`sync_requests`) or a count on the data tables; nothing here writes (every write of those
tables, asking for a resync included, is in `sync.db.runs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.core.models import (
    FINISHED_REQUEST,
    ChangeKind,
    ContactStatus,
    RequestStatus,
    RunKind,
    RunStatus,
)
from sync.core.models import PULL_KINDS as PULL_RUN_KINDS
from sync.db.catalog import pg_locks, pg_stat_activity
from sync.db.locks import advisory_held, leader_lock_key, lock_key, released_keys
from sync.db.schema import (
    contact_chats,
    contacts,
    sync_changes,
    sync_conflicts,
    sync_full_seen,
    sync_requests,
    sync_runs,
    sync_state,
)

PULL_KINDS = PULL_RUN_KINDS  # sync.status reads it here
# sync_state keys that hold secrets: status shows that they exist, never their value.
SECRET_STATE_KEYS = ("amocrm_oauth_tokens",)


@dataclass(frozen=True)
class RunRow:
    """One `sync_runs` row."""

    id: int
    kind: RunKind
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    fetched: int
    upserted: int
    deleted: int
    pushed: int
    conflicts: int
    errors: int
    requests: int
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            name: (value.isoformat() if isinstance(value, datetime) else value)
            for name, value in self.__dict__.items()
        }


@dataclass(frozen=True)
class Leader:
    """Who holds the leader lock, from `pg_stat_activity`."""

    application_name: str
    client_addr: str | None
    since: datetime | None


def fetch_last_runs(conn: Connection) -> dict[str, RunRow]:
    """The latest run of each kind (pull, full, push)."""
    ranked = sa.select(
        sync_runs,
        sa.func.row_number()
        .over(partition_by=sync_runs.c.kind, order_by=sync_runs.c.id.desc())
        .label("rank"),
    ).subquery()
    rows = conn.execute(sa.select(ranked).where(ranked.c.rank == 1)).mappings()
    return {row["kind"]: _run(row) for row in rows}


def fetch_last_success(conn: Connection) -> dict[str, RunRow]:
    """The latest succeeded run of each kind."""
    return _latest_of_each_kind(conn, sync_runs.c.status == RunStatus.SUCCEEDED)


def fetch_last_finished(conn: Connection) -> dict[str, RunRow]:
    """The latest finished run (succeeded or failed) of each kind: while a new run retries an
    outage, this says how the one before it ended."""
    return _latest_of_each_kind(conn, sync_runs.c.status != RunStatus.RUNNING)


def _latest_of_each_kind(conn: Connection, done: sa.ColumnElement[bool]) -> dict[str, RunRow]:
    ranked = sa.select(
        sync_runs,
        sa.func.row_number()
        .over(partition_by=sync_runs.c.kind, order_by=sync_runs.c.id.desc())
        .label("rank"),
    ).where(done)
    sub = ranked.subquery()
    rows = conn.execute(sa.select(sub).where(sub.c.rank == 1)).mappings()
    return {row["kind"]: _run(row) for row in rows}


def fetch_runs_since(conn: Connection, after_id: int) -> list[RunRow]:
    """Finished runs with an id above `after_id`, oldest first (to count what a job did)."""
    query = (
        sa.select(sync_runs)
        .where(sync_runs.c.id > after_id, sync_runs.c.status != RunStatus.RUNNING)
        .order_by(sync_runs.c.id)
    )
    return [_run(row) for row in conn.execute(query).mappings()]


def fetch_run(conn: Connection, run_id: int) -> RunRow | None:
    row = conn.execute(sa.select(sync_runs).where(sync_runs.c.id == run_id)).mappings().first()
    return None if row is None else _run(row)


def fetch_last_lock_wait(conn: Connection) -> RunRow | None:
    """The latest run that failed waiting for a lock another session held (`LockWaitError`),
    unless a later run of its kind succeeded: the wait is over, and an old line would read as a
    current problem."""
    later = sync_runs.alias("later")
    query = (
        sa.select(sync_runs)
        .where(sync_runs.c.error.like("waiting for a lock%"))
        .where(
            ~sa.exists().where(
                later.c.kind == sync_runs.c.kind,
                later.c.id > sync_runs.c.id,
                later.c.status == RunStatus.SUCCEEDED.value,
            )
        )
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _run(row)


def fetch_max_run_id(conn: Connection) -> int:
    return int(conn.scalar(sa.select(sa.func.coalesce(sa.func.max(sync_runs.c.id), 0))) or 0)


def _run(row: Any) -> RunRow:
    values = {name: row[name] for name in RunRow.__dataclass_fields__}
    values.update(kind=RunKind(row["kind"]), status=RunStatus(row["status"]))
    return RunRow(**values)


def count_pending_changes(conn: Connection) -> int:
    """Captured local edits push will send: not those of rows in `error` (they wait for a fix)."""
    return _count_changes(conn, rejected=False)


def count_rejected_changes(conn: Connection, *, deleted_only: bool = False) -> int:
    """Captured local edits of rows in `error`: kept, but sent only after a new local edit;
    `deleted_only`: those of contacts deleted in amoCRM, where a new edit is refused (they go
    once the contact is restored there and a pull sees it)."""
    return _count_changes(conn, rejected=True, deleted_only=deleted_only)


def _count_changes(conn: Connection, *, rejected: bool, deleted_only: bool = False) -> int:
    in_error = sa.exists().where(
        contacts.c.id == sync_changes.c.contact_id,
        contacts.c.sync_status == ContactStatus.ERROR,
        *([contacts.c.is_deleted.is_(True)] if deleted_only else []),
    )
    query = sa.select(sa.func.count()).select_from(sync_changes)
    return int(conn.scalar(query.where(in_error if rejected else ~in_error)) or 0)


def count_chat_links_to_push(conn: Connection) -> int:
    """Locally inserted chat links waiting for push (one per link, however many captures); push
    sends them only with `sync.chats = true`."""
    query = sa.select(sa.func.count(sa.distinct(sync_changes.c.chat_link_id))).where(
        sync_changes.c.kind == ChangeKind.CHAT_LINK,
        # not one deleted before it was pushed (push forgets its capture)
        sa.exists().where(contact_chats.c.id == sync_changes.c.chat_link_id),
    )
    return int(conn.scalar(query) or 0)


def count_open_conflicts(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(sync_conflicts.c.resolved_at.is_(None))
    return int(conn.scalar(query) or 0)


def count_contacts_by_status(conn: Connection) -> dict[str, int]:
    """Live contacts per `sync_status` (synced, pending, conflict, error)."""
    query = (
        sa.select(contacts.c.sync_status, sa.func.count())
        .where(contacts.c.is_deleted.is_(False))
        .group_by(contacts.c.sync_status)
    )
    return {status: int(count) for status, count in conn.execute(query).all()}


def fetch_row_errors(conn: Connection, limit: int = 5) -> list[dict[str, Any]]:
    """A few contacts amoCRM rejected, with its message."""
    query = (
        sa.select(contacts.c.id, contacts.c.name, contacts.c.sync_error)
        .where(contacts.c.sync_status == ContactStatus.ERROR)
        .order_by(contacts.c.id)
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def fetch_waiting_creates(conn: Connection, temp_ids: list[int]) -> list[dict[str, Any]]:
    """Of these new contacts in flight, those push marked as waiting for amoCRM's confirmation
    (`sync_error` set), newest insert last."""
    query = (
        sa.select(contacts.c.id, contacts.c.name, contacts.c.sync_error)
        .where(contacts.c.id.in_(temp_ids), contacts.c.id < 0, contacts.c.sync_error.is_not(None))
        .order_by(contacts.c.id.desc())
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def fetch_state(conn: Connection) -> dict[str, Any]:
    """`sync_state` (cursors and the like) with secret values left out."""
    rows = conn.execute(sa.select(sync_state.c.key, sync_state.c.value, sync_state.c.updated_at))
    return {
        key: {
            "value": "(stored)" if key in SECRET_STATE_KEYS else value,
            "updated_at": updated_at.isoformat(),
        }
        for key, value, updated_at in rows
    }


def fetch_held_run_locks(conn: Connection, schema: str) -> set[str]:
    """Which run locks ("pull", "push") of the schema some session holds now (any of a lock's
    keys, its released ones too): a run row left `running` without its lock is over."""
    held = set()
    for name in ("pull", "push"):
        keys = (lock_key(schema, name), *released_keys(schema, name))
        holders = sa.select(pg_locks.c.pid).where(sa.or_(*(advisory_held(key) for key in keys)))
        if conn.scalar(sa.select(holders.exists())):
            held.add(name)
    return held


def fetch_leader(conn: Connection, schema: str) -> Leader | None:
    """The session holding this schema's leader lock in this database, if any."""
    query = (
        sa.select(
            pg_stat_activity.c.application_name,
            sa.func.host(pg_stat_activity.c.client_addr).label("client_addr"),
            pg_stat_activity.c.backend_start,
        )
        .join_from(pg_locks, pg_stat_activity, pg_stat_activity.c.pid == pg_locks.c.pid)
        .where(advisory_held(leader_lock_key(schema)))
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return Leader(row.application_name, row.client_addr, row.backend_start)


# --- sync_requests -----------------------------------------------------------------------------


def count_pending_requests(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(sync_requests.c.status == RequestStatus.PENDING)
    return int(conn.scalar(query) or 0)


def fetch_request(conn: Connection, request_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(sa.select(sync_requests).where(sync_requests.c.id == request_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def fetch_recent_requests(conn: Connection, limit: int = 5) -> list[dict[str, Any]]:
    """The latest `sync_requests` rows, newest first, with their outcome (status, run, error)."""
    query = sa.select(sync_requests).order_by(sync_requests.c.id.desc()).limit(limit)
    return [dict(row) for row in conn.execute(query).mappings()]


def fetch_full_run_progress(conn: Connection) -> tuple[int, int] | None:
    """(run id, contacts stored so far) of the full resync running now, if any: what a person
    waiting for the daemon's resync sees grow."""
    run_id = conn.scalar(
        sa.select(sync_runs.c.id)
        .where(sync_runs.c.kind == RunKind.FULL, sync_runs.c.status == RunStatus.RUNNING)
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    if run_id is None:
        return None
    seen = sa.select(sa.func.count()).where(sync_full_seen.c.run_id == run_id)
    return int(run_id), int(conn.scalar(seen) or 0)


def count_live_contacts(conn: Connection) -> int:
    query = sa.select(sa.func.count()).where(contacts.c.id > 0, contacts.c.is_deleted.is_(False))
    return int(conn.scalar(query) or 0)


def fetch_oauth_times(conn: Connection) -> tuple[int, int] | None:
    """(obtained_at, expires_at) unix seconds of the stored OAuth pair, without the secrets."""
    value = sync_state.c.value
    row = conn.execute(
        sa.select(value["obtained_at"].as_integer(), value["expires_at"].as_integer()).where(
            sync_state.c.key == SECRET_STATE_KEYS[0]
        )
    ).first()
    if row is None or row[1] is None:
        return None
    return int(row[0] or 0), int(row[1])


def prune_history(conn: Connection, keep_days: int) -> tuple[int, int]:
    """Delete runs and finished requests older than `keep_days`; (runs, requests) deleted.

    The latest succeeded run of each kind stays whatever its age: status, health and the lag
    metric are computed from it.
    """
    cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, keep_days)
    latest = (
        sa.select(sa.func.max(sync_runs.c.id))
        .where(sync_runs.c.status == RunStatus.SUCCEEDED)
        .group_by(sync_runs.c.kind)
    )
    runs = conn.execute(
        sa.delete(sync_runs).where(
            sync_runs.c.status != RunStatus.RUNNING,
            sync_runs.c.started_at < cutoff,
            sync_runs.c.id.not_in(latest),
        )
    ).rowcount
    requests = conn.execute(
        sa.delete(sync_requests).where(
            sync_requests.c.status.in_(FINISHED_REQUEST),
            sync_requests.c.requested_at < cutoff,
        )
    ).rowcount
    return int(runs or 0), int(requests or 0)
