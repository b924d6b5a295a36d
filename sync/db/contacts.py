"""Set-based writes of pulled contacts: one call stores a whole page, in the caller's transaction.

A page's rows reach PostgreSQL by `COPY` into session-private staging tables (`sync.db.staging`),
one per target table, and go from there in set-based statements: about a dozen per 250-contact
page whatever its content. The statements are SQLAlchemy Core (`sync.db.page_sql`), run with
the store's schema like every other statement of `sync.db` (`Tombstones._run`).

What `store_page` does, in order (the caller commits it together with the cursor):
  1. locks the page's existing contact rows (`FOR UPDATE`, in id order: no deadlock with push),
     so a local edit either committed before (and is seen) or waits until this page commits;
  2. reads which writable fields have unpushed local changes: the keys of the contact's
     `sync_changes.new_values` while its `sync_status` is pending, conflict or error (none can
     have them when none of the page's contacts was stored yet: the query is skipped);
  3. upserts `contacts`: held-back fields keep the local value, every other column takes
     amoCRM's; a version older than the stored one is ignored (push may have written a newer
     one); an identical version changes nothing (echo suppression: no write, no status change);
     then the page's rows push left "not found" (`sync.db.tombstones.LOST`) go back to
     `pending`, rewritten or not: amoCRM answering with the contact shows it is there, and the
     edit held for it is sent again (`page_sql.FOUND`; a row stored as deleted stays as it is;
     one with no edit held, only chat links or nothing, is `synced`); a row in `error` whose
     edit is held, stored at a newer version, goes back to `pending`: push merges the edit
     against amoCRM's change under the policy (`page_sql.RETRY_REJECTED`);
  4. replaces the relation rows of every contact whose version was taken, as a diff (rows that
     did not change are not touched). `contact_custom_field_values` follows the stored
     `contacts.custom_fields_values` (the local value while it is held back). A page whose
     contacts were all inserted by step 3 has no relation rows to diff: they are inserted.

amoCRM's values of held-back fields are not kept (until migration 0007 they went to
`contact_remote_values`, which nothing read): push reads amoCRM's current version itself,
right before it merges (docs/push.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.core.mapping import (
    JSON,
    UPDATED_AT,
    FieldDef,
    PageRows,
    Row,
    custom_value_rows,
    to_rows,
)
from sync.core.models import WRITABLE_FIELDS
from sync.db import page_sql, staging
from sync.db.engine import sync_origin
from sync.db.schema import (
    contact_catalog_elements,
    contact_chats,
    contact_customers,
    contact_leads,
)
from sync.db.tombstones import Tombstones, id_array

PREPARE = sa.text(staging.PREPARE)  # a DO block: Core has no construct for it
PREPARE_ASYNC = sa.text(staging.PREPARE_ASYNC)
# a transaction id makes COMMIT write a record, and a synchronous COMMIT waits until the WAL is
# flushed up to it: every transaction committed before it is then on disk too
FLUSH = sa.select(sa.func.pg_current_xact_id())
# the tables a pull fills only when `sync.with` / `sync.chats` ask (`empty_relations`)
OPTIONAL_TABLES = {
    t.name: t for t in (contact_leads, contact_customers, contact_catalog_elements, contact_chats)
}


@dataclass
class PageResult:
    """What storing a page did."""

    upserted: int = 0  # contact rows inserted or changed
    # contacts stored at a version (`updated_at`) this database did not have: new to us, so a
    # change some hook should have announced. Not the rows refreshed at a version already
    # stored (after our own PATCH amoCRM reports `updated_by` = the API user, which the push
    # does not know; the pull's next read writes it, at the same version)
    new_versions: int = 0
    stale: list[int] = field(default_factory=list)  # older than what is stored: ignored
    held: dict[int, list[str]] = field(default_factory=dict)  # id → fields kept local


class ContactStore(Tombstones):
    """The SQL of pull for one schema (a validated identifier): the page store here, deletions
    and the full resync's seen list inherited from `Tombstones`."""

    def prepare(self, conn: Connection, *, async_commit: bool = False) -> None:
        """Ready the caller's transaction for `store_page(..., prepared=True)` in one round
        trip: marked as the sync's own (`sync.db.engine.sync_origin`), JIT off, staging tables
        there and empty (`sync.db.staging`); `async_commit`: its COMMIT returns before the WAL
        is flushed (only where `sync.pull.sink.Sink.drain` explains why that is safe)."""
        conn.execute(PREPARE_ASYNC if async_commit else PREPARE)

    def flush_commits(self, conn: Connection) -> None:
        """Wait until every transaction committed so far is on disk: a transaction of its own
        on `conn` (which must not be in one) that commits synchronously."""
        with conn.begin():
            conn.execute(FLUSH)

    def store_page(
        self,
        conn: Connection,
        rows: PageRows,
        fields: Mapping[int, FieldDef],
        *,
        with_relations: Sequence[str],
        chats: list[JSON] | None,
        chat_ids: Sequence[int] | None = None,
        prepared: bool = False,
    ) -> PageResult:
        """Store a page of contacts (see the module docstring). `chats` None = not fetched;
        else the chat links of the contacts `chat_ids` (default: all of the page) are replaced.
        `prepared`: the caller ran `staging.PREPARE` in this transaction already (it marks the
        transaction as the sync's own, so a caller that needs that first runs it first)."""
        result = PageResult()
        if not rows.contacts:
            return result
        if not prepared:
            self.prepare(conn)
        stored, lost = self._lock(conn, rows.ids)
        result.stale = [r[0] for r in rows.contacts if _older(r[UPDATED_AT], stored.get(r[0]))]
        local_cfv: dict[int, Any] = {}
        if stored:  # a contact not stored yet has no local changes to hold back
            result.held, local_cfv = self._held(conn, rows.ids)
        stale = set(result.stale)
        taken = [r for r in rows.contacts if r[0] not in stale]
        result.new_versions = sum(1 for r in taken if r[UPDATED_AT] != stored.get(r[0]))
        result.upserted, inserted = self._upsert(conn, taken, result.held)
        if lost:  # rare: only rows push marked "not found" (no round trip otherwise)
            self._run(conn, page_sql.FOUND, {"ids": id_array(lost)})
        # held edits whose contact amoCRM changed since (rare: a round trip only then); only
        # rows in `error` change (`page_sql.RETRY_REJECTED`)
        overtaken = [
            r[0] for r in taken if r[0] in result.held and _older(stored[r[0]], r[UPDATED_AT])
        ]
        if overtaken:
            self._run(conn, page_sql.RETRY_REJECTED, {"ids": id_array(overtaken)})
        ids = [r[0] for r in taken]
        # Contacts this statement inserted cannot have relation rows yet (a parallel writer that
        # inserted the same contact first makes ours an update): only the others are diffed.
        known = [i for i in ids if i not in inserted]
        rows = _with_local_values(rows, local_cfv, fields, set(ids))
        wanted = set(ids)  # a stale version's relations are not stored either
        relations: dict[str, list[Row]] = {}
        for table, (_, attr) in staging.RELATIONS.items():
            if attr in with_relations:
                mine: list[Row] = getattr(rows, attr)
                relations[table] = [r for r in mine if r[0] in wanted] if stale else mine
        self._replace(conn, relations, known)
        if chats is not None:
            linked = wanted if chat_ids is None else wanted & set(chat_ids)
            links = [c for c in chats if c["contact_id"] in linked]
            self._replace_chats(conn, [i for i in ids if i in linked], links)
        return result

    def store_read_back(
        self, conn: Connection, item: Mapping[str, Any], fields: Mapping[int, FieldDef]
    ) -> bool:
        """Store one contact push read by id because a pull overtook its write (a newer version
        stored with the columns push was settling held back: `sync.push.overtaken`), as a page
        of one: those columns take amoCRM's values, and `contact_custom_field_values` follows;
        a column edited again meanwhile stays held. Only at the version stored, whose other
        columns and relation rows that pull stored (a read without `with=` has not all of
        them): False, nothing written, when another version is stored; a newer one is the next
        pull's (it is newer than that pull's cursor)."""
        rows = to_rows([item], fields, ())
        stored, _ = self._lock(conn, rows.ids)
        if not rows.contacts or stored.get(rows.ids[0]) != rows.contacts[0][UPDATED_AT]:
            return False
        self.store_page(conn, rows, fields, with_relations=("custom_values",), chats=None)
        return True

    def empty_relations(self, conn: Connection, tables: Sequence[str]) -> dict[str, int]:
        """Delete every row of these pull-filled tables (`contact_leads`, …, `contact_chats`) in
        the caller's transaction, as the sync's own write; a chat link not pushed yet (a local
        one: negative id) is kept. Returns the rows deleted per table."""
        sync_origin(conn)
        deleted = {}
        for name in tables:
            table = OPTIONAL_TABLES[name]
            statement = sa.delete(table).returning(table.c.contact_id)
            if name == "contact_chats":
                statement = statement.where(table.c.id > 0)
            gone = statement.cte("gone")
            count = sa.select(sa.func.count()).select_from(gone)
            deleted[name] = int(self._run(conn, count).scalar() or 0)
        return deleted

    def any_chat_link(self, conn: Connection) -> bool:
        """Whether `contact_chats` holds a link (the account shows chats)."""
        return bool(self._run(conn, sa.select(sa.exists().select_from(contact_chats))).scalar())

    def stored_versions(self, conn: Connection, ids: Sequence[int]) -> dict[int, int]:
        """id → stored `updated_at` (unix seconds) of these contacts, where stored and live."""
        found = self._run(conn, page_sql.STORED_VERSIONS, {"ids": id_array(ids)})
        return {int(row[0]): int(row[1]) for row in found}

    def _lock(self, conn: Connection, ids: list[int]) -> tuple[dict[int, int | None], list[int]]:
        """The stored versions of the page's contacts (locked), and which are "not found"."""
        found, stamps, lost = self._run(conn, page_sql.LOCK, {"ids": id_array(ids)}).one()
        if found is None:
            return {}, []
        stored = {
            int(cid): int(at) if at else None
            for cid, at in zip(found.split(","), stamps.split(","), strict=True)
        }
        return stored, [int(cid) for cid in lost.split(",")] if lost else []

    def _held(
        self, conn: Connection, ids: list[int]
    ) -> tuple[dict[int, list[str]], dict[int, Any]]:
        held: dict[int, list[str]] = {}
        local_cfv: dict[int, Any] = {}
        for cid, keys, cfv in self._run(conn, page_sql.HELD, {"ids": id_array(ids)}):
            held[cid] = list(keys)
            if "custom_fields_values" in keys:
                local_cfv[cid] = cfv
        return held, local_cfv

    def _upsert(
        self, conn: Connection, rows: list[Row], held: dict[int, list[str]]
    ) -> tuple[int, set[int]]:
        """Returns how many rows were written (unchanged and stale ones are not) and the ids of
        those inserted."""
        staged = [_contact_tuple(r, held) for r in rows]
        staging.copy_rows(conn, "contacts", staging.CONTACT_COLUMNS, staged, binary=True)
        written, inserted = self._run(conn, page_sql.UPSERT, {"held": id_array(held)}).one()
        return int(written), set(map(int, inserted.split(","))) if inserted else set()

    def _replace(self, conn: Connection, relations: dict[str, list[Row]], ids: list[int]) -> None:
        """Make each table's rows exactly the given ones, touching only what differs: rows of
        the stored contacts `ids` that are not given go, given rows not there yet come. One
        statement deletes from every table and one inserts into every table (data-modifying
        CTEs): two round trips a page instead of two a table. The deletes go first, so a row
        that changed (same key, other values) is gone before its new version comes."""
        filled, refs = [], []
        for table, given in relations.items():
            if table in staging.REF_KINDS:  # one staging table for these (`staging.REFS`)
                refs += staging.ref_rows(table, given)
            elif table == "contact_catalog_elements":
                rows = [(*r[:4], _json(r[4])) for r in given]  # metadata: jsonb
                staging.copy_rows(conn, table, staging.RELATIONS[table][0], rows)
            else:
                staging.copy_rows(conn, table, staging.RELATIONS[table][0], given)
            if given:
                filled.append(table)
        staging.copy_rows(conn, staging.REFS, staging.REF_COLUMNS, refs)
        if ids and relations:
            self._run(conn, page_sql.every_diff(tuple(relations)), {"ids": id_array(ids)})
        if filled:
            # rows of contacts just inserted cannot conflict: skip speculative insertion then
            self._run(conn, page_sql.every_insert(tuple(filled), bool(ids)))

    def _replace_chats(self, conn: Connection, ids: list[int], rows: list[JSON]) -> None:
        """Chat links amoCRM has (positive ids); a local link still waiting for push (negative
        id) stays, and an amoCRM link for the same chat is not added beside it."""
        if not ids:
            return
        links = orjson.dumps(rows).decode()
        self._run(conn, page_sql.CHATS_DELETE, {"rows": links, "ids": id_array(ids)})
        if rows:
            self._run(conn, page_sql.CHATS_INSERT, {"rows": links})


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _contact_tuple(row: Row, held: Mapping[int, list[str]]) -> Row:
    """A contact row as staged: the mapped columns and the held-back fields' names."""
    keys = held.get(row[0])
    # only the writable fields' names can be held (the SQL knows no others)
    return (*row, [k for k in keys if k in WRITABLE_FIELDS] if keys else None)


def _older(incoming: Any, stored: int | None) -> bool:
    return type(incoming) is int and stored is not None and incoming < stored


def _with_local_values(
    rows: PageRows, local_cfv: Mapping[int, Any], fields: Mapping[int, FieldDef], ids: set[int]
) -> PageRows:
    """Custom field value rows follow the stored jsonb: the local one where it is held back."""
    if not local_cfv:
        return rows
    values = [v for v in rows.custom_values if v[0] not in local_cfv]
    for cid, cfv in local_cfv.items():
        if cid in ids:
            values += custom_value_rows(cid, cfv if isinstance(cfv, list) else None, fields)
    return PageRows(
        rows.contacts, values, rows.tags, rows.leads, rows.customers, rows.companies,
        rows.catalog_elements,
    )  # fmt: skip
