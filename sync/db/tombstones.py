"""Deletions and a full resync's bookkeeping of pulled contacts, the base of `ContactStore`
(`sync.db.contacts`): tombstones set and undone, which ids are stored as deleted, the ids a
running full resync saw in amoCRM (`sync_full_seen`) and the live ones it did not. Also what
both use: ids sent as one array literal, and statements run on the store's schema.

Statements are SQLAlchemy Core on the schema-less tables of `sync.db.schema`, built once at
import (SQLAlchemy caches their compiled form: a page pays for executing them, not for building
or compiling them) and run with the store's schema through `schema_translate_map`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from sync.core.models import NOT_FOUND, ChangeKind, ContactStatus
from sync.db.schema import contacts, sync_changes, sync_full_seen


def id_array(ids: Iterable[int]) -> str:
    """Ids as a PostgreSQL array literal, for `IDS`: the driver sends one string, where a list
    parameter costs it about a millisecond of Python per 250 ids."""
    return "{" + ",".join(map(str, ids)) + "}"


def int_array(name: str) -> sa.Cast[Any]:
    """`CAST(:name AS BIGINT[])`: the parameter is `id_array`'s literal."""
    return sa.cast(sa.bindparam(name, type_=sa.Text), ARRAY(sa.BigInteger))


IDS = int_array("ids")
_c = contacts.c

_DELETED = sa.func.unnest(IDS, int_array("ats")).table_valued("id", "at").render_derived("n")
MARK_DELETED = (
    sa.update(contacts)
    .values(is_deleted=True, deleted_at=sa.func.to_timestamp(_DELETED.c.at))
    .where(_c.id == _DELETED.c.id, sa.not_(_c.is_deleted))
    .returning(_c.id)
)
# an edit push held back because amoCRM had deleted the contact goes back to `pending`: its
# outbox rows were kept, and the next push merges them with the restored contact. One held back
# with nothing but chat links to send (or nothing left at all: its links were withdrawn) is
# `synced`: a pending link does not make the contact pending, and nothing would ever have moved
# it off `pending` (the link step only settles contacts it consumes rows of).
LOST = sa.and_(_c.sync_status == ContactStatus.ERROR, _c.sync_error == NOT_FOUND)
# A field edit of the contact waits in the outbox: a pending chat link does not make the contact
# itself pending (push's status after a write uses the same test). For an UPDATE of `contacts`
# only: SQLAlchemy does not correlate this into an INSERT's DO UPDATE.
EDIT_WAITING = sa.exists().where(
    sync_changes.c.contact_id == _c.id, sync_changes.c.kind != ChangeKind.CHAT_LINK
)
_NOTHING_HELD = sa.and_(LOST, ~EDIT_WAITING)
FOUND_AGAIN = {
    "sync_status": sa.case(
        (_NOTHING_HELD, sa.literal(ContactStatus.SYNCED.value)),
        (LOST, sa.literal(ContactStatus.PENDING.value)),
        else_=_c.sync_status,
    ),
    "sync_error": sa.case((LOST, sa.null()), else_=_c.sync_error),
    "synced_at": sa.case((_NOTHING_HELD, sa.func.now()), else_=_c.synced_at),
}
MARK_RESTORED = (
    sa.update(contacts)
    .values(is_deleted=False, deleted_at=None, **FOUND_AGAIN)
    .where(_c.id == sa.any_(IDS), _c.is_deleted)
    .returning(_c.id)
)
# live and not left "not found" by push
SETTLED = sa.select(_c.id).where(_c.id == sa.any_(IDS), sa.not_(_c.is_deleted), sa.not_(LOST))
_LIVE = (_c.id > 0, sa.not_(_c.is_deleted))
LIVE_COUNT = sa.select(sa.func.count()).select_from(contacts).where(*_LIVE)
_SEEN_IDS = sa.select(sa.bindparam("run", type_=sa.BigInteger), sa.func.unnest(IDS))
MARK_SEEN = (
    insert(sync_full_seen).from_select(["run_id", "contact_id"], _SEEN_IDS).on_conflict_do_nothing()
)
_s = sync_full_seen.c
UNSEEN = (
    sa.select(_c.id)
    .where(*_LIVE)
    .where(
        ~sa.exists().where(_s.run_id == sa.bindparam("run"), _s.contact_id == _c.id),
    )
    .order_by(_c.id)
)
FORGET_RUN = sa.delete(sync_full_seen).where(_s.run_id == sa.bindparam("run"))


class Tombstones:
    """Deletions and the seen list for one schema (a validated identifier)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._options = {"schema_translate_map": {None: schema}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(schema={self.schema!r})"

    def _run(
        self, conn: Connection, statement: Executable, params: Any = None
    ) -> sa.Result[*tuple[Any, ...]]:
        return conn.execute(statement, params, execution_options=self._options)

    # --- deletions -------------------------------------------------------------------------

    def mark_deleted(self, conn: Connection, deleted: Mapping[int, int]) -> int:
        """Tombstone contacts (id → unix time of the deletion); returns how many changed."""
        if not deleted:
            return 0
        params = {"ids": id_array(deleted), "ats": id_array(deleted.values())}
        return len(self._run(conn, MARK_DELETED, params).all())

    def mark_restored(self, conn: Connection, ids: Sequence[int]) -> int:
        """Undo tombstones of contacts amoCRM restored; returns how many changed."""
        if not ids:
            return 0
        return len(self._run(conn, MARK_RESTORED, {"ids": id_array(ids)}).all())

    def unsettled_ids(self, conn: Connection, ids: Sequence[int]) -> set[int]:
        """Which of `ids` are stored as deleted, not stored at all, or left "not found" by push
        (a restore that did not change `updated_at` is listed by no incremental pull)."""
        settled = set(self._run(conn, SETTLED, {"ids": id_array(ids)}).scalars())
        return set(ids) - settled

    # --- full resync bookkeeping -------------------------------------------------------------

    def mark_seen(self, conn: Connection, run_id: int, ids: Sequence[int]) -> None:
        self._run(conn, MARK_SEEN, {"run": run_id, "ids": id_array(ids)})

    def unseen(self, conn: Connection, run_id: int) -> list[int]:
        """Live stored contacts the full resync `run_id` did not see in amoCRM."""
        return list(self._run(conn, UNSEEN, {"run": run_id}).scalars())

    def live_count(self, conn: Connection) -> int:
        return int(self._run(conn, LIVE_COUNT).scalar() or 0)

    def forget_seen(self, conn: Connection, run_id: int | None = None) -> None:
        """Drop a run's seen list (None: every run's, e.g. left by a killed process)."""
        if run_id is None:
            # TRUNCATE: Core has no construct for it; the schema is the store's identifier
            conn.execute(sa.text(f'TRUNCATE "{self.schema}".sync_full_seen'))
        else:
            self._run(conn, FORGET_RUN, {"run": run_id})
