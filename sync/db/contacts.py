"""Set-based writes of pulled contacts: one call stores a whole page, in the caller's transaction.

A page's rows reach PostgreSQL by `COPY` into session-private staging tables (`sync.db.staging`),
one per target table, and go from there in set-based statements: about a dozen per 250-contact
page whatever its content.

What `store_page` does, in order (the caller commits it together with the cursor):
  1. locks the page's existing contact rows (`FOR UPDATE`, in id order: no deadlock with push),
     so a local edit either committed before (and is seen) or waits until this page commits;
  2. reads which writable fields have unpushed local changes: the keys of the contact's
     `sync_changes.new_values` while its `sync_status` is pending, conflict or error (none can
     have them when none of the page's contacts was stored yet: the query is skipped);
  3. upserts `contacts`: held-back fields keep the local value, every other column takes
     amoCRM's; a version older than the stored one is ignored (push may have written a newer
     one); an identical version changes nothing (echo suppression: no write, no status change);
  4. replaces the relation rows of every contact whose version was taken, as a diff (rows that
     did not change are not touched). `contact_custom_field_values` follows the stored
     `contacts.custom_fields_values` (the local value while it is held back). A page whose
     contacts were all inserted by step 3 has no relation rows to diff: they are inserted.

amoCRM's values of held-back fields are not kept (until migration 0007 they went to
`contact_remote_values`, which nothing read): push reads amoCRM's current version itself,
right before it merges (docs/push.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
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
)
from sync.core.models import WRITABLE_FIELDS
from sync.db import staging
from sync.db.tombstones import Tombstones, dump_rows, id_array, recordset

CHAT_COLUMNS = (("id", "bigint"), ("contact_id", "bigint"), ("chat_id", "text"))
HELD_STATUSES = ("pending", "conflict", "error")
HELD_SQL = "(" + ", ".join(f"'{status}'" for status in HELD_STATUSES) + ")"


@dataclass
class PageResult:
    """What storing a page did."""

    upserted: int = 0  # contact rows inserted or changed
    stale: list[int] = field(default_factory=list)  # older than what is stored: ignored
    held: dict[int, list[str]] = field(default_factory=dict)  # id → fields kept local


class ContactStore(Tombstones):
    """The SQL of pull for one schema (a validated identifier): the page store here, deletions
    and the full resync's seen list inherited from `Tombstones`."""

    def store_page(
        self,
        conn: Connection,
        rows: PageRows,
        fields: Mapping[int, FieldDef],
        *,
        with_relations: Sequence[str],
        chats: list[JSON] | None,
        chat_ids: Sequence[int] | None = None,
    ) -> PageResult:
        """Store a page of contacts (see the module docstring). `chats` None = not fetched;
        else the chat links of the contacts `chat_ids` (default: all of the page) are replaced."""
        result = PageResult()
        if not rows.contacts:
            return result
        stored = self._lock(conn, rows.ids)
        result.stale = [r[0] for r in rows.contacts if _older(r[UPDATED_AT], stored.get(r[0]))]
        local_cfv: dict[int, Any] = {}
        if stored:  # a contact not stored yet has no local changes to hold back
            result.held, local_cfv = self._held(conn, rows.ids)
        stale = set(result.stale)
        taken = [r for r in rows.contacts if r[0] not in stale]
        conn.execute(self._text("stage", staging.PREPARE))
        result.upserted, inserted = self._upsert(conn, taken, result.held)
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

    def stored_versions(self, conn: Connection, ids: Sequence[int]) -> dict[int, int]:
        """id → stored `updated_at` (unix seconds) of these contacts, where stored and live."""
        sql = (
            f"SELECT id, extract(epoch FROM updated_at)::bigint FROM {self.s}.contacts "
            "WHERE id = ANY(CAST(:ids AS bigint[])) AND updated_at IS NOT NULL AND NOT is_deleted"
        )
        return {
            int(row[0]): int(row[1]) for row in conn.execute(sa.text(sql), {"ids": id_array(ids)})
        }

    def _lock(self, conn: Connection, ids: list[int]) -> dict[int, int | None]:
        # one row of two lists, not a row per contact: 250 result rows cost more in the driver
        # and SQLAlchemy than the statement costs PostgreSQL
        sql = f"""
            WITH locked AS (
                SELECT id, extract(epoch FROM updated_at)::bigint AS at FROM {self.s}.contacts
                WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE
            )
            SELECT string_agg(id::text, ','), string_agg(coalesce(at::text, ''), ',')
            FROM locked"""
        found, stamps = conn.execute(self._text("lock", sql), {"ids": id_array(ids)}).one()
        if found is None:
            return {}
        return {
            int(cid): int(at) if at else None
            for cid, at in zip(found.split(","), stamps.split(","), strict=True)
        }

    def _held(
        self, conn: Connection, ids: list[int]
    ) -> tuple[dict[int, list[str]], dict[int, Any]]:
        sql = f"""
            SELECT c.id, array_agg(DISTINCT k.key ORDER BY k.key), c.custom_fields_values
            FROM {self.s}.contacts c
            JOIN {self.s}.sync_changes s ON s.contact_id = c.id AND s.kind = 'update'
            CROSS JOIN LATERAL jsonb_object_keys(coalesce(s.new_values, '{{}}')) AS k(key)
            WHERE c.id = ANY(CAST(:ids AS bigint[])) AND c.sync_status IN {HELD_SQL}
            GROUP BY c.id"""
        held: dict[int, list[str]] = {}
        local_cfv: dict[int, Any] = {}
        for cid, keys, cfv in conn.execute(self._text("held", sql), {"ids": id_array(ids)}):
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
        sql = self._text("upsert", _UPSERT.format(s=self.s))
        written, inserted = conn.execute(sql, {"held": id_array(held)}).one()
        return int(written), set(map(int, inserted.split(","))) if inserted else set()

    def _replace(self, conn: Connection, relations: dict[str, list[Row]], ids: list[int]) -> None:
        """Make each table's rows exactly the given ones, touching only what differs: rows of
        the stored contacts `ids` that are not given go, given rows not there yet come. One
        statement deletes from every table and one inserts into every table (data-modifying
        CTEs): two round trips a page instead of two a table. The deletes go first, so a row
        that changed (same key, other values) is gone before its new version comes."""
        filled = []
        for table, given in relations.items():
            rows = given
            if table == "contact_catalog_elements":
                rows = [(*r[:4], _json(r[4])) for r in given]  # metadata: jsonb
            staging.copy_rows(conn, table, staging.RELATIONS[table][0], rows)
            if rows:
                filled.append(table)
        if ids and relations:
            tables = tuple(relations)
            sql = self._text(f"diff {tables}", self._every(tables, self._diff_sql))
            conn.execute(sql, {"ids": id_array(ids)})
        if filled:
            # rows of contacts just inserted cannot conflict: skip speculative insertion then
            tables, conflict = tuple(filled), bool(ids)
            insert = partial(self._insert_sql, conflict=conflict)
            sql = self._text(f"insert {tables} {conflict}", self._every(tables, insert))
            conn.execute(sql)

    @staticmethod
    def _every(tables: Sequence[str], statement: Callable[[str], str]) -> str:
        """One statement running `statement(table)` for every table (as CTEs; a single one
        plainly)."""
        if len(tables) == 1:
            return statement(tables[0])
        ctes = ",\n".join(f"w{i} AS ({statement(t)})" for i, t in enumerate(tables))
        return f"WITH {ctes}\nSELECT 1"

    def _insert_sql(self, table: str, *, conflict: bool) -> str:
        names = ", ".join(c for c, _ in staging.RELATIONS[table][0])
        clause = " ON CONFLICT DO NOTHING" if conflict else ""
        return f"""
            INSERT INTO {self.s}.{table} ({names})
            SELECT {names} FROM {staging.stage_name(table)}{clause}"""

    def _diff_sql(self, table: str) -> str:
        # Each known contact's stored rows are read by one index probe (`OFFSET 0` keeps the
        # planner from flattening the lateral subquery into a join): with `contact_id =
        # ANY(…)` and no statistics yet (a first resync outruns autovacuum's ANALYZE) it chose
        # to scan the whole table on every page.
        names = [c for c, _ in staging.RELATIONS[table][0]]
        # The rows to delete are collected first (an InitPlan) and deleted by their ctids (a TID
        # scan): joined back to the table instead, the planner hashed a scan of all of it.
        return f"""
            DELETE FROM {self.s}.{table} WHERE ctid = ANY(ARRAY(
                SELECT t.tid FROM unnest(CAST(:ids AS bigint[])) AS k(id)
                CROSS JOIN LATERAL (
                    SELECT s.ctid AS tid, s.* FROM {self.s}.{table} s
                    WHERE s.contact_id = k.id OFFSET 0
                ) t
                WHERE NOT EXISTS (SELECT 1 FROM {staging.stage_name(table)} n WHERE {_same(names)})
            ))"""

    def _replace_chats(self, conn: Connection, ids: list[int], rows: list[JSON]) -> None:
        """Chat links amoCRM has (positive ids); a local link still waiting for push (negative
        id) stays, and an amoCRM link for the same chat is not added beside it."""
        if not ids:
            return
        # the three ways a stored link can be affected, each by its own index (with OR, or
        # `contact_id = ANY(…)` before the table has statistics, the planner scans the whole
        # table on every page)
        delete = f"""
            WITH n AS MATERIALIZED (SELECT * FROM {recordset(CHAT_COLUMNS)}),
            old AS (
                SELECT t.id FROM unnest(CAST(:ids AS bigint[])) AS k(id) CROSS JOIN LATERAL (
                    SELECT s.id FROM {self.s}.contact_chats s WHERE s.contact_id = k.id OFFSET 0
                ) t
                UNION SELECT t.id FROM n JOIN {self.s}.contact_chats t ON t.chat_id = n.chat_id
                UNION SELECT t.id FROM n JOIN {self.s}.contact_chats t ON t.id = n.id
            )
            DELETE FROM {self.s}.contact_chats t USING old WHERE t.id = old.id AND t.id > 0
            AND NOT EXISTS (SELECT 1 FROM n WHERE n.id = t.id AND n.contact_id = t.contact_id
                            AND n.chat_id = t.chat_id)"""
        conn.execute(
            self._text("chats delete", delete), {"rows": dump_rows(rows), "ids": id_array(ids)}
        )
        if rows:
            insert = f"""
                INSERT INTO {self.s}.contact_chats (id, contact_id, chat_id)
                SELECT id, contact_id, chat_id FROM {recordset(CHAT_COLUMNS)}
                ON CONFLICT DO NOTHING"""
            conn.execute(self._text("chats insert", insert), {"rows": dump_rows(rows)})


def _same(names: Sequence[str]) -> str:
    """Staged row n is stored row t. The contact_id equality lets the planner hash the
    anti-join; with the null-safe comparisons alone it compares every row with every row."""
    return " AND ".join(
        f"n.{c} = t.{c}" if c == "contact_id" else f"n.{c} IS NOT DISTINCT FROM t.{c}"
        for c in names
    )


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


_UPSERT = (
    """
WITH m AS (
    SELECT n.id,
        CASE WHEN 'name' = ANY(n.held) THEN c.name ELSE n.name END AS name,
        CASE WHEN 'first_name' = ANY(n.held) THEN c.first_name ELSE n.first_name END AS first_name,
        CASE WHEN 'last_name' = ANY(n.held) THEN c.last_name ELSE n.last_name END AS last_name,
        CASE WHEN 'responsible_user_id' = ANY(n.held) THEN c.responsible_user_id
             ELSE n.responsible_user_id END AS responsible_user_id,
        n.group_id, n.created_by, n.updated_by,
        to_timestamp(n.created_at) AS created_at, to_timestamp(n.updated_at) AS updated_at,
        to_timestamp(n.closest_task_at) AS closest_task_at, n.account_id,
        CASE WHEN 'custom_fields_values' = ANY(n.held) THEN c.custom_fields_values
             ELSE n.custom_fields_values END AS custom_fields_values
    FROM """
    + staging.stage_name("contacts")
    + """ n
    -- only held-back contacts need their stored values: probing just those by id keeps the
    -- planner from hashing the whole table (the staging table has no statistics)
    LEFT JOIN {s}.contacts c ON c.id = n.id AND c.id = ANY(CAST(:held AS bigint[]))
),
written AS (
INSERT INTO {s}.contacts AS t (id, name, first_name, last_name, responsible_user_id, group_id,
    created_by, updated_by, created_at, updated_at, closest_task_at, account_id,
    custom_fields_values, is_deleted, deleted_at, sync_status, synced_at)
SELECT id, name, first_name, last_name, responsible_user_id, group_id, created_by, updated_by,
    created_at, updated_at, closest_task_at, account_id, custom_fields_values,
    false, NULL, 'synced', now()
FROM m
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
    responsible_user_id = EXCLUDED.responsible_user_id, group_id = EXCLUDED.group_id,
    created_by = EXCLUDED.created_by, updated_by = EXCLUDED.updated_by,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    closest_task_at = EXCLUDED.closest_task_at, account_id = EXCLUDED.account_id,
    custom_fields_values = EXCLUDED.custom_fields_values,
    is_deleted = false, deleted_at = NULL,
    synced_at = CASE WHEN t.sync_status = 'synced' THEN now() ELSE t.synced_at END
WHERE (t.updated_at IS NULL OR EXCLUDED.updated_at IS NULL OR EXCLUDED.updated_at >= t.updated_at)
  AND (t.name, t.first_name, t.last_name, t.responsible_user_id, t.group_id, t.created_by,
       t.updated_by, t.created_at, t.updated_at, t.closest_task_at, t.account_id,
       t.custom_fields_values, t.is_deleted)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.responsible_user_id,
       EXCLUDED.group_id, EXCLUDED.created_by, EXCLUDED.updated_by, EXCLUDED.created_at,
       EXCLUDED.updated_at, EXCLUDED.closest_task_at, EXCLUDED.account_id,
       EXCLUDED.custom_fields_values, false)
RETURNING t.id, (t.xmax = 0) AS inserted
)
SELECT count(*), string_agg(id::text, ',') FILTER (WHERE inserted) FROM written"""
)
