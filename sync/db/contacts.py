"""Set-based writes of pulled contacts: one call stores a whole page, in the caller's transaction.

Every statement takes a page's rows as one JSON document (`jsonb_to_recordset`), so a page of 250
contacts with all its relations costs about fifteen statements, whatever its size.

What `store_page` does, in order (the caller commits it together with the cursor):
  1. locks the page's existing contact rows (`FOR UPDATE`, in id order: no deadlock with push),
     so a local edit either committed before (and is seen) or waits until this page commits;
  2. reads which writable fields have unpushed local changes: the keys of the contact's
     `sync_changes.new_values` while its `sync_status` is pending, conflict or error;
  3. upserts `contacts`: held-back fields keep the local value, every other column takes
     amoCRM's; a version older than the stored one is ignored (push may have written a newer
     one); an identical version changes nothing (echo suppression: no write, no status change);
  4. records amoCRM's writable values of held-back contacts in `contact_remote_values` (for
     push's conflict detection) and removes that row for contacts that are synced;
  5. replaces the relation rows of every contact whose version was taken, as a diff (rows that
     did not change are not touched). `contact_custom_field_values` follows the stored
     `contacts.custom_fields_values` (the local value while it is held back).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sync.mapping import JSON, FieldDef, PageRows, custom_value_rows, remote_values

# relation table → (columns with their types, the PageRows attribute holding its rows)
RELATIONS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "contact_custom_field_values": (
        (
            ("contact_id", "bigint"),
            ("field_id", "bigint"),
            ("position", "integer"),
            ("field_code", "text"),
            ("field_name", "text"),
            ("field_type", "text"),
            ("value", "text"),
            ("enum_id", "bigint"),
            ("enum_code", "text"),
        ),
        "custom_values",
    ),
    "contact_tags": (
        (("contact_id", "bigint"), ("tag_id", "bigint"), ("tag_name", "text")),
        "tags",
    ),
    "contact_leads": ((("contact_id", "bigint"), ("lead_id", "bigint")), "leads"),
    "contact_customers": ((("contact_id", "bigint"), ("customer_id", "bigint")), "customers"),
    "contact_companies": ((("contact_id", "bigint"), ("company_id", "bigint")), "companies"),
    "contact_catalog_elements": (
        (
            ("contact_id", "bigint"),
            ("catalog_id", "bigint"),
            ("element_id", "bigint"),
            ("quantity", "numeric"),
            ("metadata", "jsonb"),
        ),
        "catalog_elements",
    ),
}
CHAT_COLUMNS = (("id", "bigint"), ("contact_id", "bigint"), ("chat_id", "text"))
HELD_STATUSES = ("pending", "conflict", "error")


@dataclass
class PageResult:
    """What storing a page did."""

    upserted: int = 0  # contact rows inserted or changed
    stale: list[int] = field(default_factory=list)  # older than what is stored: ignored
    held: dict[int, list[str]] = field(default_factory=dict)  # id → fields kept local


def _dump(rows: Any) -> str:
    # orjson (UTF-8, compact): several times faster than the stdlib on a page's rows, which
    # matters because encoding holds the GIL that the fetching threads need
    return orjson.dumps(rows).decode()


def _recordset(columns: Sequence[tuple[str, str]], param: str = "rows") -> str:
    spec = ", ".join(f"{name} {kind}" for name, kind in columns)
    return f"jsonb_to_recordset(CAST(:{param} AS jsonb)) AS n({spec})"


class ContactStore:
    """The SQL of pull for one schema (a validated identifier)."""

    def __init__(self, schema: str) -> None:
        self.s = f'"{schema}"'

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
        result.stale = [
            r["id"] for r in rows.contacts if _older(r.get("updated_at"), stored.get(r["id"]))
        ]
        result.held, local_cfv = self._held(conn, rows.ids)
        stale = set(result.stale)
        taken = [r for r in rows.contacts if r["id"] not in stale]
        written = self._upsert(conn, taken, result.held)
        result.upserted = len(written)
        self._remote_values(conn, taken, result.held)
        ids = [r["id"] for r in taken]
        # Contacts this statement inserted cannot have relation rows yet (a parallel writer that
        # inserted the same contact first makes ours an update): only the others are diffed.
        inserted = {cid for cid, new in written if new}
        known = [i for i in ids if i not in inserted]
        rows = _with_local_values(rows, local_cfv, fields, set(ids))
        wanted = set(ids)  # a stale version's relations are not stored either
        for table, (columns, attr) in RELATIONS.items():
            if attr in with_relations:
                mine = [r for r in getattr(rows, attr) if r["contact_id"] in wanted]
                self._replace(conn, table, columns, known, mine)
        if chats is not None:
            linked = wanted if chat_ids is None else wanted & set(chat_ids)
            mine = [c for c in chats if c["contact_id"] in linked]
            self._replace_chats(conn, [i for i in ids if i in linked], mine)
        return result

    def stored_versions(self, conn: Connection, ids: Sequence[int]) -> dict[int, int]:
        """id → stored `updated_at` (unix seconds) of these contacts, where stored and live."""
        sql = (
            f"SELECT id, extract(epoch FROM updated_at)::bigint FROM {self.s}.contacts "
            "WHERE id = ANY(:ids) AND updated_at IS NOT NULL AND NOT is_deleted"
        )
        return {int(row[0]): int(row[1]) for row in conn.execute(sa.text(sql), {"ids": list(ids)})}

    def _lock(self, conn: Connection, ids: list[int]) -> dict[int, int | None]:
        sql = (
            f"SELECT id, extract(epoch FROM updated_at)::bigint FROM {self.s}.contacts "
            "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
        )
        return {row[0]: row[1] for row in conn.execute(sa.text(sql), {"ids": ids})}

    def _held(
        self, conn: Connection, ids: list[int]
    ) -> tuple[dict[int, list[str]], dict[int, Any]]:
        sql = f"""
            SELECT c.id, array_agg(DISTINCT k.key ORDER BY k.key), c.custom_fields_values
            FROM {self.s}.contacts c
            JOIN {self.s}.sync_changes s ON s.contact_id = c.id AND s.kind = 'update'
            CROSS JOIN LATERAL jsonb_object_keys(coalesce(s.new_values, '{{}}')) AS k(key)
            WHERE c.id = ANY(:ids) AND c.sync_status = ANY(:statuses)
            GROUP BY c.id"""
        held: dict[int, list[str]] = {}
        local_cfv: dict[int, Any] = {}
        for cid, keys, cfv in conn.execute(
            sa.text(sql), {"ids": ids, "statuses": list(HELD_STATUSES)}
        ):
            held[cid] = list(keys)
            if "custom_fields_values" in keys:
                local_cfv[cid] = cfv
        return held, local_cfv

    def _upsert(
        self, conn: Connection, rows: list[JSON], held: dict[int, list[str]]
    ) -> list[tuple[int, bool]]:
        """Returns (id, inserted?) of every row written; unchanged and stale rows are absent."""
        payload = [{**r, "held": held.get(r["id"], [])} for r in rows]
        result = conn.execute(sa.text(_UPSERT.format(s=self.s)), {"rows": _dump(payload)})
        return [(int(cid), bool(new)) for cid, new in result]

    def _remote_values(
        self, conn: Connection, rows: list[JSON], held: dict[int, list[str]]
    ) -> None:
        keep = [
            {"id": r["id"], "updated_at": r["updated_at"], "remote": remote_values(r)}
            for r in rows
            if r["id"] in held
        ]
        if keep:
            conn.execute(sa.text(_REMOTE_UPSERT.format(s=self.s)), {"rows": _dump(keep)})
        drop = [r["id"] for r in rows if r["id"] not in held]
        if drop:
            sql = f"DELETE FROM {self.s}.contact_remote_values WHERE contact_id = ANY(:ids)"
            conn.execute(sa.text(sql), {"ids": drop})

    def _replace(
        self,
        conn: Connection,
        table: str,
        columns: Sequence[tuple[str, str]],
        ids: list[int],
        rows: list[JSON],
    ) -> None:
        """Make the table's rows exactly `rows`, touching only what differs: rows of the stored
        contacts `ids` that are not in `rows` go, rows not there yet come."""
        payload = _dump(rows)
        if ids:
            # the contact_id equality lets the planner hash the anti-join; with the null-safe
            # comparisons alone it compares every row with every row of the page
            same = " AND ".join(
                f"n.{c} = t.{c}" if c == "contact_id" else f"n.{c} IS NOT DISTINCT FROM t.{c}"
                for c, _ in columns
            )
            delete = f"""
                WITH n AS MATERIALIZED (SELECT * FROM {_recordset(columns)})
                DELETE FROM {self.s}.{table} t WHERE t.contact_id = ANY(:ids)
                AND NOT EXISTS (SELECT 1 FROM n WHERE {same})"""
            known = set(ids)
            mine = [r for r in rows if r["contact_id"] in known]
            # usually every row is a stored contact's (a resync): encode the page once
            stored = payload if len(mine) == len(rows) else _dump(mine)
            conn.execute(sa.text(delete), {"rows": stored, "ids": ids})
        if rows:
            names = ", ".join(c for c, _ in columns)
            # rows of contacts just inserted cannot conflict: skip speculative insertion then
            conflict = " ON CONFLICT DO NOTHING" if ids else ""
            insert = f"""
                INSERT INTO {self.s}.{table} ({names})
                SELECT {names} FROM {_recordset(columns)}{conflict}"""
            conn.execute(sa.text(insert), {"rows": payload})

    def _replace_chats(self, conn: Connection, ids: list[int], rows: list[JSON]) -> None:
        """Chat links amoCRM has (positive ids); a local link still waiting for push (negative
        id) stays, and an amoCRM link for the same chat is not added beside it."""
        if not ids:
            return
        delete = f"""
            WITH n AS MATERIALIZED (SELECT * FROM {_recordset(CHAT_COLUMNS)})
            DELETE FROM {self.s}.contact_chats t WHERE t.id > 0
            AND (t.contact_id = ANY(:ids) OR t.chat_id IN (SELECT chat_id FROM n)
                 OR t.id IN (SELECT id FROM n))
            AND NOT EXISTS (SELECT 1 FROM n WHERE n.id = t.id AND n.contact_id = t.contact_id
                            AND n.chat_id = t.chat_id)"""
        conn.execute(sa.text(delete), {"rows": _dump(rows), "ids": ids})
        if rows:
            insert = f"""
                INSERT INTO {self.s}.contact_chats (id, contact_id, chat_id)
                SELECT id, contact_id, chat_id FROM {_recordset(CHAT_COLUMNS)}
                ON CONFLICT DO NOTHING"""
            conn.execute(sa.text(insert), {"rows": _dump(rows)})

    # --- deletions -------------------------------------------------------------------------

    def mark_deleted(self, conn: Connection, deleted: Mapping[int, int]) -> int:
        """Tombstone contacts (id → unix time of the deletion); returns how many changed."""
        if not deleted:
            return 0
        sql = f"""
            UPDATE {self.s}.contacts c SET is_deleted = true, deleted_at = to_timestamp(n.at)
            FROM {_recordset((("id", "bigint"), ("at", "bigint")))}
            WHERE c.id = n.id AND NOT c.is_deleted RETURNING c.id"""
        rows = [{"id": k, "at": v} for k, v in deleted.items()]
        return len(conn.execute(sa.text(sql), {"rows": _dump(rows)}).all())

    def mark_restored(self, conn: Connection, ids: Sequence[int]) -> int:
        """Undo tombstones of contacts amoCRM restored; returns how many changed."""
        if not ids:
            return 0
        sql = f"""
            UPDATE {self.s}.contacts SET is_deleted = false, deleted_at = NULL
            WHERE id = ANY(:ids) AND is_deleted RETURNING id"""
        return len(conn.execute(sa.text(sql), {"ids": list(ids)}).all())

    def deleted_ids(self, conn: Connection, ids: Sequence[int]) -> set[int]:
        """Which of `ids` are stored as deleted, or not stored at all."""
        sql = f"SELECT id FROM {self.s}.contacts WHERE id = ANY(:ids) AND NOT is_deleted"
        alive = set(conn.scalars(sa.text(sql), {"ids": list(ids)}))
        return set(ids) - alive

    # --- full resync bookkeeping -------------------------------------------------------------

    def mark_seen(self, conn: Connection, run_id: int, ids: Sequence[int]) -> None:
        sql = f"""
            INSERT INTO {self.s}.sync_full_seen (run_id, contact_id)
            SELECT :run, unnest(CAST(:ids AS bigint[])) ON CONFLICT DO NOTHING"""
        conn.execute(sa.text(sql), {"run": run_id, "ids": list(ids)})

    def unseen(self, conn: Connection, run_id: int) -> list[int]:
        """Live stored contacts the full resync `run_id` did not see in amoCRM."""
        sql = f"""
            SELECT c.id FROM {self.s}.contacts c WHERE c.id > 0 AND NOT c.is_deleted
            AND NOT EXISTS (SELECT 1 FROM {self.s}.sync_full_seen s
                            WHERE s.run_id = :run AND s.contact_id = c.id)
            ORDER BY c.id"""
        return list(conn.scalars(sa.text(sql), {"run": run_id}))

    def live_count(self, conn: Connection) -> int:
        sql = f"SELECT count(*) FROM {self.s}.contacts WHERE id > 0 AND NOT is_deleted"
        return int(conn.scalar(sa.text(sql)) or 0)

    def forget_seen(self, conn: Connection, run_id: int | None = None) -> None:
        """Drop a run's seen list (None: every run's, e.g. left by a killed process)."""
        if run_id is None:
            conn.execute(sa.text(f"TRUNCATE {self.s}.sync_full_seen"))
        else:
            sql = f"DELETE FROM {self.s}.sync_full_seen WHERE run_id = :run"
            conn.execute(sa.text(sql), {"run": run_id})


def _older(incoming: int | None, stored: int | None) -> bool:
    return incoming is not None and stored is not None and incoming < stored


def _with_local_values(
    rows: PageRows, local_cfv: Mapping[int, Any], fields: Mapping[int, FieldDef], ids: set[int]
) -> PageRows:
    """Custom field value rows follow the stored jsonb: the local one where it is held back."""
    if not local_cfv:
        return rows
    values = [v for v in rows.custom_values if v["contact_id"] not in local_cfv]
    for cid, cfv in local_cfv.items():
        if cid in ids:
            values += custom_value_rows(cid, cfv if isinstance(cfv, list) else None, fields)
    return PageRows(
        rows.contacts, values, rows.tags, rows.leads, rows.customers, rows.companies,
        rows.catalog_elements,
    )  # fmt: skip


_SOURCE_COLUMNS = """
    id bigint, name text, first_name text, last_name text, responsible_user_id bigint,
    group_id bigint, created_by bigint, updated_by bigint, created_at bigint, updated_at bigint,
    closest_task_at bigint, account_id bigint, custom_fields_values jsonb, held jsonb"""

_UPSERT = (
    """
WITH n AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS n("""
    + _SOURCE_COLUMNS
    + """)),
m AS (
    SELECT n.id,
        CASE WHEN n.held ? 'name' THEN c.name ELSE n.name END AS name,
        CASE WHEN n.held ? 'first_name' THEN c.first_name ELSE n.first_name END AS first_name,
        CASE WHEN n.held ? 'last_name' THEN c.last_name ELSE n.last_name END AS last_name,
        CASE WHEN n.held ? 'responsible_user_id' THEN c.responsible_user_id
             ELSE n.responsible_user_id END AS responsible_user_id,
        n.group_id, n.created_by, n.updated_by,
        to_timestamp(n.created_at) AS created_at, to_timestamp(n.updated_at) AS updated_at,
        to_timestamp(n.closest_task_at) AS closest_task_at, n.account_id,
        CASE WHEN n.held ? 'custom_fields_values' THEN c.custom_fields_values
             ELSE n.custom_fields_values END AS custom_fields_values
    FROM n LEFT JOIN {s}.contacts c ON c.id = n.id
)
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
RETURNING t.id, (t.xmax = 0) AS inserted"""
)

_REMOTE_UPSERT = """
INSERT INTO {s}.contact_remote_values AS t (contact_id, remote_values, remote_updated_at, pulled_at)
SELECT n.id, n.remote, to_timestamp(n.updated_at), now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS n(id bigint, updated_at bigint, remote jsonb)
ON CONFLICT (contact_id) DO UPDATE SET
    remote_values = EXCLUDED.remote_values, remote_updated_at = EXCLUDED.remote_updated_at,
    pulled_at = EXCLUDED.pulled_at
WHERE EXCLUDED.remote_updated_at >= t.remote_updated_at"""
