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
keeps the local value, which the next push sends.

The step is an optimisation of the tables' freshness: the writes were recorded before it began,
so no failure of it fails the push. A read or store that fails in any way (a transient error
after the client's retries, any other 4xx/5xx, a body that cannot be read, a PostgreSQL error)
ends the step: the contacts not stored keep the rows the writes' record made, one warning
(`push_read_back_failed`) says what failed and that the next pull brings them up to date, and the
push ends as it would have. Only what stops every amoCRM call keeps its meaning (`STOPS`: a
refused or revoked token, a blocked IP, an unpaid account, a stop signal, the push lock lost):
the run stops with its one line, the writes still recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.core.mapping import FieldDef, chat_rows, field_def, to_rows, unknown_fields
from sync.db.contacts import ContactStore
from sync.db.diag import error_line
from sync.errors import (
    AmoAuthError,
    AmoBlockedError,
    AmoPaymentError,
    AmoStoppedError,
    LockLostError,
    StoppedError,
)
from sync.logs import get_logger
from sync.pull.shape import stored_relations
from sync.push.context import Context, record_outcome
from sync.push.fresh import BY_ID_MAX
from sync.push.pool import ReadThenWrite
from sync.push.written import Write

log = get_logger("sync.push")
READ_CHUNK = 250  # contacts per read (amoCRM's page maximum)
# failures that stop the whole run, here as anywhere: every other one only ends the read-back
STOPS = (AmoAuthError, AmoBlockedError, AmoPaymentError, AmoStoppedError, LockLostError,
         StoppedError)  # fmt: skip


class Failed:
    """The read-back's first failure (the others are alike or follow from it), and how many
    written contacts were left unstored because of one; the threads add to it under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: str | None = None
        self.contacts = 0

    def note(self, exc: Exception | None, contacts: int) -> None:
        """`contacts` not stored because of `exc`, or (None) skipped after the failure."""
        with self._lock:
            if self.error is None and exc is not None:
                self.error = error_line(exc)
            self.contacts += contacts

    def warn(self, written: int) -> None:
        if self.error is not None:
            log.warning("push_read_back_failed", contacts=self.contacts, written=written,
                        error=self.error, reason="the push's writes are recorded; the next pull "
                        "brings these rows up to date")  # fmt: skip


def read_back(ctx: Context) -> None:
    """Read back and store every contact the run wrote (see the module docstring): the reads
    on `sync.push_workers` threads like the updates' (the rate budget sets the pace), each
    chunk stored as it comes. Raises only `STOPS`."""
    written = dict(ctx.written.writes)
    if not written:
        return
    failed = Failed()
    try:
        _read_back(ctx, written, failed)
    except STOPS:
        raise
    except Exception as exc:  # noqa: BLE001 - the writes are recorded: the pull catches up
        report = ctx.count.report
        untouched = len(written) - report.read_back - report.read_back_left
        failed.note(exc, untouched)
        ctx.count.add(read_back_left=untouched)
    failed.warn(len(written))
    lagged = ctx.count.report.read_back_left - failed.contacts
    if lagged > 0:
        log.info("push_read_back_lagging", contacts=lagged, reason="left to the next pull")


def _read_back(ctx: Context, written: dict[int, Write], failed: Failed) -> None:
    with ctx.engine.connect() as conn:
        known = Known(ctx.runs.load_fields(conn))
    ids = list(written)  # in the order written: the last writes get the most time to settle
    # a few contacts (the daemon's usual push) are read each by id, in parallel: a single read
    # does not lag the write as a list does, and one contact costs one request either way
    by_id = len(ids) <= BY_ID_MAX
    size = 1 if by_id else READ_CHUNK
    chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
    store = ContactStore(ctx.runs.schema)

    def left(exc: Exception | None, contacts: int) -> None:
        failed.note(exc, contacts)
        ctx.count.add(read_back_left=contacts)

    def read(chunk: list[int]) -> list[list[dict[str, Any]]]:
        if failed.error is not None:  # after one failure the rest is the next pull's too
            left(None, len(chunk))
            return []
        try:
            listed = _read(ctx, chunk, by_id=by_id)
        except STOPS:
            raise
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            left(exc, len(chunk))
            return []
        fresh = [c for cid, c in listed.items() if written[cid].shown_by(c)]
        ctx.count.add(read_back_left=len(chunk) - len(fresh))
        return [fresh] if fresh else []

    def write(items: list[dict[str, Any]]) -> None:
        try:
            _store(ctx, store, items, known)
        except STOPS:
            raise
        except Exception as exc:  # noqa: BLE001 - the definitions, chat links or the store
            left(exc, len(items))
            return
        ctx.count.add(read_back=len(items))

    ReadThenWrite(chunks, read, write).run(ctx.config.sync.push_workers)


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
