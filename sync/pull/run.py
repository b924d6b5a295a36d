"""One pull run: amoCRM contacts (with every embedded entity) → PostgreSQL.

    report = run_pull(config, engine, client)              # incremental (full if no cursor yet)
    report = run_pull(config, engine, client, full=True)   # full resync, reconciles deletions
    report = serve_request(config, engine, client)         # a pending sync_requests row, if any

A run holds the single-pull lock (a second pull at the same time gets `PullBusyError`), writes
one `sync_runs` row and logs one summary event (`pull_finished` or `pull_failed`).

Both kinds run the same pipeline (`sync.pull.fetch` → bounded queue → `sync.pull.sink`) over a
list of spans of `updated_at` seconds:

* incremental: `[C - overlap, ∞)` from the cursor C, or the windows a killed run left plus its
  head; seconds up to the newest tie already read by id and settled are not read again.
  Deletions and restores come from the events (read while the walk runs; an idle poll of the
  daemon skips them, see `sync.pull.memo`), applied at the end.
* full resync: `[0, ∞)`, the newest page at once, a final pass from the run's start (less the
  settle margin) after everything else, then every stored live contact the run did not list is
  read by id: found → stored, absent → tombstoned (unless more than `sync.max_delete_share`).

The account's filter flag is read while the walk runs; with filters off (the flag, or an answer
that shows it) the run switches to the fallback walks of `sync.pull.filters_off`.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.clock import Clock, SystemClock, to_unix
from sync.config import Config
from sync.core.mapping import FieldDef, event_changes
from sync.db.contacts import ContactStore
from sync.db.diag import error_line
from sync.db.engine import store_errors, sync_origin
from sync.db.locks import SessionLock
from sync.db.runs import CONTACTS_CURSOR, EVENTS_CURSOR, RunStore, pull_lock
from sync.errors import InvariantError, SyncError, mark_logged
from sync.heap import fewer_collections
from sync.lines import count
from sync.logs import get_logger
from sync.pull.events import Events, Marker
from sync.pull.fetch import SETTLE_S, Fetcher, FetchSetup, FiltersIgnored, complete_now
from sync.pull.filters_off import by_id, descending
from sync.pull.memo import PollMemo
from sync.pull.readahead import ReadAhead
from sync.pull.sink import CompletePage, CursorKeeper, CursorState, Progress, Sink, end_marker
from sync.pull.windows import Coverage, Plan, Span, start_after

log = get_logger("sync.pull")

DELETE_FLOOR = 10  # a full resync may always tombstone this many contacts, whatever the share
PIPELINE_DEPTH = 4  # complete pages waiting for the database, at most (bounds memory)
WRITERS = 2  # database transactions storing pages at once
READ_AHEAD = 2  # pages the descending fallback reads ahead of the one being stored


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
    clock: Clock | None = None,
) -> PullReport:
    """One pull run (see the module docstring). Raises `SyncError` if another pull runs."""
    schema = config.database.schema
    with store_errors(config.database), pull_lock(engine, schema) as lock:
        if lock is None:
            raise PullBusyError("another pull is running on this database schema; try again later")
        with fewer_collections():  # pages are acyclic garbage: see sync.heap
            run = _Run(config, engine, client, progress, lock, memo=memo, clock=clock)
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
        clock: Clock | None = None,
    ) -> None:
        self.config, self.engine, self.client, self.lock = config, engine, client, lock
        self.memo, self.clock = memo, clock or SystemClock()
        self.sync = config.sync
        self.store = ContactStore(config.database.schema)
        self.runs = RunStore(config.database.schema)
        self.progress = progress
        self.requests_before = client.session.requests_sent
        self.report = PullReport(0, "pull")
        self.ceiling = to_unix(self.clock.now())
        self.events = Events(client)
        self.helpers = ThreadPoolExecutor(3, thread_name_prefix="pull-side")
        self.fields: dict[int, FieldDef] = {}
        self.old = CursorState()
        self.keeper: CursorKeeper | None = None
        self.live_before = 0  # live contacts stored when a full resync began
        self.sink: Sink | None = None

    # --- the run ------------------------------------------------------------------------------

    def execute(self, full: bool, request_id: int | None) -> PullReport:
        started = self.clock.monotonic()
        with self.engine.begin() as conn:
            self.runs.abandon_stale_runs(conn, ("pull", "full"))
            self.old = CursorState.load(self.runs.get_state(conn, CONTACTS_CURSOR))
            self.fields = self.runs.load_fields(conn)
            kind = "full" if full or self.old.cursor is None else "pull"
            self.report = PullReport(self.runs.start_run(conn, kind), kind)
        try:
            try:
                self._full() if kind == "full" else self._incremental()
            finally:  # requests beside the walk are counted too: wait for them
                interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt | SystemExit)
                self.helpers.shutdown(wait=not interrupted, cancel_futures=True)
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
        report.duration_s = round(self.clock.monotonic() - started, 3)
        # every request this run sent, retries, prefetches past the end and refreshes included
        # (runs in one process take turns: the daemon has one worker)
        report.requests = self.client.session.requests_sent - self.requests_before
        report.cursor = None if self.keeper is None else self.keeper.cursor
        if self.sink is not None:
            report.fetched, report.upserted = self.sink.fetched, self.sink.upserted
        counts = {k: v for k, v in asdict(report).items() if isinstance(v, int)}
        with self.engine.begin() as conn:
            self.runs.finish_run(conn, report.run_id, status, counts, error)
            if report.kind == "full":
                self.store.forget_seen(conn, report.run_id)
            if request_id is not None:
                self.runs.finish_request(conn, request_id, report.run_id, error)
        event = "pull_finished" if error is None else "pull_failed"
        log_fn = log.info if error is None else log.error
        asked = {} if request_id is None else {"request_id": request_id}  # a requested resync
        log_fn(event, **asdict(report), **asked, error=error)

    def _start_progress(self, total: int | None, description: str) -> None:
        if self.progress is not None:
            self.progress.start(total, description)

    # --- the pipeline -------------------------------------------------------------------------

    def _setup(self, *, full: bool) -> FetchSetup:
        return FetchSetup(
            with_=self.sync.with_,
            page_size=self.config.amocrm.page_size,
            workers=self.sync.pull_workers,
            ceiling=self.ceiling,
            chats=self.sync.chats,
            new_chats_only=not full,
            # the daemon does not ask again after a 204 for "anything since the cursor?": it
            # asks again at the next poll anyway (the cursor stays)
            first_attempts=1 if self.memo is not None and not full else 2,
            bounds=self.old.bounds,
            # the newest page tells a big account where its data ends (to split); an account
            # known to fit in two pages would only read it twice
            top_at_start=full and self._big(),
            top_allowed=self._big(),
            final_pass=full,
            now=lambda: self.clock.now().timestamp(),
        )

    def _big(self) -> bool:
        """Not known to fit in two pages (a full resync knows the live contacts stored)."""
        return not 0 < self.live_before <= 2 * self.config.amocrm.page_size

    def _begin(self, spans: list[Span], *, seen_run: int | None) -> None:
        coverage = Coverage(spans)
        self.keeper = CursorKeeper(self.runs, coverage, self.old, self.ceiling)
        self.sink = Sink(self.config, self.engine, self.keeper, self.progress, seen_run=seen_run)

    def _walk(
        self,
        spans: list[Span],
        setup: FetchSetup,
        *,
        baseline: Any,
        deleted_since: Any,
        filters_off: Any,
        answered: Any = None,
    ) -> Fetcher:
        """Run the fetch stage and the sink until every span is read; raise the first failure."""
        keeper, sink = self.keeper, self.sink
        assert keeper is not None
        assert sink is not None
        plan = Plan.of(spans, self.ceiling, setup.page_size)
        for window in plan.windows:
            window.first = setup.first_attempts
        pages: queue.Queue[Any] = queue.Queue(maxsize=PIPELINE_DEPTH)
        failed = threading.Event()

        def offer(page: CompletePage) -> bool:
            try:
                pages.put_nowait(page)
            except queue.Full:
                return False
            return True

        fetcher = Fetcher(
            self.client,
            setup,
            plan,
            self.fields,
            stamp=keeper.stamp,
            offer=offer,
            stored_versions=self._stored_versions,
            baseline=baseline,
            deleted_since=deleted_since,
            stop=failed,
            filters_off=filters_off,
            answered=answered or (lambda: None),
        )
        first = min(plan.windows, key=lambda w: w.pos, default=None)
        if setup.bounds is None and first is not None and first.pos > (self.old.cursor or 0):
            fetcher.unproven_start(first)
        sink_error: list[BaseException] = []

        def drain() -> None:
            try:
                sink.drain(pages, WRITERS, failed)
            except BaseException as exc:  # noqa: BLE001 - raised on the run's thread below
                sink_error.append(exc)
                failed.set()

        writer = threading.Thread(target=drain, name="pull-sink", daemon=True)
        writer.start()
        try:
            fetcher.run()
        except BaseException:
            failed.set()
            raise
        finally:
            pages.put(end_marker())
            writer.join()
            if sink_error:
                raise sink_error[0]
            keeper.bounds = fetcher.bounds
            self.fields = fetcher.fields
        self._settle(fetcher)
        return fetcher

    def _settle(self, fetcher: Fetcher) -> None:
        """Ties read by id whose second can gain no contact any more are not read again."""
        assert self.keeper is not None
        self.keeper.ceiling = fetcher.amo_start()  # the cursor's cap, by amoCRM's clock
        settled = [t.second for t in fetcher.ties if t.second <= self.keeper.ceiling - SETTLE_S]
        if settled:
            self.keeper.tie_settled = max([*settled, self.keeper.tie_settled or 0])

    def _stored_versions(self, ids: list[int]) -> dict[int, int]:
        with self.engine.connect() as conn:
            return self.store.stored_versions(conn, ids)

    def _complete(self, items: list[dict[str, Any]], *, full: bool) -> CompletePage:
        setup = self._setup(full=full)
        page, self.fields = complete_now(
            self.client, setup, self.fields, items, stored_versions=self._stored_versions
        )
        return page

    def _store_now(self, page: CompletePage) -> None:
        assert self.keeper is not None
        assert self.sink is not None
        self.sink.store(self.keeper.stamp(page))

    def _filters_check(self) -> Any:
        """A check for the walk's loop: False until the account's flag says filters are off.
        The flag is asked for on the first call (after the walk's first requests went out);
        the daemon's remembered flag asks nothing."""
        remembered = None if self.memo is None else self.memo.cached_filters()
        if remembered is not None:
            return lambda: not remembered
        asked: list[Future[bool]] = []

        def off() -> bool:
            if not asked:
                asked.append(self.helpers.submit(self._read_filters))
            return asked[0].done() and not asked[0].result()

        return off

    def _read_filters(self) -> bool:
        account = self.client.fetch_account(with_=["is_api_filter_enabled"])
        enabled = account.get("is_api_filter_enabled") is not False
        self._remember_filters(enabled)
        return enabled

    def _remember_filters(self, enabled: bool) -> None:
        if self.memo is not None:
            self.memo.remember_filters(enabled)

    # --- incremental --------------------------------------------------------------------------

    def _incremental(self) -> None:
        old = self.old
        assert old.cursor is not None
        overlap = self.sync.overlap_s
        start = max(0, old.cursor - overlap)
        if old.windows and old.ceiling is not None:  # a killed run: its windows and its head
            spans: list[Span] = [*old.windows, (max(0, old.ceiling - overlap), None)]
        else:
            spans = [(start, None)]
        if old.tie_settled is not None:
            spans = start_after(spans, min(old.tie_settled + 1, old.cursor))
        self._begin(spans, seen_run=None)
        events_from = self._events_start(start)
        side: list[Future[list[Mapping[str, Any]]]] = []  # the events, once amoCRM answered
        due = self.memo is None or self.memo.events_due()

        def answered() -> None:  # amoCRM's first answer: no longer "connecting"
            self._start_progress(None, "pulling changes")
            if due and not side:
                side.append(self.helpers.submit(self.events.since, events_from))

        filters_off = self._filters_check()
        if self.memo is not None and self.memo.cached_filters() is False:
            self._descending(start, events_from)
            return
        self.report.mode = "keyset"
        marker: list[Marker] = []

        def baseline() -> None:
            if side:
                known = {str(e.get("id")) for e in side[0].result()}
                marker.append(Marker(events_from, known))
            else:
                marker.append(self.events.marker())

        try:
            self._walk(
                spans,
                self._setup(full=False),
                baseline=baseline,
                deleted_since=_once(lambda theta: self.events.new_deletion(marker[0], theta)),
                filters_off=filters_off,
                answered=answered,
            )
        except FiltersIgnored as exc:
            log.warning("pull_filter_ignored", detail=str(exc))
            self._remember_filters(False)
            self._descending(start, events_from)
            return
        self._events_unless_idle(events_from, side[0] if side else None)

    def _events_start(self, contacts_start: int) -> int:
        with self.engine.connect() as conn:
            state = self.runs.get_state(conn, EVENTS_CURSOR)
        if state is None:
            return contacts_start
        return max(0, int(state["created_at"]) - self.sync.overlap_s)

    def _events_unless_idle(
        self, start: int, listed: Future[list[Mapping[str, Any]]] | None
    ) -> None:
        """Apply deletions and restores, unless this is an idle poll of the daemon whose events
        were read less than `sync.events_interval_s` ago (see `sync.pull.memo`); the final
        cursor state goes in the same transaction."""
        assert self.sink is not None
        memo = self.memo
        if listed is None and memo is not None and self.sink.upserted == 0:
            self.report.events = "skipped"
            self._apply([], None)
            return
        began = None if memo is None else memo.now()
        events = listed.result() if listed is not None else self.events.since(start)
        events = [*events, *self.events.later]  # listed after the walk's ties: newer
        self.report.events = "read"
        self._apply(events, self.events.newest)
        if memo is not None and began is not None:
            memo.events_done(began)

    def _apply(self, events: list[Mapping[str, Any]], newest: int | None) -> list[int]:
        """Deletions/restores, the events cursor and the final contacts state, in one
        transaction (restored contacts missing locally are fetched by id first). Returns the
        times of the deletions."""
        assert self.keeper is not None
        changes = self._settle_unsure(event_changes(events))
        deleted = {cid: at for cid, (gone, at) in changes.items() if gone}
        restored = [cid for cid, (gone, _) in changes.items() if not gone]
        self._fetch_restored(restored)
        with self.engine.begin() as conn:
            sync_origin(conn)
            self.report.deleted += self.store.mark_deleted(conn, deleted)
            self.report.restored += self.store.mark_restored(conn, restored)
            if newest is not None:
                cursor = min(newest + 1, self.keeper.ceiling)
                self.runs.set_state(conn, EVENTS_CURSOR, {"created_at": cursor})
            self.keeper.store_final(conn, complete=True)
        return list(deleted.values())

    def _settle_unsure(
        self, changes: dict[int, tuple[bool | None, int]]
    ) -> dict[int, tuple[bool, int]]:
        """A contact deleted and restored in the same second: amoCRM says by id which came
        last (found: live, and stored now; absent: deleted)."""
        unsure = sorted(cid for cid, (gone, _) in changes.items() if gone is None)
        found = self.client.fetch_contacts_by_ids(unsure, with_=self.sync.with_) if unsure else {}
        if found:
            self._store_now(self._complete(list(found.values()), full=False))
        return {
            cid: ((cid not in found) if gone is None else gone, at)
            for cid, (gone, at) in changes.items()
        }

    def _fetch_restored(self, restored: list[int]) -> None:
        if not restored:
            return
        with self.engine.connect() as conn:
            missing = sorted(self.store.deleted_ids(conn, restored))
        if missing:
            found = self.client.fetch_contacts_by_ids(missing, with_=self.sync.with_)
            self._store_now(self._complete(list(found.values()), full=False))

    def _descending(self, start: int, events_from: int) -> None:
        """The walk for accounts whose filters are ignored; the cursor waits for the events."""
        assert self.keeper is not None
        self.report.mode = "descending"
        self._start_progress(None, "pulling changes (newest first)")
        walk_started = to_unix(self.clock.now())
        walk = descending(self.client, self.sync.with_, self.config.amocrm.page_size, start)
        with ReadAhead(
            walk, depth=READ_AHEAD, name="pull-walk", prepare=self._listed_page
        ) as ahead:
            for page in ahead:
                self._store_now(page)
        events = self.events.since(events_from)
        self.report.events = "read"
        newest = self.keeper.newest
        # deletions after the walk began may have shifted pages; the threshold takes the smaller
        # of our clock and amoCRM's (the newest updated_at read), so clock skew cannot hide one
        since = min(walk_started, newest or walk_started) - 1
        changes = event_changes(events)
        late = any(gone is not False and at >= since for gone, at in changes.values())
        if late:
            log.warning("pull_cursor_held", reason="contacts deleted during the descending walk")
            self.keeper.newest = None  # the final state keeps the old cursor
        self._apply(events, self.events.newest)

    def _listed_page(self, items: list[dict[str, Any]]) -> CompletePage:
        page = self._complete(items, full=False)
        page.listed = True
        return page

    # --- full resync ----------------------------------------------------------------------------

    def _full(self) -> None:
        self.report.mode = "full"
        with self.engine.begin() as conn:
            self.store.forget_seen(conn)  # lists left by killed runs (we hold the lock)
            total = self.live_before = self.store.live_count(conn)
        self._begin([(0, None)], seen_run=self.report.run_id)
        # amoCRM's contact lists carry no total: the stored live contacts are the estimate;
        # shown from amoCRM's first answer on (until then the bar says it is connecting)
        started = lambda: self._start_progress(total or None, "full resync")  # noqa: E731
        filters_off = self._filters_check()
        if self.memo is not None and self.memo.cached_filters() is False:
            self._full_by_id()
            return
        marker: list[Marker] = []
        try:
            self._walk(
                [(0, None)],
                self._setup(full=True),
                baseline=lambda: marker.append(self.events.marker()),
                deleted_since=_once(
                    lambda theta: Events(self.client).new_deletion(marker[0], theta)
                ),
                filters_off=filters_off,
                answered=started,
            )
        except FiltersIgnored as exc:
            log.warning("pull_filter_ignored", detail=str(exc))
            self._remember_filters(False)
            self._full_by_id()
            return
        self._reconcile_unseen(shifted=False)

    def _full_by_id(self) -> None:
        """The full resync of accounts whose filters are ignored (`sync.pull.filters_off`)."""
        self.report.mode = "full-by-id"
        self._start_progress(None, "full resync (by id)")
        before = self.events.marker()
        pages = by_id(
            self.client, self.sync.with_, self.config.amocrm.page_size, self.sync.pull_workers
        )
        with ReadAhead(pages, depth=READ_AHEAD, name="pull-walk", prepare=self._full_page) as ahead:
            for page in ahead:
                self._store_now(page)
        self._reconcile_unseen(shifted=self.events.moved_since(before))

    def _full_page(self, items: list[dict[str, Any]]) -> CompletePage:
        page = self._complete(items, full=True)
        page.listed = True
        return page

    def _reconcile_unseen(self, *, shifted: bool) -> None:
        """Stored live contacts this run did not list: read by id; found → stored, absent →
        tombstoned (the guard first). The final cursor state goes with the tombstones."""
        assert self.keeper is not None
        with self.engine.connect() as conn:
            unseen = self.store.unseen(conn, self.report.run_id)
            live = self.store.live_count(conn)
        found: dict[int, dict[str, Any]] = {}
        if unseen:
            found = self.client.fetch_contacts_by_ids(unseen, with_=self.sync.with_)
            self._store_now(self._complete(list(found.values()), full=True))
        gone = [cid for cid in unseen if cid not in found]
        allowed = max(DELETE_FLOOR, int(self.sync.max_delete_share * live))
        if len(gone) > allowed:
            raise InvariantError(
                f"full resync refused to mark {len(gone)} of {live} contacts deleted "
                f"(more than sync.max_delete_share = {self.sync.max_delete_share}); "
                "nothing was tombstoned"
            )
        # filters off: a live contact no page listed proves the listing skipped something
        shifted = shifted or (self.report.mode == "full-by-id" and bool(found))
        now = to_unix(self.clock.now())
        with self.engine.begin() as conn:
            sync_origin(conn)
            self.report.deleted += self.store.mark_deleted(conn, dict.fromkeys(gone, now))
            if not shifted:
                self.keeper.store_final(conn, complete=True)
            elif self.old.cursor is None:
                # a first run: cursor 0 makes the next run an incremental walk over everything
                self.runs.set_state(conn, CONTACTS_CURSOR, {"updated_at": 0})
                self.keeper.cursor = 0
        if shifted:
            log.warning(
                "pull_cursor_held",
                reason="the listing may have skipped contacts (deleted or restored during the "
                "walk, or listed by no page)",
            )


def _once(check: Any) -> Any:
    """`check(theta)` remembered per theta (each tie asks with its own)."""
    answers: dict[int, bool] = {}

    def ask(theta: int) -> bool:
        if theta not in answers:
            answers[theta] = bool(check(theta))
        return answers[theta]

    return ask
