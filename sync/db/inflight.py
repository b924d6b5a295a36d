"""Creates and chat links: claiming them, the durable "in flight" record, and the id swap.

A POST that amoCRM applied but whose answer never reached us (or whose answer we got just
before being killed) must not be sent again blindly. So before a create or link batch is sent,
its payloads, the time and the newest amoCRM contact id below which nothing of it can be
(`floor`) are committed to `sync_state` under `push_in_flight`. A successful batch swaps the
temporary negative ids for amoCRM's ids and clears its entries in the same transaction. Whatever
is still in the record when push starts was sent by a run that died, or is a create amoCRM has
not confirmed yet: push reconciles it by reading amoCRM (see `sync.push.posts`) before sending
anything new, and never sends an item still in the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.core.models import WRITABLE_FIELDS, ChangeKind, ContactStatus
from sync.db.engine import sync_origin
from sync.db.runs import delete_state, read_state, write_state
from sync.db.schema import contact_chats, contacts, sync_changes
from sync.db.tombstones import EDIT_WAITING

IN_FLIGHT_KEY = "push_in_flight"


@dataclass(frozen=True)
class PendingCreate:
    """A contact inserted locally (temporary negative id) and its outbox rows."""

    temp_id: int
    change_ids: tuple[int, ...]
    values: Mapping[str, Any]  # the row's writable columns now (what is sent)


@dataclass(frozen=True)
class PendingLink:
    """A chat link inserted locally (temporary negative id) and its outbox rows."""

    temp_id: int
    contact_id: int
    chat_id: str
    change_ids: tuple[int, ...]


@dataclass(frozen=True)
class Done:
    """A temporary id amoCRM answered for: its real id and the outbox rows it consumes."""

    temp_id: int
    real_id: int
    change_ids: tuple[int, ...]


# --- claiming ------------------------------------------------------------------------------


def claim_creates(conn: Connection, *, include_errors: bool = False) -> list[PendingCreate]:
    """Locally inserted contacts waiting for push (not those in error), oldest first."""
    ids = sa.func.array_agg(sync_changes.c.id)
    query = (
        sa.select(contacts, ids.label("change_ids"))
        .join(sync_changes, sync_changes.c.contact_id == contacts.c.id)
        .where(contacts.c.id < 0)
        .where(sa.true() if include_errors else contacts.c.sync_status != ContactStatus.ERROR)
        .where(sync_changes.c.kind == ChangeKind.CREATE)
        .group_by(contacts.c.id)
        .order_by(contacts.c.id.desc())  # -1 was inserted first
    )
    out = []
    for row in conn.execute(query).mappings():
        values = {c: row[c] for c in WRITABLE_FIELDS if row[c] is not None}
        out.append(PendingCreate(row["id"], tuple(sorted(row["change_ids"])), values))
    return out


def drop_withdrawn_links(conn: Connection, now: datetime) -> None:
    """Forget the captures of chat links deleted locally before they were pushed: nothing to
    send (and nothing to count as waiting)."""
    sync_origin(conn)
    dropped = conn.scalars(
        sa.delete(sync_changes)
        .where(
            sync_changes.c.kind == ChangeKind.CHAT_LINK,
            ~sa.exists().where(contact_chats.c.id == sync_changes.c.chat_link_id),
        )
        .returning(sync_changes.c.contact_id)
    )
    settle_after_links(conn, set(dropped), now)


def claim_links(conn: Connection, now: datetime) -> list[PendingLink]:
    """Locally inserted chat links of contacts amoCRM knows (not those in error)."""
    drop_withdrawn_links(conn, now)
    ids = sa.func.array_agg(sync_changes.c.id)
    query = (
        sa.select(contact_chats, ids.label("change_ids"))
        .join(sync_changes, sync_changes.c.chat_link_id == contact_chats.c.id)
        .join(contacts, contacts.c.id == contact_chats.c.contact_id)
        .where(sync_changes.c.kind == ChangeKind.CHAT_LINK, contact_chats.c.id < 0)
        .where(contact_chats.c.contact_id > 0, contacts.c.sync_status != ContactStatus.ERROR)
        .group_by(contact_chats.c.id)
        .order_by(contact_chats.c.id.desc())
    )
    return [
        PendingLink(r["id"], r["contact_id"], r["chat_id"], tuple(sorted(r["change_ids"])))
        for r in conn.execute(query).mappings()
    ]


# --- the in-flight record ---------------------------------------------------------------------


def load_in_flight(conn: Connection) -> dict[str, Any]:
    return read_state(conn, IN_FLIGHT_KEY) or {}


def mark_sending(
    conn: Connection,
    kind: str,
    items: Mapping[int, Mapping[str, Any]],
    now: datetime,
    floor: int | None = None,
    *,
    changes: Mapping[int, Sequence[int]] | None = None,
) -> None:
    """Commit (in the caller's transaction) that these `kind` items are about to be sent.

    Items still in the record (creates amoCRM has not confirmed yet) stay: the floor is the
    lowest of theirs and this batch's, each item keeps its own send time (`sent`) and the outbox
    rows it carries (`changes`: an edit made while it waits is pushed after it, not lost)."""
    state = load_in_flight(conn)
    old = dict(state.get(kind) or {})
    kept = dict(old.get("items") or {})
    if kept and (old.get("floor") is None or floor is None):
        floor = None  # one of them has none (order[id] ignored, or a 204): by created_at
    elif kept:
        floor = min(int(old["floor"]), floor or 0)
    stamp = now.isoformat()
    state[kind] = {
        "sent_at": stamp,
        "floor": floor,
        "items": {**kept, **{str(temp): dict(payload) for temp, payload in items.items()}},
        "sent": {**_sent_times(old), **{str(temp): stamp for temp in items}},
        "changes": {
            **(old.get("changes") or {} if kept else {}),
            **{str(temp): list(ids) for temp, ids in (changes or {}).items()},
        },
        "claimed": list(old.get("claimed") or []) if kept else [],
    }
    _save(conn, state)


def forget_sent(
    conn: Connection, kind: str, temp_ids: Iterable[int], claimed: Iterable[int] = ()
) -> None:
    """Drop settled items from the record; while others stay, the amoCRM ids `claimed` by the
    settled ones are kept so that no later look-up takes them for a waiting item."""
    state = load_in_flight(conn)
    entry = dict(state.get(kind) or {})
    items = dict(entry.get("items") or {})
    sent = _sent_times(entry)
    carried = dict(entry.get("changes") or {})
    for temp in temp_ids:
        items.pop(str(temp), None)
        sent.pop(str(temp), None)
        carried.pop(str(temp), None)
    if items:
        taken = sorted({*map(int, entry.get("claimed") or []), *claimed})
        state[kind] = {**entry, "items": items, "sent": sent, "claimed": taken, "changes": carried}
    else:
        state.pop(kind, None)
    _save(conn, state)


def withdrawn(conn: Connection, temp_ids: Iterable[int]) -> list[int]:
    """Which of these in-flight creates a person withdrew: their rows are gone (a row with a
    temporary id may be deleted; its outbox rows go with it)."""
    wanted = sorted(set(temp_ids))
    if not wanted:
        return []
    there = set(conn.scalars(sa.select(contacts.c.id).where(contacts.c.id.in_(wanted))))
    return [t for t in wanted if t not in there]


def sent_at(entry: Mapping[str, Any], temp_id: int) -> datetime:
    """When the in-flight item `temp_id` of `entry` was (last) sent."""
    stamp = _sent_times(entry).get(str(temp_id)) or entry["sent_at"]
    return datetime.fromisoformat(str(stamp))


def carried_changes(entry: Mapping[str, Any], temp_id: int) -> tuple[int, ...] | None:
    """The outbox rows the in-flight item `temp_id` carried (None: a record without them)."""
    ids = (entry.get("changes") or {}).get(str(temp_id))
    return None if ids is None else tuple(int(i) for i in ids)


def _sent_times(entry: Mapping[str, Any]) -> dict[str, str]:
    """Each item's send time; a record written before times were kept per item has one."""
    sent = dict(entry.get("sent") or {})
    return {temp: sent.get(temp, entry.get("sent_at", "")) for temp in entry.get("items") or {}}


def _save(conn: Connection, state: Mapping[str, Any]) -> None:
    if state:
        write_state(conn, IN_FLIGHT_KEY, state)
    else:
        delete_state(conn, IN_FLIGHT_KEY)


# --- recording results ---------------------------------------------------------------------


def record_created(conn: Connection, done: Sequence[Done], now: datetime) -> None:
    """Give created contacts amoCRM's ids (cascading to every table) and consume their rows.

    Edits captured after the claim survive, now as `update` rows against the created contact.
    A pull that already stored the new contact under its real id (the answer was lost, the
    contact was pulled before we reconciled) loses that copy to the local row, which pull
    refreshes on its next run; unless a person deleted the local row meanwhile (withdrew the
    create): then the pulled copy stays.
    """
    if not done:
        return
    sync_origin(conn)
    for item in done:
        conn.execute(sa.delete(sync_changes).where(sync_changes.c.id.in_(item.change_ids)))
        row = contacts.alias("local_row")  # not correlated with the DELETE's own table
        local = sa.exists().where(row.c.id == item.temp_id)
        conn.execute(sa.delete(contacts).where(contacts.c.id == item.real_id, local))
        conn.execute(
            sa.update(contacts).where(contacts.c.id == item.temp_id).values(id=item.real_id)
        )
    real = [d.real_id for d in done]
    conn.execute(
        sa.update(sync_changes)
        .where(sync_changes.c.contact_id.in_(real), sync_changes.c.kind == ChangeKind.CREATE)
        .values(kind=ChangeKind.UPDATE)
    )
    _set_status_after_write(conn, real, now)


def record_linked(conn: Connection, done: Sequence[Done], now: datetime) -> None:
    """Give pushed chat links amoCRM's link ids, consume their rows and settle their contacts."""
    if not done:
        return
    sync_origin(conn)
    linked: set[int] = set()
    for item in done:
        linked.update(
            conn.scalars(
                sa.delete(sync_changes)
                .where(sync_changes.c.id.in_(item.change_ids))
                .returning(sync_changes.c.contact_id)
            )
        )
        conn.execute(sa.delete(contact_chats).where(contact_chats.c.id == item.real_id))
        conn.execute(
            sa.update(contact_chats)
            .where(contact_chats.c.id == item.temp_id)
            .values(id=item.real_id)
        )
    settle_after_links(conn, linked, now)


def settle_after_links(conn: Connection, ids: Iterable[int], now: datetime) -> None:
    """Contacts whose chat-link rows left the outbox (pushed or withdrawn): `pending` ones with
    no other rows left become `synced`. Nothing else would: a contact made `pending` with only a
    link to send (a pull found it again after push had left it "not found") stayed so for good.
    `error` and `conflict` are about other things and stay; other rows keep it `pending`. Rows
    older code left so are settled once by migration 0017, on the same rule.

    The rows are locked first, so the check below (a new snapshot) sees an edit captured
    meanwhile (the capture trigger holds the same row lock) and leaves that contact `pending`.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return
    pending = sa.and_(contacts.c.id.in_(wanted), contacts.c.sync_status == ContactStatus.PENDING)
    locked = list(conn.scalars(sa.select(contacts.c.id).where(pending).with_for_update()))
    if not locked:
        return
    conn.execute(
        sa.update(contacts)
        .where(contacts.c.id.in_(locked), contacts.c.sync_status == ContactStatus.PENDING)
        .where(~EDIT_WAITING)
        .values(sync_status=ContactStatus.SYNCED, sync_error=None, synced_at=now)
    )


def _set_status_after_write(conn: Connection, ids: list[int], now: datetime) -> None:
    conn.execute(  # a pending chat link does not make the contact itself pending
        sa.update(contacts)
        .where(contacts.c.id.in_(ids))
        .values(
            sync_status=sa.case((EDIT_WAITING, ContactStatus.PENDING), else_=ContactStatus.SYNCED),
            sync_error=None,
            synced_at=sa.case((EDIT_WAITING, contacts.c.synced_at), else_=now),
        )
    )


def mark_waiting(conn: Connection, temp_ids: Iterable[int], message: str) -> None:
    """New contacts sent but not confirmed yet: they stay `pending`, `sync_error` says why."""
    ids = list(temp_ids)
    if not ids:
        return
    sync_origin(conn)
    conn.execute(sa.update(contacts).where(contacts.c.id.in_(ids)).values(sync_error=message))


def mark_errors(conn: Connection, messages: Mapping[int, str]) -> None:
    """Contacts amoCRM rejected: `error` with its message; their edits stay in the outbox."""
    if not messages:
        return
    sync_origin(conn)
    for contact_id, message in messages.items():
        conn.execute(
            sa.update(contacts)
            .where(contacts.c.id == contact_id)
            .values(sync_status=ContactStatus.ERROR, sync_error=message)
        )
