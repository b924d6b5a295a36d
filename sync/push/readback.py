"""The last step of a push run: the contacts it wrote, read back and stored as a pull stores them.

A PATCH or POST answer carries ids and `updated_at`, not the contact. Until this step the rows
push recorded held the shape the user wrote (`field_code`, no `enum_id`, `[]`), and a created
contact had no `created_at`, `created_by`, `account_id`…, while already `synced`; only the next
pull made them amoCRM's. Now every contact the run wrote is read back (`GET
/api/v4/contacts?filter[id][]=…&with=…`, 250 a request, the pull's `with`), with its chat links
where a pull would read them (a version not stored yet: a created contact), and stored through
the pull's own page store (`ContactStore.store_page`), so the columns, the jsonb and the relation
tables are exactly what a pull gives.

A push of at most `fresh.BY_ID_MAX` contacts (the daemon's usual one) reads each by id
(`GET /api/v4/contacts/{id}`, in parallel), which does not lag the write: one contact costs one
request either way. amoCRM's lists lag its writes by about a second, so a list read may still
show the version before ours, or not list a new contact yet. Only a version at least as new as
the write's answer is
stored; the rest is left to the next pull (nothing is marked, `push_read_back_lagging` counts
them). The page store keeps its own guarantees: a version older than the stored one is ignored,
and a column with an edit captured meanwhile (its contact `pending`, in `conflict` or `error`)
keeps the local value, which the next push sends. A read that fails transiently leaves the rows
as the writes' record made them (`push_read_back_failed`): the push itself went through.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.core.mapping import FieldDef, chat_rows, field_def, to_rows, unknown_fields
from sync.db.contacts import ContactStore
from sync.errors import AmoTransientError
from sync.logs import get_logger
from sync.pull.shape import stored_relations
from sync.push.context import Context, record_outcome
from sync.push.fresh import BY_ID_MAX
from sync.push.pool import ReadThenWrite

log = get_logger("sync.push")
READ_CHUNK = 250  # contacts per read (amoCRM's page maximum)


def read_back(ctx: Context) -> None:
    """Read back and store every contact the run wrote (see the module docstring): the reads
    on `sync.push_workers` threads like the updates' (the rate budget sets the pace), each
    chunk stored as it comes."""
    written = dict(ctx.written.writes)
    if not written:
        return
    with ctx.engine.connect() as conn:
        known = Known(ctx.runs.load_fields(conn))
    ids = list(written)  # in the order written: the last writes get the most time to settle
    # a few contacts (the daemon's usual push) are read each by id, in parallel: a single read
    # does not lag the write as a list does, and one contact costs one request either way
    by_id = len(ids) <= BY_ID_MAX
    size = 1 if by_id else READ_CHUNK
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    store = ContactStore(ctx.runs.schema)

    def read(chunk: list[int]) -> list[list[dict[str, Any]]]:
        try:
            listed = _read(ctx, chunk, by_id=by_id)
        except AmoTransientError as exc:
            log.warning("push_read_back_failed", contacts=len(chunk), error=str(exc))
            ctx.count.add(read_back_left=len(chunk))
            return []
        fresh = [c for cid, c in listed.items() if written[cid].shown_by(c)]
        ctx.count.add(read_back_left=len(chunk) - len(fresh))
        return [fresh] if fresh else []

    def write(items: list[dict[str, Any]]) -> None:
        try:
            _store(ctx, store, items, known)
        except AmoTransientError as exc:  # the definitions or chat links it needed
            log.warning("push_read_back_failed", contacts=len(items), error=str(exc))
            ctx.count.add(read_back_left=len(items))
            return
        ctx.count.add(read_back=len(items))

    ReadThenWrite(chunks, read, write).run(ctx.config.sync.push_workers)
    if ctx.count.report.read_back_left:
        log.info("push_read_back_lagging", contacts=ctx.count.report.read_back_left,
                 reason="left to the next pull")  # fmt: skip


def _read(ctx: Context, ids: list[int], *, by_id: bool) -> dict[int, dict[str, Any]]:
    """amoCRM's versions of `ids` by contact id: one list read, or each contact by id."""
    with_ = ctx.config.sync.with_
    if not by_id:
        return ctx.client.fetch_contacts_by_ids(ids, with_=with_)
    found = {cid: ctx.client.fetch_contact(cid, with_=with_) for cid in ids}
    return {cid: contact for cid, contact in found.items() if contact is not None}


class Known:
    """The custom field definitions the stores use, read again (once at a time) when a contact
    names a field or option they do not know, as the pull does."""

    def __init__(self, fields: dict[int, FieldDef]) -> None:
        self.fields = fields
        self.lock = threading.Lock()

    def for_items(
        self, ctx: Context, items: list[dict[str, Any]]
    ) -> tuple[dict[int, FieldDef], list[dict[str, Any]] | None]:
        """The definitions to store `items` with, and amoCRM's list when read now (saved with
        the page, as the pull's sink does)."""
        with self.lock:
            if not unknown_fields(items, self.fields):
                return self.fields, None
            raw = [f for page in ctx.client.iter_custom_fields() for f in page.items]
            self.fields = {f.id: f for f in map(field_def, raw)}
            return self.fields, raw


def _store(ctx: Context, store: ContactStore, items: list[dict[str, Any]], known: Known) -> None:
    """Store the contacts as a pull stores a page. Chat links are read, as by an incremental
    pull, for versions not stored yet (a created contact)."""
    fields, new_fields = known.for_items(ctx, items)
    chats: list[dict[str, Any]] | None = None
    chat_ids: list[int] = []
    if ctx.config.sync.chats:
        chat_ids = _new_versions(ctx, store, items)
        if chat_ids:
            pages = ctx.client.iter_chats(contact_ids=chat_ids)
            chats = chat_rows([link for page in pages for link in page.items])
    rows = to_rows(items, fields, ctx.config.sync.with_)
    relations = stored_relations(ctx.config)

    def write(conn: Connection) -> None:
        store.prepare(conn)
        if new_fields is not None:
            ctx.runs.save_fields(conn, new_fields)
        store.store_page(conn, rows, fields, with_relations=relations, chats=chats,
                         chat_ids=chat_ids, prepared=True)  # fmt: skip

    record_outcome(ctx, write)


def _new_versions(
    ctx: Context, store: ContactStore, items: Sequence[Mapping[str, Any]]
) -> list[int]:
    ids = [int(c["id"]) for c in items]
    with ctx.engine.connect() as conn:
        known = store.stored_versions(conn, ids)
    return [int(c["id"]) for c in items if known.get(int(c["id"])) != c.get("updated_at")]
