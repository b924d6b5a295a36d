"""The database end of the pull pipeline: complete pages in, a transaction for one or two, no HTTP.

A `CompletePage` arrives from the fetch stage (`sync.pull.fetch`) with everything it needs: the
contacts, the chat links of those whose links were read, custom field definitions new since the
last page (saved first), the definitions to map with, and the span of `updated_at` seconds it
proves read. `Sink.store` writes it in ONE transaction: definitions, rows and relations, the ids a
full resync saw, and the cursor state. A page that hits a deadlock or serialization failure is
retried (upserts are idempotent). A writer that finds the next page already waiting stores the
two in one transaction (`merged`: as if one after the other; a page's statements cost the same
for 250 contacts or 500), and that transaction's cursor state claims both.

`CursorKeeper` is the one owner of the contacts cursor (`sync_state` "pull.contacts"). It numbers
pages as the fetch stage hands them over and adds their spans to a `Coverage`; several writer
threads may commit pages out of order, so a transaction stores the state as of the newest page
whose predecessors are all committed (or in this very transaction): the state stored never
claims a page that is not. The value stored:

    {"updated_at": C,            every version with updated_at < C is stored
     "windows": [[p, hi], ...],  spans at or above C not read yet (hi null: open); [] when done
     "ceiling": R,               the run's start, where the next run resumes the head
     "tie_settled": U,           newest second read by id (a tie) that can gain no contact now
     "ties_settled": [U1, ...],  every such second still within the overlap (U among them)
     "bounds": "inclusive"}      amoCRM's date filter bounds, once a walk proved them

Older values load (`{"updated_at": C}` only: nothing settled; one `tie_settled`: that second).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from sync.config import Config
from sync.core.mapping import FieldDef, to_rows
from sync.db.contacts import ContactStore, PageResult
from sync.db.engine import sync_origin
from sync.db.runs import CONTACTS_CURSOR, RunCounts, RunStore
from sync.logs import get_logger
from sync.pull.shape import stored_relations
from sync.pull.windows import Coverage, Span

log = get_logger("sync.pull.sink")

RETRIED_SQLSTATES = ("40P01", "40001")  # deadlock, serialization failure
ATTEMPTS = 3
BATCH = 2  # pages a writer stores in one transaction when they are waiting (`_batch`)


class Progress(Protocol):
    """Where a run reports progress (the CLI draws a bar)."""

    def start(self, total: int | None, description: str) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass(frozen=True)
class ChatLinks:
    """The chat links amoCRM listed for the contacts `ids` (only theirs are replaced)."""

    ids: list[int]
    rows: list[dict[str, Any]]


@dataclass
class CompletePage:
    """One unit of work for the sink (see the module docstring)."""

    items: list[dict[str, Any]]
    fields: Mapping[int, FieldDef]
    chats: ChatLinks | None = None
    new_fields: list[dict[str, Any]] | None = None
    covers: Span | None = None
    listed: bool = True  # from a list read (counts for the cursor's end), not a by-id fetch
    seq: int = 0
    state: dict[str, Any] | None = field(default=None, repr=False)
    also: tuple[int, ...] = ()  # the numbers of the pages merged into this one (`merged`)


@dataclass
class CursorState:
    """The stored value of "pull.contacts", read leniently."""

    cursor: int | None = None
    windows: list[Span] = field(default_factory=list)
    ceiling: int | None = None
    ties_settled: tuple[int, ...] = ()  # ascending
    bounds: str | None = None

    @classmethod
    def load(cls, value: Mapping[str, Any] | None) -> CursorState:
        if value is None:
            return cls()
        windows = [
            (int(w[0]), None if w[1] is None else int(w[1])) for w in value.get("windows") or ()
        ]
        settled = [*(value.get("ties_settled") or ()), value.get("tie_settled")]
        ceiling = value.get("ceiling")
        return cls(
            int(value["updated_at"]),
            windows,
            None if ceiling is None else int(ceiling),
            tuple(sorted({int(s) for s in settled if s is not None})),
            value.get("bounds"),
        )


class CursorKeeper:
    """The one owner of the contacts cursor of a run (thread-safe)."""

    def __init__(self, runs: RunStore, coverage: Coverage, old: CursorState, ceiling: int) -> None:
        self.runs, self.coverage, self.old, self.ceiling = runs, coverage, old, ceiling
        self.bounds, self.ties_settled = old.bounds, old.ties_settled
        self.newest: int | None = None  # newest updated_at listed by this run
        self.cursor = old.cursor
        self._lock = threading.Lock()
        self._seq = 0
        self._states: dict[int, dict[str, Any]] = {}
        self._committed: set[int] = set()  # committed pages above `_done`
        self._done = 0  # every page up to this one is committed
        self._written = 0  # the newest page whose state is stored (or being stored)

    def stamp(self, page: CompletePage) -> CompletePage:
        """Number the page, add its span, and give it the state as of this page."""
        with self._lock:
            self._seq += 1
            page.seq = self._seq
            if page.listed and page.items:
                top = max(int(i.get("updated_at") or 0) for i in page.items)
                self.newest = top if self.newest is None else max(self.newest, top)
            if page.covers is not None:
                self.coverage.add(*page.covers)
            self._states[page.seq] = self._value(final=False)
            return page

    def end(self) -> int:
        """Where the cursor goes once everything is read: amoCRM's newest listed + 1, never
        beyond the run's start (our clock) nor back."""
        if self.newest is None:  # nothing listed (a 204, or a walk held back): stay
            return self.old.cursor or 0
        return max(min(self.newest + 1, self.ceiling), self.old.cursor or 0)

    def _value(self, *, final: bool) -> dict[str, Any]:
        floor = self.old.cursor or 0
        cursor = max(floor, min(self.coverage.cursor(self.end()), self.ceiling))
        if final:
            cursor, left = self.end(), []
        else:
            left = [[max(lo, cursor), hi] for lo, hi in self.coverage.remaining()]
            left = [w for w in left if w[1] is None or int(w[1]) > int(w[0] or 0)]
        value: dict[str, Any] = {"updated_at": cursor, "windows": left, "ceiling": self.ceiling}
        if self.ties_settled:  # `tie_settled`, the newest, is what older code reads
            value.update(tie_settled=self.ties_settled[-1], ties_settled=list(self.ties_settled))
        if self.bounds is not None:
            value["bounds"] = self.bounds
        return value

    def claim(self, *seqs: int) -> dict[str, Any] | None:
        """The state a transaction storing pages `seqs` writes (None: nothing newer to say).
        It covers only pages committed or stored by this transaction: walking from what
        another writer claimed but has not committed, a state could commit that claims its
        pages stored, and a kill -9 or a failed commit of theirs would then skip them."""
        with self._lock:
            top = self._done
            while (top + 1) in seqs or (top + 1) in self._committed:
                top += 1
            if top <= self._written:
                return None
            self._written = top
            value = self._states[top]
            for old in [s for s in self._states if s < top]:
                del self._states[old]
            return value

    def committed(self, seq: int) -> None:
        with self._lock:
            self._committed.add(seq)
            while self._done + 1 in self._committed:
                self._done += 1
            self._committed = {s for s in self._committed if s > self._done}

    def store(
        self, conn: Connection, value: Mapping[str, Any], counted: RunCounts | None = None
    ) -> None:
        """Store the state; `counted`: the run's counters grow in the same statement."""
        self.runs.set_state(conn, CONTACTS_CURSOR, value, counted=counted)
        self.cursor = int(value["updated_at"])

    def store_final(self, conn: Connection, *, complete: bool) -> None:
        """The run's last state: everything read (`complete`), or as the pages left it."""
        with self._lock:
            value = self._value(final=complete)
        self.store(conn, value)

    def store_initial(self, conn: Connection) -> None:
        """A run that resumes or skips spans says so before its first page."""
        with self._lock:
            value = self._value(final=False)
        self.store(conn, value)


_END = object()


class Sink:
    """Stores complete pages; `drain` runs `writers` threads over a queue until its end."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        keeper: CursorKeeper,
        progress: Progress | None,
        *,
        seen_run: int | None = None,
        run_id: int | None = None,
        requests: Callable[[], int] | None = None,
    ) -> None:
        self.engine, self.keeper, self.progress = engine, keeper, progress
        # the run whose sync_runs row counts each page as it commits, and its requests so far
        self.run_id, self.requests = run_id, requests
        self.schema = config.database.schema
        self.with_ = config.sync.with_
        self.contacts = ContactStore(config.database.schema)
        self.runs = RunStore(config.database.schema)
        self.relations = stored_relations(config)
        self.seen_run = seen_run  # a full resync's run id: record the ids seen
        self.fetched = self.upserted = self.new_versions = 0
        self._lock = threading.Lock()

    def store(self, page: CompletePage, held: Connection | None = None) -> None:
        """One transaction for the page (see the module docstring): on a connection of the
        pool, committed synchronously; on `held`, a writer's connection of `drain`, not."""
        result = self._write_retrying(page, held)
        for seq in (page.seq, *page.also):
            self.keeper.committed(seq)
        with self._lock:
            self.fetched += len(page.items)
            self.upserted += result.upserted
            self.new_versions += result.new_versions
        if self.progress is not None:  # an empty page too: its cursor is committed
            self.progress.advance(len(page.items))

    def _write_retrying(self, page: CompletePage, held: Connection | None) -> PageResult:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if held is None:
                    with self.engine.connect() as conn:
                        return self._write(page, conn, async_commit=False)
                return self._write(page, held, async_commit=True)
            except DBAPIError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in RETRIED_SQLSTATES or attempt == ATTEMPTS:
                    raise
                log.warning("pull_page_retried", sqlstate=code, attempt=attempt)
        raise AssertionError("unreachable")

    def _write(self, page: CompletePage, conn: Connection, *, async_commit: bool) -> PageResult:
        rows = to_rows(page.items, page.fields, self.with_)
        links, linked = (None, None) if page.chats is None else (page.chats.rows, page.chats.ids)
        with conn.begin():
            if rows.contacts:  # the sync's own (`sync_origin`) and its staging, one round trip
                self.contacts.prepare(conn, async_commit=async_commit)
            else:  # a page of a span only (an idle poll): no staging tables for the session
                sync_origin(conn)
            if page.new_fields is not None:
                self.runs.save_fields(conn, page.new_fields)
            result = self.contacts.store_page(
                conn,
                rows,
                page.fields,
                with_relations=self.relations,
                chats=links,
                chat_ids=linked,
                prepared=True,
            )
            if self.seen_run is not None and rows.ids:
                self.contacts.mark_seen(conn, self.seen_run, rows.ids)
            state = self.keeper.claim(page.seq, *page.also)
            counted = self._counted(page, result)
            if state is not None:  # the counts ride on the state's statement
                self.keeper.store(conn, state, counted)
            elif counted is not None:  # a page another writer's state will claim
                self.runs.add_counts(conn, *counted)
        return result

    def _counted(self, page: CompletePage, result: PageResult) -> RunCounts | None:
        """What the page adds to the run's sync_runs row, committed with the page: a run
        killed with -9 leaves the counts of what it stored ("read 0, wrote 0" before: audit).
        None: no run to count for, or a page of a span only (an idle poll's: nothing)."""
        if self.run_id is None or not page.items:
            return None
        counts = {"fetched": len(page.items), "upserted": result.upserted}
        if self.requests is not None:
            counts["requests"] = self.requests()
        return self.run_id, counts

    def drain(self, pages: queue.Queue[Any], writers: int, failed: threading.Event) -> None:
        """Store what arrives on `pages` on `writers` threads until the end marker; the first
        failure sets `failed` and is re-raised here once every writer has stopped.

        Each writer holds one connection, opened before any page is stored, and commits its
        pages without waiting for the WAL flush (`synchronous_commit = off` for them only). A
        PostgreSQL crash may then lose the last pages committed, a suffix of the WAL with their
        cursor states, so the next run reads them again; a writer's connection surviving proves
        no crash came between another writer's commit and its own cursor claim over it (a pool
        connection may be a new one after a crash). The drain ends with a synchronous commit
        on a held connection (`flush_commits`): every page is on disk before the run writes on
        (docs/pull.md, "Issue 12's ingest target (2026-12-07, night)")."""
        errors: list[BaseException] = []
        held: list[Connection] = []
        try:
            while len(held) < writers:
                held.append(self.engine.connect())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the queue is drained
            errors.append(exc)
            failed.set()

        def work(conn: Connection | None) -> None:
            while True:
                page: CompletePage | None = pages.get()
                if page is _END:
                    pages.put(_END)  # for the other writers
                    return
                while page is not None and not failed.is_set():  # else: keep taking pages so
                    page, after = _batch(page, pages)  # the producer never blocks forever
                    try:
                        self.store(page, conn)
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        errors.append(exc)
                        failed.set()
                    page = after

        threads = [  # with no connection (failed) a writer only takes pages until the end
            threading.Thread(target=work, args=(conn,), name=f"pull-db-{n}", daemon=True)
            for n, conn in enumerate([*held, *[None] * (writers - len(held))])
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
            if not failed.is_set():  # a failed run writes nothing on its pages
                self.contacts.flush_commits(held[0])
        finally:
            for conn in held:
                conn.close()


def _batch(page: CompletePage, pages: queue.Queue[Any]) -> tuple[CompletePage, CompletePage | None]:
    """`page` with up to `BATCH - 1` pages already waiting merged into it (one transaction
    for them: the page's dozen statements and its commit once, ~15% of the pull's and of
    PostgreSQL's CPU per contact), and a page taken that could not be merged (None if none)."""
    for _ in range(BATCH - 1):
        try:
            more = pages.get_nowait()
        except queue.Empty:
            break
        if more is _END:
            pages.put(_END)  # for this writer's next turn and the others
            break
        both = merged(page, more)
        if both is None:
            return page, more
        page = both
    return page, None


def merged(first: CompletePage, more: CompletePage) -> CompletePage | None:
    """Two pages as one, stored in one transaction exactly as the two would be, one after the
    other; None where that is not sure: the second brings definitions (saved first, and the
    pages map with different ones), one page has chat links and the other not, or the pages
    share a contact (its rows and links would be written twice in one statement)."""
    if more.new_fields is not None or not more.items or more.fields != first.fields:
        return None
    if not first.items or (first.chats is None) != (more.chats is None):
        return None
    ids = {int(item["id"]) for item in first.items}
    if any(int(item["id"]) in ids for item in more.items):
        return None
    chats = None
    if first.chats is not None and more.chats is not None:
        chats = ChatLinks(first.chats.ids + more.chats.ids, first.chats.rows + more.chats.rows)
    return CompletePage(
        first.items + more.items, first.fields, chats, first.new_fields, listed=first.listed,
        seq=first.seq, also=(*first.also, more.seq, *more.also),
    )  # fmt: skip


def end_marker() -> object:
    """What the producer puts on the queue after its last page."""
    return _END
