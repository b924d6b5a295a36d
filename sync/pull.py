"""Pull: amoCRM contacts (with every embedded entity) → PostgreSQL, incrementally or in full.

    report = run_pull(config, engine, client)              # incremental (full if no cursor yet)
    report = run_pull(config, engine, client, full=True)   # full resync, reconciles deletions
    report = serve_request(config, engine, client)         # a pending sync_requests row, if any

Both are what the CLI, the daemon and `resync` call. A run holds the single-pull lock (a second
pull at the same time gets a `SyncError`), writes one `sync_runs` row and logs one summary event
(`pull_finished` or `pull_failed`) with the counts.

Incremental run:
  1. the cursor C from `sync_state` ("pull.contacts"); without one the run is a full resync;
  2. `GET /api/v4/account?with=is_api_filter_enabled` picks the walk: ascending keyset on
     `updated_at`, or (filters off) descending with a stop at the start; a page that shows the
     filter was ignored switches to descending mid-run. See `sync.scan` for the cursor design;
  3. each page: custom field definitions refreshed if a field or enum is unknown, chat links
     fetched for its contacts whose listed version is not stored yet, then rows + relations +
     the new cursor in ONE transaction;
  4. `contact_deleted` / `contact_restored` events since the events cursor - overlap: the latest
     event of each contact wins; restored contacts missing locally are fetched by id.
The daemon passes a `PollMemo` (`sync.poll_memo`): its idle polls, which store no new version,
skip the account read and the events (read again every `sync.events_interval_s`).

Full resync: every contact by `order[id]` (an immutable key, so edits during the walk cannot
shift pages), pages fetched in parallel and stored as they come (the tables never empty out);
ids seen go to `sync_full_seen`. Stored live contacts not seen are confirmed with a GET by id:
found → stored (a deletion elsewhere shifted it past us), absent → tombstoned, unless that is more
than `sync.max_delete_share` of all contacts (then nothing is tombstoned and the run fails).
Deletions and restores do shift the pages; the run compares amoCRM's events before and after the
walk, and if the listing may have skipped a contact (such an event, a list it cannot trust, or a
live contact no page listed) the cursor is not moved (a first run stores 0: the next run reads
everything by keyset, which no shift can fool).

Local edits are never clobbered (see `sync.db.contacts`): fields with unpushed changes keep the
local value; amoCRM's version of the writable fields goes to `contact_remote_values` for push.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.amo.pages import Page
from sync.config import Config
from sync.db.contacts import ContactStore
from sync.db.diag import error_line
from sync.db.engine import store_errors, sync_origin
from sync.db.locks import SessionLock
from sync.db.runs import CONTACTS_CURSOR, EVENTS_CURSOR, RunStore, pull_lock
from sync.errors import InvariantError, SyncError, mark_logged
from sync.heap import fewer_collections
from sync.lines import count
from sync.logs import get_logger
from sync.mapping import event_changes
from sync.poll_memo import PollMemo
from sync.readahead import ReadAhead
from sync.scan import Batch, FiltersIgnored, Walker
from sync.writer import ChatLinks, PageWriter, Progress

log = get_logger("sync.pull")

DELETE_FLOOR = 10  # a full resync may always tombstone this many contacts, whatever the share
EVENT_TYPES = ("contact_deleted", "contact_restored")
PIPELINE_DEPTH = 6  # pages fetched but not yet stored, at most (bounds memory)
READ_AHEAD = 2  # pages an incremental walk reads ahead of the one being stored
WRITERS = 3  # database transactions of a full resync running at once


_Chats = Future[ChatLinks] | None  # a page's chat links being fetched (None: off)


class PullBusyError(SyncError):
    """Another pull holds the lock on this schema (the caller may try again later)."""


@dataclass
class PullReport:
    """What one run did (also in its sync_runs row and its summary log event)."""

    run_id: int
    kind: str
    mode: str = ""
    fetched: int = 0
    upserted: int = 0
    deleted: int = 0
    restored: int = 0
    requests: int = 0
    duration_s: float = 0.0
    cursor: int | None = None
    events: str = ""  # incremental runs: "read", or "skipped" by an idle poll of the daemon

    def describe(self) -> str:
        """The one line the CLI prints for this run."""
        return (
            f"{self.kind} run {self.run_id}: {count(self.fetched, 'contact')} read, "
            f"{self.upserted} written, {self.deleted} marked deleted, "
            f"{count(self.requests, 'request')} in {self.duration_s:.1f} s"
        )


def run_pull(
    config: Config,
    engine: Engine,
    client: AmoClient,
    *,
    full: bool = False,
    progress: Progress | None = None,
    request_id: int | None = None,
    memo: PollMemo | None = None,
) -> PullReport:
    """One pull run (see the module docstring). Raises `SyncError` if another pull runs."""
    schema = config.database.schema
    with store_errors(config.database), pull_lock(engine, schema) as lock:
        if lock is None:
            raise PullBusyError("another pull is running on this database schema; try again later")
        with fewer_collections():  # pages are acyclic garbage: see sync.heap
            run = _Run(config, engine, client, progress, lock, memo=memo)
            return run.execute(full, request_id)


def serve_request(
    config: Config, engine: Engine, client: AmoClient, *, progress: Progress | None = None
) -> PullReport | None:
    """Run a full resync for the oldest pending `sync_requests` row (None if there is none)."""
    runs = RunStore(config.database.schema)
    with store_errors(config.database), engine.begin() as conn:
        request_id = runs.claim_request(conn)
    if request_id is None:
        return None
    try:
        return run_pull(config, engine, client, full=True, progress=progress, request_id=request_id)
    except PullBusyError:
        with engine.begin() as conn:  # not served: another pull holds the lock; ask again later
            runs.release_request(conn, request_id)
        raise
    except SyncError as exc:
        with engine.begin() as conn:
            runs.finish_request(conn, request_id, None, str(exc))
        raise


class _Run:
    """The state of one run."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        client: AmoClient,
        progress: Progress | None,
        lock: SessionLock,
        *,
        memo: PollMemo | None = None,
    ) -> None:
        self.config, self.engine, self.client, self.lock = config, engine, client, lock
        self.memo = memo
        self.sync = config.sync
        self.store = ContactStore(config.database.schema)
        self.runs = RunStore(config.database.schema)
        self.progress = progress
        self.requests_before = client.session.requests_sent
        self.writer = PageWriter(config, engine, client, progress)
        self.report = PullReport(0, "pull")
        self.ceiling = int(time.time())
        self.newest_event: int | None = None

    # --- the run ------------------------------------------------------------------------------

    def execute(self, full: bool, request_id: int | None) -> PullReport:
        started = time.monotonic()
        with self.engine.begin() as conn:
            self.runs.abandon_stale_runs(conn, ("pull", "full"))
            state = self.runs.get_state(conn, CONTACTS_CURSOR)
            self.writer.cursor = None if state is None else int(state["updated_at"])
            self.writer.fields = self.runs.load_fields(conn)
            kind = "full" if full or self.writer.cursor is None else "pull"
            self.report = PullReport(self.runs.start_run(conn, kind), kind)
        try:
            self._full() if kind == "full" else self._incremental()
            self.lock.ensure_held()  # a run that lost its lock never says succeeded
        except BaseException as exc:
            self._finish(started, "failed", request_id, error_line(exc))
            mark_logged(exc)  # pull_failed said it; the daemon's job runner must not repeat it
            raise
        self._finish(started, "succeeded", request_id, None)
        return self.report

    def _finish(
        self, started: float, status: str, request_id: int | None, error: str | None
    ) -> None:
        report = self.report
        report.duration_s = round(time.monotonic() - started, 3)
        # every request this run sent, retries, prefetches past the end and refreshes included
        # (runs in one process take turns: the daemon has one worker)
        report.requests = self.client.session.requests_sent - self.requests_before
        report.cursor = self.writer.cursor
        report.fetched, report.upserted = self.writer.fetched, self.writer.upserted
        counts = {k: v for k, v in asdict(report).items() if isinstance(v, int)}
        with self.engine.begin() as conn:
            self.runs.finish_run(conn, report.run_id, status, counts, error)
            if self.writer.seen_run is not None:
                self.store.forget_seen(conn, self.writer.seen_run)
            if request_id is not None:
                self.runs.finish_request(conn, request_id, report.run_id, error)
        event = "pull_finished" if error is None else "pull_failed"
        log_fn = log.info if error is None else log.error
        asked = {} if request_id is None else {"request_id": request_id}  # a requested resync
        log_fn(event, **asdict(report), **asked, error=error)

    # --- incremental --------------------------------------------------------------------------

    def _incremental(self) -> None:
        assert self.writer.cursor is not None
        start = max(0, self.writer.cursor - self.sync.overlap_s)
        walker = self._walker()
        events_from = self._events_start(start)
        filters = self._filters_enabled()  # amoCRM's first answer: no longer "connecting"
        self._start_progress(None, "pulling changes")
        if filters:
            self.report.mode = "keyset"
            try:
                self._consume(walker.ascending(start))
            except FiltersIgnored as exc:
                log.warning("pull_filter_ignored", detail=str(exc))
                self._remember_filters(False)
                self._descending(walker, start, events_from)
                return
            self._events_unless_idle(events_from)
        else:
            self._descending(walker, start, events_from)

    def _descending(self, walker: Walker, start: int, events_from: int) -> None:
        """The walk for accounts whose filters are ignored; the cursor waits for the events."""
        self.report.mode = "descending"
        walk_started = int(time.time())
        final: list[int] = []
        with self._read_ahead(walker.descending(start)) as ahead:
            for batch, chats in ahead:
                if batch.cursor is not None:
                    final.append(batch.cursor)
                self._store_ready(Batch(batch.items, None), chats)
        deletions = self._apply_events(events_from)
        # deletions after the walk began may have shifted pages; the threshold takes the smaller
        # of our clock and amoCRM's (the newest updated_at read), so clock skew cannot hide one
        since = min(walk_started, self.writer.newest or walk_started) - 1
        late = [at for at in deletions if at >= since]
        if final and not late:
            self.writer.store(Batch([], final[-1]))
        elif late:
            log.warning("pull_cursor_held", reason="contacts deleted during the descending walk")

    def _filters_enabled(self) -> bool:
        remembered = None if self.memo is None else self.memo.cached_filters()
        if remembered is not None:
            return remembered
        account = self.client.fetch_account(with_=["is_api_filter_enabled"])
        enabled = account.get("is_api_filter_enabled") is not False
        self._remember_filters(enabled)
        return enabled

    def _remember_filters(self, enabled: bool) -> None:
        if self.memo is not None:
            self.memo.remember_filters(enabled)

    def _walker(self) -> Walker:
        page_size = self.config.amocrm.page_size
        # the daemon does not ask again after a 204 for "anything since the cursor?": it asks
        # again at the next poll anyway (the cursor stays)
        first = 1 if self.memo is not None else 2
        return Walker(self.client, self.sync.with_, page_size, self.ceiling, first_attempts=first)

    def _consume(self, batches: Iterator[Batch]) -> None:
        with self._read_ahead(batches) as ahead:
            for batch, chats in ahead:
                self._store_ready(batch, chats)

    @contextmanager
    def _read_ahead(
        self, batches: Iterator[Batch]
    ) -> Iterator[ReadAhead[Batch, tuple[Batch, _Chats]]]:
        """The walk runs ahead on its own thread and each page's chat links are asked for as
        soon as it arrives, so the walk's next request never waits for the database; batches
        are still stored one at a time and in order, each with its cursor. The chat links are
        asked for on one thread, page after page: a contact read twice in a run (tie passes)
        cannot have an older answer stored over a newer one."""
        links = ThreadPoolExecutor(1, thread_name_prefix="pull-chats")
        interrupted = False
        try:
            with ReadAhead(
                batches,
                depth=READ_AHEAD,
                name="pull-walk",
                prepare=lambda batch: (batch, self._chats_async(batch.items, links, new=True)),
                discard=_cancel_chats,
            ) as ahead:
                yield ahead
        except (KeyboardInterrupt, SystemExit):
            interrupted = True
            raise
        finally:  # a failed walk too ends with no lookup of its still running
            links.shutdown(wait=not interrupted, cancel_futures=True)

    # --- deletions and restores from events ---------------------------------------------------

    def _events_start(self, contacts_start: int) -> int:
        with self.engine.connect() as conn:
            state = self.runs.get_state(conn, EVENTS_CURSOR)
        if state is None:
            return contacts_start
        return max(0, int(state["created_at"]) - self.sync.overlap_s)

    def _events_unless_idle(self, start: int) -> None:
        """Deletions and restores, unless this is an idle poll of the daemon whose events were
        read less than `sync.events_interval_s` ago (see `sync.poll_memo`)."""
        memo = self.memo
        if memo is not None and self.writer.upserted == 0 and not memo.events_due():
            self.report.events = "skipped"
            return
        self._apply_events(start)

    def _apply_events(self, start: int) -> list[int]:
        """Apply deletions/restores since `start`; returns the times of the deletions."""
        began = None if self.memo is None else self.memo.now()
        self.report.events = "read"
        changes = event_changes(self._events_since(start))
        deleted = {cid: at for cid, (gone, at) in changes.items() if gone}
        restored = [cid for cid, (gone, _) in changes.items() if not gone]
        self._fetch_restored(restored)
        with self.engine.begin() as conn:
            sync_origin(conn)
            self.report.deleted += self.store.mark_deleted(conn, deleted)
            self.report.restored += self.store.mark_restored(conn, restored)
            if self.newest_event is not None:
                cursor = min(self.newest_event + 1, self.ceiling)
                self.runs.set_state(conn, EVENTS_CURSOR, {"created_at": cursor})
        if self.memo is not None and began is not None:
            self.memo.events_done(began)
        return list(deleted.values())

    def _events_since(self, start: int) -> Iterator[Mapping[str, Any]]:
        pages = self.client.iter_events(types=EVENT_TYPES, filters={"created_at": {"from": start}})
        try:
            for page in pages:  # newest first: stop at the first event before the start
                fresh = [e for e in page.items if int(e.get("created_at") or 0) >= start]
                stamps = [int(e.get("created_at") or 0) for e in fresh]
                self.newest_event = (
                    max([*stamps, self.newest_event or 0]) if stamps else (self.newest_event)
                )
                yield from fresh
                if len(fresh) < len(page.items):
                    return
        finally:
            pages.close()  # type: ignore[attr-defined]

    def _fetch_restored(self, restored: list[int]) -> None:
        if not restored:
            return
        with self.engine.connect() as conn:
            missing = sorted(self.store.deleted_ids(conn, restored))
        if missing:
            found = self.client.fetch_contacts_by_ids(missing, with_=self.sync.with_)
            self.writer.store(Batch(list(found.values()), None))

    # --- full resync ----------------------------------------------------------------------------

    def _full(self) -> None:
        self.report.mode = "full"
        with self.engine.begin() as conn:
            self.store.forget_seen(conn)  # lists left by killed runs (we hold the lock)
            total = self.store.live_count(conn)
        self.writer.seen_run = self.report.run_id
        before = self._deletions_so_far()  # amoCRM's first answer: no longer "connecting"
        # amoCRM's contact lists carry no total: the stored live contacts are the estimate
        self._start_progress(total or None, "full resync")
        pages = self.client.iter_contacts(
            order=("id", "asc"),
            with_=self.sync.with_,
            limit=self.config.amocrm.page_size,
            prefetch=self.sync.pull_workers,
        )
        self._pipeline(self._complete_pages(pages))
        self._reconcile_unseen(shifted=self._deleted_since(before))

    def _complete_pages(self, pages: Iterator[Page]) -> Iterator[list[dict[str, Any]]]:
        more = False
        for page in pages:
            more = page.has_next
            yield page.items
        if more:  # iteration ended on a 204 after a page that promised more
            raise InvariantError("amoCRM answered 204 in the middle of the full resync")

    def _pipeline(self, pages: Iterable[list[dict[str, Any]]]) -> None:
        """Store pages on `WRITERS` threads while the next pages and their chat links are being
        fetched (a full resync stores no cursor per page, so order does not matter)."""
        pending: deque[Future[None]] = deque()
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="pull-db") as writers:
            for items in pages:
                chats = self._chats_async(items)
                pending.append(writers.submit(self._store_ready, Batch(items, None), chats))
                while len(pending) > PIPELINE_DEPTH or (pending and pending[0].done()):
                    pending.popleft().result()  # bounded memory; the first failure stops the run
            while pending:
                pending.popleft().result()

    def _chats_async(
        self, items: list[dict[str, Any]], pool: ThreadPoolExecutor | None = None, new: bool = False
    ) -> _Chats:
        """The page's chat links, fetched on `pool`; with `new`, only for contacts whose listed
        version is not stored yet (a version stored before had its links read then)."""
        if not self.sync.chats or not items:
            return None
        fetch = self.writer.fetch_new_chats if new else self.writer.fetch_chats
        return (pool or self.client.pool).submit(fetch, items)

    def _store_ready(self, batch: Batch, chats: _Chats) -> None:
        self.writer.store(batch, chats=None if chats is None else chats.result())

    def _deletions_so_far(self) -> tuple[int, set[str]]:
        """Where to watch for deletions and restores from, by amoCRM's own clock (whatever ours
        says): a second before its newest such event (its newest event of any kind if the filter
        is ignored), and the ids of the events already listed from there. Same-second events and
        exclusive date bounds are both covered by the one-second margin and the id set."""
        pages = self.client.iter_events(types=EVENT_TYPES)  # newest first
        start: int | None = None
        known: set[str] = set()
        try:  # usually one request: the newest page holds that second and the one before
            for page in pages:
                for event in page.items:
                    at = int(event.get("created_at") or 0)
                    start = max(0, at - 1) if start is None else start
                    if at < start:
                        return start, known
                    known.add(str(event.get("id")))
        finally:
            pages.close()  # type: ignore[attr-defined]
        return start or 0, known

    def _deleted_since(self, before: tuple[int, set[str]]) -> bool:
        """Whether amoCRM lists a deletion or restore that was not listed before the walk, or
        the list cannot be trusted to show one.

        A deletion during the walk shifts every later contact one place towards the pages
        already read, so the one at a page's edge may never have been listed; a restore shifts
        them the other way, which skips one too when two pages in flight are answered out of
        order. Stored contacts are caught by the check of the unseen ones; a contact new since
        the cursor would not be. The list must show at least one event seen before the walk (it
        starts at or before it): if it does not, a spurious 204 or a cut list may be hiding a
        new one too.
        """
        start, known = before
        for attempt in range(2):
            listed = {str(e.get("id")): e.get("type") for e in self._events_since(start)}
            if any(kind in EVENT_TYPES for i, kind in listed.items() if i not in known):
                return True
            if known & listed.keys():
                return False
            if not known and attempt:  # empty before and twice after: nothing happened
                return False
        return bool(known)  # what was listed before is gone from the list: do not trust it

    def _reconcile_unseen(self, *, shifted: bool) -> None:
        walked_newest = self.writer.newest  # only what the walk listed may carry the cursor
        with self.engine.connect() as conn:
            unseen = self.store.unseen(conn, self.report.run_id)
            live = self.store.live_count(conn)
        found: dict[int, dict[str, Any]] = {}
        if unseen:
            found = self.client.fetch_contacts_by_ids(unseen, with_=self.sync.with_)
            self.writer.store(Batch(list(found.values()), None))
        gone = [cid for cid in unseen if cid not in found]
        allowed = max(DELETE_FLOOR, int(self.sync.max_delete_share * live))
        if len(gone) > allowed:
            raise InvariantError(
                f"full resync refused to mark {len(gone)} of {live} contacts deleted "
                f"(more than sync.max_delete_share = {self.sync.max_delete_share}); "
                "nothing was tombstoned"
            )
        # a live contact no page listed proves the listing skipped something (a shift, a 204)
        shifted = shifted or bool(found)
        now = int(time.time())
        with self.engine.begin() as conn:
            sync_origin(conn)
            self.report.deleted += self.store.mark_deleted(conn, dict.fromkeys(gone, now))
            if not shifted and walked_newest is not None:
                self.writer.set_cursor(conn, min(walked_newest + 1, self.ceiling))
            elif shifted and self.writer.cursor is None:
                # a first run: cursor 0 makes the next run an incremental walk over everything,
                # by keyset, which deletions cannot shift (a full resync again might be held
                # again on a busy account, and again)
                self.writer.set_cursor(conn, 0)
        if shifted:
            log.warning(
                "pull_cursor_held",
                reason="the listing may have skipped contacts (deleted or restored during the "
                "walk, or listed by no page)",
            )

    def _start_progress(self, total: int | None, description: str) -> None:
        if self.progress is not None:
            self.progress.start(total, description)


def _cancel_chats(prepared: tuple[Batch, _Chats]) -> None:
    """A page read ahead but never stored: its chat links are not needed any more."""
    if prepared[1] is not None:
        prepared[1].cancel()
