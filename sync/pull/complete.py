"""The fetch stage's pages made complete: their chat links and the custom field definitions they
need, then handed on to the sink (`sync.pull.sink`) as `CompletePage`s.

**Chat links** are asked for in batches of `CHAT_BATCH` (250) contacts across pages, on the
same workers: a page's contacts join the batch as the page arrives, a full batch goes out at
once, and a part-full one only when no request in flight can list more contacts (the walk is
draining). A page is handed on once every batch holding its contacts has answered, so a page,
its chat links and the cursor position it proves still go into one transaction. An incremental
run asks only for listed versions not stored yet. **Field definitions** are fetched
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
    CHAT_BATCH,
    CHATS_BEHIND,
    ENDING_PAGES,
    MAX_FIELD_REFRESHES,
    OUTBOX,
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
            waiting.chats = ChatLinks([], [])  # filled as its contacts' batches answer
            self._batch_chats(waiting, self._chat_ids(items))
        if items and unknown_fields(items, self.fields):
            if not self.fields_refreshing:
                self._refresh_fields()
        else:
            waiting.known = self.fields
        self._flush()

    def _chat_ids(self, items: list[dict[str, Any]]) -> list[int]:
        """The contacts of a page whose chat links to read (incremental: versions not stored)."""
        ids = [int(i["id"]) for i in items]
        if not self.setup.new_chats_only:
            return ids
        stored = self.stored_versions(ids)
        return [int(i["id"]) for i in items if stored.get(int(i["id"])) != updated(i)]

    def _batch_chats(self, waiting: Waiting, ids: list[int]) -> None:
        """Add a page's contacts to the chat batch; a full batch is asked for at once. A page
        may span two batches: it waits for both (its chats go into its own transaction)."""
        while ids:
            room = CHAT_BATCH - self.chat_batched
            part, ids = ids[:room], ids[room:]
            self.chat_batch.append((waiting, part))
            self.chat_batched += len(part)
            waiting.chats_due += 1
            if self.chat_batched >= CHAT_BATCH:
                self._send_chats()

    def _drain_chats(self) -> None:
        """The batch goes out part-full only when nothing in flight can add to it (the walk is
        draining, or waits for something else), and not while the workers' cap alone holds
        back a list read that would (`_list_read_held`)."""
        draining = not self.producers and not self._list_read_held()
        if self.chat_batch and draining and len(self.outbox) < OUTBOX:
            self._send_chats()

    def _list_read_held(self) -> bool:
        """Every worker is taken (chat batches waiting for the budget, say) while a window
        waits to be read or a tie's page known to exist to be asked: the next answer frees a
        worker for it, and its contacts join this batch. Sent now, the batch went out
        part-full mid-walk and the run asked one chat request more than ⌈contacts/250⌉ (the
        catch-up: 22 instead of 21 in some runs)."""
        if len(self.inflight) < self.setup.workers:
            return False
        if any(not w.busy for w in self.plan.windows):
            return True
        return any(
            t.queue or (not t.waiting and t.last is None and t.issued < t.frontier)
            for t in self.ties
        )

    def _send_chats(self) -> None:
        """The batch lets list reads waiting for the budget go first while fewer than
        `CHATS_BEHIND` pages wait to be handed on: the walk ends sooner, and the batches put
        off fill the budget while its last answers are awaited. Pages are handed on in the
        order they were read, so a batch put off holds back every page read after it: past
        the bound it takes its turn like any request (asked again while it waits)."""
        batch, self.chat_batch, self.chat_batched = self.chat_batch, [], 0
        ids = [cid for _, part in batch for cid in part]
        turns = self.client.session.limiter.turns

        def read() -> list[dict[str, Any]]:
            with turns.behind(self._few_held):
                return self._chats(ids)

        self._submit(read, lambda rows: self._chats_in(batch, rows))

    def _few_held(self) -> bool:
        """Asked on the rate limiter's lock (another thread): lengths and a flag only. When
        the walk ends, its last list reads go first up to `ENDING_PAGES` pages more: they are
        what the final pass waits for, while the batches they pass fill the budget during
        that pass's round trip (they came to the front behind 8 held pages and kept the last
        window's page waiting ~1.5 s with the budget idle after it).

        Once the walk is over (the final pass sent: every window and tie answered) the
        batches still waiting go before the final pass and the deletion check, which wait
        behind them: what the budget sends last is then a read whose answer needs next to
        nothing stored (a final pass lists little, a deletion check a few events), so the pages
        those batches complete are stored while the last answers are on their way, not after
        them (the last page's transaction, 0.1-0.3 s, off the end of the run)."""
        if self.full_tail:
            return False
        held = len(self.waiting) + len(self.outbox)
        return held < CHATS_BEHIND + (ENDING_PAGES if self.ending else 0)

    def _chats(self, ids: list[int]) -> list[dict[str, Any]]:
        links: list[dict[str, Any]] = []
        for page in self.client.iter_chats(contact_ids=ids):
            links += page.items
        return chat_rows(links)

    def _chats_in(self, batch: list[tuple[Waiting, list[int]]], rows: list[dict[str, Any]]) -> None:
        """A batch answered: each page gets the links of its own contacts."""
        of: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            of.setdefault(int(row["contact_id"]), []).append(row)
        for waiting, part in batch:
            assert waiting.chats is not None
            waiting.chats.ids.extend(part)
            waiting.chats.rows.extend(row for cid in part for row in of.get(cid, ()))
            waiting.chats_due -= 1
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
            fresh = waiting.known is self.fields  # checked against these on arrival
            stale = waiting.items and not fresh and unknown_fields(waiting.items, self.fields)
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
