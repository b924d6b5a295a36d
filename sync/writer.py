"""Storing pulled pages: one transaction per page with its relations, the cursor and the seen list.

`PageWriter.store(batch)` is what both walks of `sync.pull` call, from one thread (incremental:
pages in order, each with its cursor) or from several (full resync: no cursor per page). Before the
transaction it refreshes the custom field definitions when a page uses an unknown field or enum (at
most `MAX_FIELD_REFRESHES` times a run) and fetches the page's chat links unless they were fetched
ahead (`ChatLinks`: which contacts' links were read, and the links; an incremental walk reads them
only for versions not stored yet, `fetch_new_chats`). A page that hits a deadlock or serialization
failure is retried (upserts are idempotent). The cursor only moves forward.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from sync.amo.client import AmoClient
from sync.config import Config
from sync.db.contacts import ContactStore, PageResult
from sync.db.engine import sync_origin
from sync.db.runs import CONTACTS_CURSOR, RunStore
from sync.logs import get_logger
from sync.mapping import FieldDef, PageRows, chat_rows, field_def, to_rows, unknown_fields
from sync.scan import Batch

log = get_logger("sync.writer")

MAX_FIELD_REFRESHES = 3
RETRIED_SQLSTATES = ("40P01", "40001")  # deadlock, serialization failure
ATTEMPTS = 3


class Progress(Protocol):
    """Where a run reports progress (the CLI draws a bar)."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass(frozen=True)
class ChatLinks:
    """The chat links amoCRM listed for the contacts `ids` (only theirs are replaced)."""

    ids: list[int]
    rows: list[dict[str, Any]]


class PageWriter:
    """Stores batches of contacts for one run; thread-safe."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        client: AmoClient,
        progress: Progress | None,
    ) -> None:
        self.engine, self.client, self.progress = engine, client, progress
        self.sync = config.sync
        self.contacts = ContactStore(config.database.schema)
        self.runs = RunStore(config.database.schema)
        self.relations = ["custom_values", "tags", "companies", *config.sync.with_]
        self.fields: dict[int, FieldDef] = {}
        self.field_refreshes = 0
        self.cursor: int | None = None  # the stored contacts cursor
        self.seen_run: int | None = None  # a full resync's run id: record the ids seen
        self.fetched = self.upserted = 0
        self.newest: int | None = None  # newest updated_at stored by this run
        self._lock = threading.Lock()

    def store(self, batch: Batch, *, chats: ChatLinks | None = None) -> None:
        """One transaction: the batch's rows and relations, the cursor, the seen list; the chat
        links of every contact of the batch are read here unless `chats` brings them."""
        items = batch.items
        fields = self._fields_for(items)
        if items and self.sync.chats and chats is None:
            chats = self.fetch_chats(items)
        rows = to_rows(items, fields, self.sync.with_)
        result = self._write_retrying(rows, fields, chats, batch.cursor)
        with self._lock:
            self._count(items, result)

    def _fields_for(self, items: list[dict[str, Any]]) -> dict[int, FieldDef]:
        with self._lock:
            if items and unknown_fields(items, self.fields):
                self._refresh_fields()
            return self.fields

    def _write_retrying(
        self,
        rows: PageRows,
        fields: Mapping[int, FieldDef],
        chats: ChatLinks | None,
        cursor: int | None,
    ) -> PageResult:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._write(rows, fields, chats, cursor)
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in RETRIED_SQLSTATES or attempt == ATTEMPTS:
                    raise
                log.warning("pull_page_retried", sqlstate=code, attempt=attempt)
        raise AssertionError("unreachable")

    def _write(
        self,
        rows: PageRows,
        fields: Mapping[int, FieldDef],
        chats: ChatLinks | None,
        cursor: int | None,
    ) -> PageResult:
        links, linked = (None, None) if chats is None else (chats.rows, chats.ids)
        with self.engine.begin() as conn:
            sync_origin(conn)
            result = self.contacts.store_page(
                conn, rows, fields, with_relations=self.relations, chats=links, chat_ids=linked
            )
            if self.seen_run is not None and rows.ids:
                self.contacts.mark_seen(conn, self.seen_run, rows.ids)
            if cursor is not None:
                self.set_cursor(conn, cursor)
        return result

    def _count(self, items: list[dict[str, Any]], result: PageResult) -> None:
        self.fetched += len(items)
        stamps = [int(i.get("updated_at") or 0) for i in items]
        self.newest = max([*stamps, self.newest or 0]) if stamps else self.newest
        self.upserted += result.upserted
        if self.progress is not None and items:
            self.progress.advance(len(items))

    def set_cursor(self, conn: Connection, cursor: int) -> None:
        """Store the contacts cursor in the caller's transaction, unless it would move back."""
        if self.cursor is not None and cursor <= self.cursor:
            return
        self.runs.set_state(conn, CONTACTS_CURSOR, {"updated_at": cursor})
        self.cursor = cursor

    def fetch_chats(self, items: list[dict[str, Any]]) -> ChatLinks:
        """The chat links of these contacts (`GET /api/v4/contacts/chats`, ≤250 ids a call)."""
        return self._chats([int(i["id"]) for i in items])

    def fetch_new_chats(self, items: list[dict[str, Any]]) -> ChatLinks:
        """The chat links of those contacts whose listed version is not stored yet: a page that
        only re-reads stored versions (the overlap of an idle poll) asks amoCRM nothing."""
        with self.engine.connect() as conn:
            stored = self.contacts.stored_versions(conn, [int(i["id"]) for i in items])
        fresh = [int(i["id"]) for i in items if stored.get(int(i["id"])) != _u(i)]
        return self._chats(fresh)

    def _chats(self, ids: list[int]) -> ChatLinks:
        links: list[dict[str, Any]] = []
        if ids:
            for page in self.client.iter_chats(contact_ids=ids):
                links += page.items
        return ChatLinks(ids, chat_rows(links))

    def _refresh_fields(self) -> None:
        if self.field_refreshes >= MAX_FIELD_REFRESHES:
            return
        self.field_refreshes += 1
        raw: list[dict[str, Any]] = []
        for page in self.client.iter_custom_fields():
            raw += page.items
        with self.engine.begin() as conn:
            self.runs.save_fields(conn, raw)
        self.fields = {f.id: f for f in map(field_def, raw)}
        log.info("pull_fields_refreshed", fields=len(self.fields))


def _u(item: Mapping[str, Any]) -> int:
    return int(item.get("updated_at") or 0)
