"""The fetch stage's pages made complete: their chat links and the custom field definitions they
need, then handed on to the sink (`sync.pull.sink`) as `CompletePage`s.

**Chat links** are asked for as pages arrive, on the same workers (≤ 250 contacts a request; an
incremental run asks only for listed versions not stored yet). **Field definitions** are fetched
when a page names an unknown field or option, before that page reaches the sink, which saves them
in the page's transaction. `complete_now` does the same for a page read outside the walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.amo.client import AmoClient
from sync.core.mapping import FieldDef, chat_rows, field_def, unknown_fields
from sync.pull.sink import ChatLinks, CompletePage
from sync.pull.stage import (
    MAX_FIELD_REFRESHES,
    FetchSetup,
    Stage,
    Waiting,
    log,
    updated,
)
from sync.pull.windows import Span


class Completion(Stage):
    """Pages waiting for what they need, and handed on once they have it."""

    def _collect(self, items: list[dict[str, Any]], covers: Span | None) -> None:
        """A page read: fetch what it still needs, then hand it on."""
        waiting = Waiting(items, covers)
        self.waiting.append(waiting)
        if items and self.setup.chats:
            waiting.chats_due = True
            self._submit(lambda: self._chats(items), lambda c: self._chats_in(waiting, c))
        if items and unknown_fields(items, self.fields) and not self.fields_refreshing:
            self._refresh_fields()
        self._flush()

    def _chats(self, items: list[dict[str, Any]]) -> ChatLinks:
        ids = [int(i["id"]) for i in items]
        if self.setup.new_chats_only:
            stored = self.stored_versions(ids)
            ids = [int(i["id"]) for i in items if stored.get(int(i["id"])) != updated(i)]
        links: list[dict[str, Any]] = []
        if ids:
            for page in self.client.iter_chats(contact_ids=ids):
                links += page.items
        return ChatLinks(ids, chat_rows(links))

    def _chats_in(self, waiting: Waiting, chats: ChatLinks) -> None:
        waiting.chats, waiting.chats_due = chats, False
        self._flush()

    def _refresh_fields(self) -> None:
        if self.field_refreshes >= MAX_FIELD_REFRESHES:
            return
        self.field_refreshes += 1
        self.fields_refreshing = True
        self._submit(self._fetch_fields, self._fields_in)

    def _fetch_fields(self) -> list[dict[str, Any]]:
        raw: list[dict[str, Any]] = []
        for page in self.client.iter_custom_fields():
            raw += page.items
        return raw

    def _fields_in(self, raw: list[dict[str, Any]]) -> None:
        self.fields_refreshing = False
        self.fields = {f.id: f for f in map(field_def, raw)}
        self.new_fields = raw
        log.info("pull_fields_refreshed", fields=len(self.fields))
        self._flush()

    def _flush(self) -> None:
        """Hand on, in the order they were read, the pages that have all they need.

        Never out of order: a page's span may rely on contacts an earlier page carries (a
        continuation page drops the contacts of its start second that the page before listed;
        the newest page drops those of the first answer; a tie's span is closed after its
        pages). The state stored with page N covers pages 1..N, so if page N+1 went first, a
        run killed before page N committed would leave a cursor past contacts no stored page
        holds (and the next run would never read them)."""
        if self.fields_refreshing:
            return
        while self.waiting and not self.waiting[0].chats_due:
            waiting = self.waiting[0]
            stale = waiting.items and unknown_fields(waiting.items, self.fields)
            if stale and self.field_refreshes < MAX_FIELD_REFRESHES:
                self._refresh_fields()  # `_fields_in` flushes again
                break
            del self.waiting[0]
            new, self.new_fields = self.new_fields, None
            page = CompletePage(
                waiting.items,
                self.fields,
                chats=waiting.chats,
                new_fields=new,
                covers=waiting.covers,
                listed=waiting.listed,
            )
            self.outbox.append(self.stamp(page))
        self._hand_on()


def complete_now(
    client: AmoClient,
    setup: FetchSetup,
    fields: dict[int, FieldDef],
    items: list[dict[str, Any]],
    *,
    stored_versions: Callable[[list[int]], dict[int, int]],
    listed: bool = False,
) -> tuple[CompletePage, dict[int, FieldDef]]:
    """A page made complete right here (contacts read by id, the fallback walks): its chat links
    and, if it names a field the run does not know, the definitions. Returns the page and the
    definitions to use from now on."""
    new_fields: list[dict[str, Any]] | None = None
    if items and unknown_fields(items, fields):
        new_fields = [f for page in client.iter_custom_fields() for f in page.items]
        fields = {f.id: f for f in map(field_def, new_fields)}
    chats: ChatLinks | None = None
    if items and setup.chats:
        ids = [int(i["id"]) for i in items]
        if setup.new_chats_only:
            stored = stored_versions(ids)
            ids = [int(i["id"]) for i in items if stored.get(int(i["id"])) != updated(i)]
        links = [x for page in client.iter_chats(contact_ids=ids) for x in page.items]
        chats = ChatLinks(ids, chat_rows(links))
    page = CompletePage(items, fields, chats=chats, new_fields=new_fields, listed=listed)
    return page, fields
