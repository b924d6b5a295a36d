"""The outbox of local edits: claiming `sync_changes` for push and recording what came of them.

Claiming is a read: the rows read are remembered by id, and only those are consumed after
amoCRM accepted them, so an edit captured while push was sending survives for the next push.
Several rows of one contact coalesce (latest value per column, base from the first row that
touched the column). Every write here runs under `sync_origin`, so triggers do not capture it,
and one batch's results are recorded in one transaction.

Statuses written: `synced` (nothing left), `pending` (a newer edit arrived meanwhile),
`conflict` (a field waits for a person), `error` (amoCRM rejected the row; its edits stay in the
outbox and a new local edit of the row retries them, as does a pull that brings back a contact
amoCRM had not found: `sync.db.tombstones.FOUND_AGAIN`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from sync.core.items import Change, PendingUpdate, UpdateOutcome
from sync.core.mapping import RELATION_COLUMNS, custom_value_rows, field_def
from sync.core.models import ChangeKind, ContactStatus, Winner
from sync.db.engine import sync_origin
from sync.db.schema import (
    TZ,
    contact_custom_field_values,
    contact_custom_fields,
    contacts,
    sync_changes,
    sync_conflicts,
)
from sync.errors import UsageError

# --- claiming ------------------------------------------------------------------------------

_CLAIMABLE = sa.or_(
    contacts.c.sync_status == ContactStatus.PENDING,
    sa.and_(
        contacts.c.sync_status == ContactStatus.CONFLICT,
        sa.exists().where(
            sync_conflicts.c.contact_id == contacts.c.id,
            sync_conflicts.c.resolved_at.is_(None),
            sa.or_(
                sync_conflicts.c.winner.is_not(None),
                # amoCRM has a newer version than the conflict's (a pull stored it): merged
                # again, the two sides may agree now (closed) or the remote value moved on
                contacts.c.updated_at > sync_conflicts.c.remote_updated_at,
            ),
        ),
    ),
)


def claim_updates(conn: Connection, limit: int | None = None) -> list[PendingUpdate]:
    """Pending edits of contacts that exist in amoCRM, coalesced per contact, in capture order.

    Contacts in `error` wait for a new local edit; contacts in `conflict` wait for a winner,
    or for a newer amoCRM version than the conflict was recorded on.
    """
    query = (
        sa.select(sync_changes, contacts.c.updated_at.label("known_updated_at"))
        .join(contacts, contacts.c.id == sync_changes.c.contact_id)
        .where(sync_changes.c.kind.in_((ChangeKind.UPDATE, ChangeKind.CREATE)))
        .where(sync_changes.c.contact_id > 0)
        .where(_CLAIMABLE)
        .order_by(sync_changes.c.contact_id, sync_changes.c.id)
    )
    pending: dict[int, PendingUpdate] = {}
    for row in conn.execute(query).mappings():
        change = _change(row)
        if change.contact_id not in pending:
            if limit is not None and len(pending) >= limit:
                break
            pending[change.contact_id] = PendingUpdate(
                change.contact_id, known_updated_at=row["known_updated_at"]
            )
        pending[change.contact_id].add(change)
    _attach_open_conflicts(conn, pending)
    return list(pending.values())


def _change(row: sa.RowMapping) -> Change:
    return Change(
        id=row["id"],
        contact_id=row["contact_id"],
        kind=row["kind"],
        new_values=row["new_values"] or {},
        base_values=row["base_values"] or {},
        base_updated_at=row["base_updated_at"],
        changed_at=row["changed_at"],
    )


def _attach_open_conflicts(conn: Connection, pending: dict[int, PendingUpdate]) -> None:
    if not pending:
        return
    rows = conn.execute(
        sa.select(
            sync_conflicts.c.id,
            sync_conflicts.c.contact_id,
            sync_conflicts.c.field,
            sync_conflicts.c.winner,
        )
        .where(sync_conflicts.c.resolved_at.is_(None))
        .where(sync_conflicts.c.contact_id.in_(list(pending)))
        .order_by(sync_conflicts.c.id)
    )
    for row in rows:
        winner = None if row.winner is None else Winner(row.winner)
        pending[row.contact_id].open_conflicts[row.field] = (row.id, winner)


# --- recording the outcome of an update batch ---------------------------------------------------


def record_updates(conn: Connection, outcomes: Sequence[UpdateOutcome], now: datetime) -> list[int]:
    """Consume what was settled, store amoCRM's values and versions, record conflicts.

    Runs in the caller's transaction; the contacts are locked first, so a local edit made
    meanwhile either committed before (and is seen here as a newer outbox row) or waits.
    Returns the contacts a pull overtook: it stored a newer amoCRM version than the one push
    knows its settled columns match while push was writing (`UpdateOutcome.remote_at`), and
    kept those columns' local values, since their outbox rows were still there. Their amoCRM
    values are unknown here: the caller reads them (`sync.push.overtaken`). The stored version
    is never set back to push's older one.
    """
    if not outcomes:
        return []
    sync_origin(conn)
    ids = sorted(o.pending.contact_id for o in outcomes)
    locked = conn.execute(
        sa.select(contacts.c.id, contacts.c.updated_at).where(contacts.c.id.in_(ids))
        .order_by(contacts.c.id).with_for_update()
    )  # fmt: skip
    stored: dict[int, datetime | None] = {row.id: row.updated_at for row in locked}
    finished = [o for o in outcomes if _all_done(o)]
    if finished:  # the common case, one statement for the batch
        done_ids = [i for o in finished for i in o.pending.change_ids]
        conn.execute(sa.delete(sync_changes).where(sync_changes.c.id.in_(done_ids)))
    for outcome in outcomes:
        if not _all_done(outcome):
            _consume_part(conn, outcome)
    left = _columns_left(conn, ids)
    status_rows, columns = [], {}
    for outcome in outcomes:
        contact_left = left.get(outcome.pending.contact_id)
        status_rows.append(_status_row(outcome, contact_left, now))
        written = _store_values(conn, outcome, contact_left)
        if CFV in written:
            columns[outcome.pending.contact_id] = written[CFV]
        _store_conflicts(conn, outcome, now)
    conn.execute(_STATUS_UPDATE, status_rows)
    if columns:
        _store_value_rows(conn, columns)
    return [o.pending.contact_id for o in outcomes if _overtaken(o, stored)]


def _overtaken(outcome: UpdateOutcome, stored: dict[int, datetime | None]) -> bool:
    at, seen = stored.get(outcome.pending.contact_id), outcome.remote_at
    settled = outcome.error is None and bool(outcome.done_columns)
    return settled and at is not None and seen is not None and at > seen


def _all_done(outcome: UpdateOutcome) -> bool:
    return outcome.error is None and outcome.done_columns >= outcome.pending.local.keys()


def _consume_part(conn: Connection, outcome: UpdateOutcome) -> None:
    change_ids = outcome.pending.change_ids
    if outcome.error is not None or not outcome.done_columns:
        return
    columns = sa.literal(sorted(outcome.done_columns), type_=ARRAY(sa.Text))
    conn.execute(
        sa.update(sync_changes)
        .where(sync_changes.c.id.in_(change_ids))
        .values(
            new_values=sync_changes.c.new_values.op("-")(columns),
            base_values=sa.func.coalesce(sync_changes.c.base_values, sa.text("'{}'::jsonb"))
            .op("-")(columns),
        )
    )  # fmt: skip
    conn.execute(
        sa.delete(sync_changes).where(
            sync_changes.c.id.in_(change_ids),
            sync_changes.c.new_values == sa.text("'{}'::jsonb"),
        )
    )


def _columns_left(conn: Connection, ids: list[int]) -> dict[int, set[str]]:
    """Columns that still have outbox rows, per contact (held ones and newer edits).

    A pending chat link is not a column of the contact: it has its own outbox rows, settled by
    the link step, and must not keep the contact `pending` (issue 11: a row stuck forever).
    """
    left: dict[int, set[str]] = {}
    rows = conn.execute(
        sa.select(sync_changes.c.contact_id, sync_changes.c.new_values).where(
            sync_changes.c.contact_id.in_(ids), sync_changes.c.kind != ChangeKind.CHAT_LINK
        )
    )
    for row in rows:
        left.setdefault(row.contact_id, set()).update((row.new_values or {}).keys())
    return left


CFV = "custom_fields_values"
_STATUS_UPDATE = (
    sa.update(contacts)
    .where(contacts.c.id == sa.bindparam("b_id"))
    .values(
        sync_status=sa.bindparam("b_status"),
        sync_error=sa.bindparam("b_error"),
        synced_at=sa.func.coalesce(sa.bindparam("b_synced_at", type_=TZ), contacts.c.synced_at),
        # never older than the stored one: a pull may have stored a newer version meanwhile
        updated_at=sa.func.greatest(sa.bindparam("b_updated_at", type_=TZ), contacts.c.updated_at),
    )
)


def _status_row(outcome: UpdateOutcome, left: set[str] | None, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {"b_id": outcome.pending.contact_id, "b_error": None}
    row["b_synced_at"] = row["b_updated_at"] = None
    if outcome.error is not None:
        row.update(b_status=ContactStatus.ERROR, b_error=outcome.error)
        return row
    row["b_updated_at"] = outcome.updated_at
    if outcome.held:
        row["b_status"] = ContactStatus.CONFLICT
    elif left:
        row["b_status"] = ContactStatus.PENDING
    else:
        row.update(b_status=ContactStatus.SYNCED, b_synced_at=now)
    return row


def _store_values(
    conn: Connection, outcome: UpdateOutcome, left: set[str] | None
) -> dict[str, Any]:
    """amoCRM's values of conflicts it won; a newer local edit of the column wins over them.
    Returns the columns stored."""
    values = {c: v for c, v in outcome.write.items() if c not in (left or set())}
    if not values or outcome.error is not None:
        return {}
    conn.execute(
        sa.update(contacts).where(contacts.c.id == outcome.pending.contact_id).values(**values)
    )
    return values


def _store_value_rows(conn: Connection, columns: dict[int, Any]) -> None:
    """`contact_custom_field_values` of these contacts follow the `custom_fields_values` just
    stored (amoCRM's, for a conflict it won), as a pull's would: when nothing was sent there is
    no read-back, and no pull lists the contact again to bring them."""
    query = sa.select(
        *(contact_custom_fields.c[n] for n in ("id", "name", "code", "type", "enums"))
    )
    fields = {int(r["id"]): field_def(dict(r)) for r in conn.execute(query).mappings()}
    table, names = contact_custom_field_values, RELATION_COLUMNS["custom_values"]
    conn.execute(sa.delete(table).where(table.c.contact_id.in_(sorted(columns))))
    rows = [
        dict(zip(names, row, strict=True))
        for contact_id, column in columns.items()
        for row in custom_value_rows(contact_id, column, fields)
    ]
    if rows:
        conn.execute(sa.insert(table), rows)


def _store_conflicts(conn: Connection, outcome: UpdateOutcome, now: datetime) -> None:
    contact_id = outcome.pending.contact_id
    for conflict in outcome.conflicts:
        resolved = now if conflict.winner is not None or conflict.agreed else None
        if conflict.conflict_id is not None:
            conn.execute(
                sa.update(sync_conflicts)
                .where(sync_conflicts.c.id == conflict.conflict_id)
                .values(
                    local_value=conflict.local,
                    remote_value=conflict.remote,
                    remote_updated_at=conflict.remote_updated_at,
                    local_changed_at=conflict.local_changed_at,
                    resolved_at=resolved,
                )
            )
            continue
        conn.execute(
            sa.insert(sync_conflicts).values(
                contact_id=contact_id,
                field=conflict.field,
                base_value=conflict.base,
                local_value=conflict.local,
                remote_value=conflict.remote,
                local_changed_at=conflict.local_changed_at,
                remote_updated_at=conflict.remote_updated_at,
                detected_at=now,
                policy=conflict.policy,
                winner=conflict.winner,
                resolved_at=resolved,
            )
        )


# --- conflicts for people -------------------------------------------------------------------


def list_conflicts(conn: Connection, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    query = sa.select(sync_conflicts).order_by(sync_conflicts.c.id)
    if not include_resolved:
        query = query.where(sync_conflicts.c.resolved_at.is_(None))
    return [dict(row) for row in conn.execute(query).mappings()]


def set_winner(conn: Connection, conflict_id: int, winner: Winner) -> None:
    """Settle a waiting conflict; push applies it on its next run."""
    row = conn.execute(
        sa.select(sync_conflicts.c.resolved_at).where(sync_conflicts.c.id == conflict_id)
    ).first()
    if row is None:
        raise UsageError(f"no conflict with id {conflict_id}")
    if row.resolved_at is not None:
        raise UsageError(f"conflict {conflict_id} was already resolved at {row.resolved_at}")
    conn.execute(
        sa.update(sync_conflicts).where(sync_conflicts.c.id == conflict_id).values(winner=winner)
    )
