"""The statements of pull's page store (`sync.db.contacts.ContactStore.store_page`), as
SQLAlchemy Core on the schema-less tables of `sync.db.schema` and the staging tables of
`sync.db.staging`. Built once: the store runs them with its schema's `schema_translate_map`, and
SQLAlchemy compiles each shape once per schema (its compiled cache), so a page pays for
executing a dozen statements, not for building or compiling them.

The planner hints are deliberate (see each statement): a first resync outruns autovacuum's
ANALYZE, and without statistics PostgreSQL hashed whole tables on every page.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, aggregate_order_by, insert
from sqlalchemy.sql import Executable

from sync.core.models import NOT_FOUND, ContactStatus
from sync.db import staging
from sync.db.schema import contact_chats, contacts, sync_changes
from sync.db.tombstones import EDIT_WAITING, FOUND_AGAIN, IDS, LOST, int_array

HELD_STATUSES = ("pending", "conflict", "error")
OFFSET_0: sa.ColumnClause[Any] = sa.literal_column(
    "0"
)  # a fence the planner does not flatten, written as it is
_c = contacts.c

STORED_VERSIONS = sa.select(
    _c.id, sa.cast(sa.extract("epoch", _c.updated_at), sa.BigInteger)
).where(_c.id == sa.any_(IDS), _c.updated_at.is_not(None), sa.not_(_c.is_deleted))

# The page's stored contacts locked in id order (no deadlock with push), answered as one row of
# three lists, not a row per contact: 250 result rows cost more in the driver and SQLAlchemy than
# the statement costs PostgreSQL. The third names the rows push left "not found" (`LOST`): amoCRM
# listing them shows they are there, whether or not the upsert rewrites them (`FOUND`).
_locked = (
    sa.select(
        _c.id,
        sa.cast(sa.extract("epoch", _c.updated_at), sa.BigInteger).label("at"),
        LOST.label("lost"),
    )
    .where(_c.id == sa.any_(IDS))
    .order_by(_c.id)
    .with_for_update()
    .cte("locked")
)
LOCK = sa.select(
    sa.func.string_agg(sa.cast(_locked.c.id, sa.Text), ","),
    sa.func.string_agg(sa.func.coalesce(sa.cast(_locked.c.at, sa.Text), ""), ","),
    sa.func.string_agg(sa.cast(_locked.c.id, sa.Text), ",").filter(_locked.c.lost),
).select_from(_locked)
# Rows left "not found" that amoCRM has just listed or answered by id go back to `pending`
# (their held edit is sent again; `synced` when only chat links or nothing wait: `FOUND_AGAIN`)
# even when the page changes nothing in them: a contact push was briefly told amoCRM did not
# have, or one restored at the version stored, is listed unchanged, and the upsert (which writes
# only new versions) would leave it in `error` for good. A row the tables show deleted stays as
# it is: only a version the upsert takes undoes a tombstone. The upsert leaves these rows' status
# to this statement, run right after it on the rows `LOCK` found "not found" (still locked).
FOUND = (
    sa.update(contacts)
    .values(**FOUND_AGAIN)
    .where(_c.id == sa.any_(IDS), LOST, sa.not_(_c.is_deleted))
    .returning(_c.id)
)

# Rows in `error` (amoCRM rejected their edit; not "not found", `FOUND` has those) that the page
# stored at a newer version: amoCRM's contact changed after the rejection. The held edit goes
# back to `pending`, and push merges it against that version under the configured policy (a
# field changed on both sides is a conflict), so the rejected value never stands silently beside
# a newer one of amoCRM's. A field only the local side changed is sent again; rejected again,
# the row is `error` once more, and stays so until amoCRM's contact or the row changes again.
RETRY_REJECTED = (
    sa.update(contacts)
    .values(sync_status=ContactStatus.PENDING.value, sync_error=None)
    .where(
        _c.id == sa.any_(IDS),
        _c.sync_status == ContactStatus.ERROR,
        _c.sync_error.is_distinct_from(NOT_FOUND),
        sa.not_(_c.is_deleted),
        EDIT_WAITING,
    )
)

# The writable fields with unpushed local changes: the keys of `sync_changes.new_values` while
# the contact is pending, conflict or error.
_s = sync_changes.c
_HELD_STATUSES: list[sa.ColumnClause[Any]] = [
    sa.literal_column(f"'{status}'") for status in HELD_STATUSES
]
_keys = (
    sa.func.jsonb_object_keys(
        sa.func.coalesce(_s.new_values, sa.cast(sa.literal_column("'{}'"), JSONB))
    )
    .table_valued("key")
    .render_derived("k")
)
HELD = (
    sa.select(
        _c.id,
        sa.func.array_agg(aggregate_order_by(sa.distinct(_keys.c.key), _keys.c.key)),
        _c.custom_fields_values,
    )
    .select_from(
        contacts.join(sync_changes, sa.and_(_s.contact_id == _c.id, _s.kind == "update")).join(
            _keys, sa.true()
        )
    )
    .where(_c.id == sa.any_(IDS), _c.sync_status.in_(_HELD_STATUSES))
    .group_by(_c.id)
)


def _upsert() -> Executable:
    """Staged contacts into `contacts`: held-back fields keep the stored value, a version older
    than the stored one or identical to it writes nothing; answers (rows written, ids inserted
    as "1,2,3")."""
    n = staging.stage_table("contacts").c
    old = contacts.alias("c")

    def pick(name: str) -> sa.ColumnElement[Any]:
        held = sa.literal_column(f"'{name}'") == sa.any_(n.held)
        return sa.case((held, old.c[name]), else_=n[name]).label(name)

    times = [sa.func.to_timestamp(n[t]).label(t) for t in ("created_at", "updated_at")]
    # only held-back contacts need their stored values: probing just those by id keeps the
    # planner from hashing the whole table (the staging table has no statistics)
    probe = sa.and_(old.c.id == n.id, old.c.id == sa.any_(int_array("held")))
    columns = [
        n.id, pick("name"), pick("first_name"), pick("last_name"), pick("responsible_user_id"),
        n.group_id, n.created_by, n.updated_by, *times,
        sa.func.to_timestamp(n.closest_task_at).label("closest_task_at"), n.account_id,
        pick("custom_fields_values"),
    ]  # fmt: skip
    merged = (
        sa.select(*columns)
        .select_from(staging.stage_table("contacts").outerjoin(old, probe))
        .cte("m")
    )
    copied = [c.name for c in merged.c]
    rows = sa.select(*merged.c, sa.false(), sa.null(), sa.literal_column("'synced'"), sa.func.now())
    statement = insert(contacts).from_select(
        [*copied, "is_deleted", "deleted_at", "sync_status", "synced_at"], rows
    )
    new = statement.excluded
    compared = [*copied[1:], "is_deleted"]
    synced = sa.case((_c.sync_status == "synced", sa.func.now()), else_=_c.synced_at)
    newer = sa.or_(
        _c.updated_at.is_(None), new.updated_at.is_(None), new.updated_at >= _c.updated_at
    )
    changed = sa.tuple_(*(_c[k] for k in compared)).is_distinct_from(
        sa.tuple_(*(new[k] if k != "is_deleted" else sa.false() for k in compared))
    )
    written = (
        statement.on_conflict_do_update(
            index_elements=[_c.id],
            set_={
                **{k: new[k] for k in copied[1:]},
                "is_deleted": sa.false(),
                "deleted_at": None,
                "synced_at": synced,  # a row left "not found": `FOUND`, right after
            },
            where=sa.and_(newer, changed),
        )
        .returning(_c.id, (sa.literal_column("xmax") == sa.literal_column("0")).label("inserted"))
        .cte("written")
    )
    inserted = sa.func.string_agg(sa.cast(written.c.id, sa.Text), ",").filter(written.c.inserted)
    return sa.select(sa.func.count(), inserted).select_from(written)


UPSERT = _upsert()


def _same(stage: Any, stored: Any, names: Sequence[str]) -> sa.ColumnElement[bool]:
    """Staged row is stored row. The contact_id equality lets the planner hash the anti-join;
    with the null-safe comparisons alone it compares every row with every row."""
    return sa.and_(
        *(
            stage[c] == stored[c] if c == "contact_id" else stage[c].is_not_distinct_from(stored[c])
            for c in names
        )
    )


def _diff(table: str) -> sa.Delete:
    """Delete the stored rows of the contacts `:ids` that are not staged. Each contact's rows
    are read by one index probe (`OFFSET 0` keeps the planner from flattening the lateral
    subquery into a join: with `contact_id = ANY(…)` and no statistics it scanned the whole
    table on every page); the rows are collected first (an InitPlan) and deleted by their ctids
    (a TID scan): joined back to the table instead, the planner hashed a scan of all of it."""
    target = _table(table)
    names = [c for c, _ in staging.RELATIONS[table][0]]
    keys = sa.func.unnest(IDS).table_valued("id").render_derived("k")
    s = target.alias("s")
    rows = (
        sa.select(sa.literal_column("s.ctid").label("tid"), *s.c)
        .where(s.c.contact_id == keys.c.id)
        .offset(OFFSET_0)
        .lateral("t")
    )
    stage = staging.stage_table(table).alias("n")
    kept = sa.exists().where(_same(stage.c, rows.c, names))
    gone = sa.select(rows.c.tid).select_from(keys.join(rows, sa.true())).where(~kept)
    return sa.delete(target).where(
        sa.literal_column("ctid") == sa.any_(sa.func.array(gone.scalar_subquery()))
    )


def _insert(table: str, *, conflict: bool) -> sa.Insert:
    """Staged rows into the table (rows of contacts just inserted cannot conflict: then no
    speculative insertion)."""
    names = [c for c, _ in staging.RELATIONS[table][0]]
    stage = staging.stage_table(table)
    statement = insert(_table(table)).from_select(names, sa.select(*stage.c))
    return statement.on_conflict_do_nothing() if conflict else statement


@cache
def every_diff(tables: tuple[str, ...]) -> Executable:
    """One statement deleting from every table (data-modifying CTEs): one round trip a page
    instead of one a table."""
    return _every([_diff(t) for t in tables])


@cache
def every_insert(tables: tuple[str, ...], conflict: bool) -> Executable:
    return _every([_insert(t, conflict=conflict) for t in tables])


def _every(statements: list[Any]) -> Executable:
    if len(statements) == 1:
        return statements[0]  # type: ignore[no-any-return]
    query: sa.Select[Any] = sa.select(sa.literal_column("1"))
    return query.add_cte(*(s.cte(f"w{i}") for i, s in enumerate(statements)))


def _table(name: str) -> sa.Table:
    return contacts.metadata.tables[name]


# Chat links amoCRM has (positive ids) replace the stored ones of the contacts `:ids`; a local
# link still waiting for push (negative id) stays, and an amoCRM link for the same chat is not
# added beside it. The three ways a stored link can be affected are each found by its own index
# (with OR, or `contact_id = ANY(…)` before the table has statistics, the planner scans the
# whole table on every page).
_chat_columns = [sa.column(n, t) for n, t in (("id", sa.BigInteger), ("contact_id", sa.BigInteger),
                                               ("chat_id", sa.Text))]  # fmt: skip


def _links() -> Any:
    rows = sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), JSONB))
    return rows.table_valued(*_chat_columns).render_derived("n", with_types=True)


def _chats_delete() -> sa.Delete:
    given = sa.select(_links()).cte("n").prefix_with("MATERIALIZED")
    t, keys = contact_chats.alias("t"), sa.func.unnest(IDS).table_valued("id").render_derived("k")
    s = contact_chats.alias("s")
    by_contact = sa.select(s.c.id).where(s.c.contact_id == keys.c.id).offset(OFFSET_0).lateral("l")
    old = sa.union(
        sa.select(by_contact.c.id).select_from(keys.join(by_contact, sa.true())),
        sa.select(t.c.id).join_from(given, t, t.c.chat_id == given.c.chat_id),
        sa.select(t.c.id).join_from(given, t, t.c.id == given.c.id),
    ).cte("old")
    c = contact_chats.c
    same = sa.and_(given.c.id == c.id, given.c.contact_id == c.contact_id,
                   given.c.chat_id == c.chat_id)  # fmt: skip
    return sa.delete(contact_chats).where(c.id == old.c.id, c.id > 0, ~sa.exists().where(same))


CHATS_DELETE = _chats_delete()
CHATS_INSERT = (
    insert(contact_chats)
    .from_select(["id", "contact_id", "chat_id"], sa.select(_links()))
    .on_conflict_do_nothing()
)
