"""The few statements `amosync demo` runs as a user would (plain SQL edits, no sync origin)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.db.schema import contacts


def fetch_live_ids(conn: Connection, count: int) -> list[int]:
    """The first `count` live contacts (by id)."""
    query = sa.select(contacts.c.id).where(contacts.c.is_deleted.is_(False))
    return [int(i) for i in conn.scalars(query.order_by(contacts.c.id).limit(count))]


def rename_contact(conn: Connection, contact_id: int, name: str) -> None:
    """`UPDATE contacts SET name = … WHERE id = …` — captured by the triggers like any user edit."""
    conn.execute(contacts.update().where(contacts.c.id == contact_id).values(name=name))


def fetch_brief(conn: Connection, contact_id: int) -> dict[str, Any]:
    query = sa.select(contacts.c.id, contacts.c.name, contacts.c.sync_status).where(
        contacts.c.id == contact_id
    )
    row = conn.execute(query).mappings().one()
    return dict(row)


def count_contacts(conn: Connection) -> int:
    return int(conn.scalar(sa.select(sa.func.count()).select_from(contacts)) or 0)
