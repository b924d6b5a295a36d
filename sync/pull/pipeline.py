"""What every pull run shares: its state, the pipeline (fetch stage → bounded queue → sink)
and the reads beside it. `sync.pull.incremental` and `sync.pull.full` build on it, and
`sync.pull.run` puts one run together.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine

from sync.amo.client import AmoClient
from sync.clock import Clock, SystemClock, to_unix
from sync.config import Config
from sync.core.mapping import FieldDef
from sync.db.contacts import ContactStore
from sync.db.locks import SessionLock
from sync.db.runs import RunStore
from sync.lines import count
from sync.logs import get_logger
from sync.pull.complete import complete_now
from sync.pull.events import Events
from sync.pull.fetch import SETTLE_S, Fetcher, FetchSetup
from sync.pull.memo import PollMemo
from sync.pull.shape import Plan as ShapePlan
from sync.pull.shape import Shape
from sync.pull.sink import CompletePage, CursorKeeper, CursorState, Progress, Sink, end_marker
from sync.pull.windows import Coverage, Plan, Span

log = get_logger("sync.pull")

# complete pages waiting for the database, at most (bounds memory): with the pages the writers
# hold (up to `sink.BATCH` each), 6 pages, as when each writer held one and 4 waited
PIPELINE_DEPTH = 2
WRITERS = 2  # database transactions storing pages at once

# How long after its start a run's final pass from the start may go out: amoCRM's lists lag its
# writes by up to this, and a contact written just before the run began must be listed by it.
LIST_LAG_S = SETTLE_S
MAX_SETTLED = 64  # settled tie seconds kept in the cursor state (an older one is read again)


@dataclass
class PullReport:
    """What one run did (also in its sync_runs row and its summary log event)."""

    run_id: int
    kind: str
    mode: str = ""
    fetched: int = 0
    upserted: int = 0
    new_versions: int = 0  # of those written, versions not stored before (not refreshes)
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


class RunBase:
    """The state of one run, and the pipeline it reads through."""

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
        final_pass: bool = False,
    ) -> None:
        self.config, self.engine, self.client, self.lock = config, engine, client, lock
        self.memo, self.clock = memo, clock or SystemClock()
        self.final_pass = final_pass  # an incremental run ends with a final pass too
        self.sync = config.sync
        self.store = ContactStore(config.database.schema)
        self.runs = RunStore(config.database.schema)
        self.progress = progress
        self.requests_before = client.session.requests_sent
        self.report = PullReport(0, "pull")
        began = self.clock.now()
        self.ceiling = to_unix(began)
        # no final pass from the run's start goes out before this (our clock): see `_walk`
        self.settle_until = began.timestamp() + LIST_LAG_S
        self.events = Events(client)
        self.helpers = ThreadPoolExecutor(3, thread_name_prefix="pull-side")
        self.fields: dict[int, FieldDef] = {}
        self.old = CursorState()
        self.keeper: CursorKeeper | None = None
        self.live_before = 0  # live contacts stored when a full resync began
        self.sink: Sink | None = None
        self.shape = ShapePlan(False, Shape.of(config))  # settled at the run's start (`run.py`)

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
            # the daemon proves no 204 while its poll lists nothing at or above its cursor: the
            # cursor stays, and the next poll asks again anyway (an idle poll stays one request)
            lazy_empty=self.memo is not None and not full,
            bounds=self.old.bounds,
            # the newest page tells a big account where its data ends (to split); an account
            # known to fit in two pages would only read it twice
            top_at_start=full and self._big(),
            top_allowed=self._big(),
            final_pass=full or self.final_pass,
            settle_until=self.settle_until,
            now=lambda: self.clock.now().timestamp(),
            cursor=self.old.cursor or 0,
        )

    def _big(self) -> bool:
        """Not known to fit in two pages (a full resync knows the live contacts stored)."""
        return not 0 < self.live_before <= 2 * self.config.amocrm.page_size

    def _begin(self, spans: list[Span], *, seen_run: int | None) -> None:
        coverage = Coverage(spans)
        self.keeper = CursorKeeper(self.runs, coverage, self.old, self.ceiling)
        self.sink = Sink(
            self.config, self.engine, self.keeper, self.progress, seen_run=seen_run,
            run_id=self.report.run_id, requests=self._requests,
        )  # fmt: skip

    def _count_deleted(self, conn: Connection, deleted: int) -> None:
        """Tombstones the caller's transaction made, in the report and, committed with them,
        in the run's sync_runs row (as pages count theirs: `Sink._counted`)."""
        self.report.deleted += deleted
        if deleted:
            self.runs.add_counts(conn, self.report.run_id, {"deleted": deleted})

    def _requests(self) -> int:
        """The requests this run has sent so far (retries, refreshes and side reads too)."""
        return self.client.session.requests_sent - self.requests_before

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
        # The pages' commits are flushed (`Sink.drain`); the run's lock session still holding
        # the lock proves no crash since the run began, also where a writer's session would not
        # prove it (a pooler): else the run stops before its final cursor or tombstones.
        self.lock.ensure_held()
        self._settle(fetcher)
        return fetcher

    def _settle(self, fetcher: Fetcher) -> None:
        """Ties read by id whose second can gain no contact any more are not read again: every
        such second the next runs' overlap still reaches is kept, not only the newest (with one,
        an older bulk second in the overlap was read whole by every pull once a newer one
        settled: the soak audit). Seconds below the final cursor less `overlap_s` lie in no
        span of a later run (its spans start at its cursor less the overlap, or at a killed
        run's ceiling less it, both at or above this cursor's) and are dropped."""
        keeper = self.keeper
        assert keeper is not None
        keeper.ceiling = fetcher.amo_start()  # the cursor's cap, by amoCRM's clock
        settled = {t.second for t in fetcher.ties if t.second <= keeper.ceiling - SETTLE_S}
        reach = keeper.end() - self.sync.overlap_s
        kept = sorted(s for s in settled.union(keeper.ties_settled) if s >= reach)
        keeper.ties_settled = tuple(kept[-MAX_SETTLED:])

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


def once_per_theta(check: Any) -> Any:
    """`check(theta)` remembered per theta (each tie asks with its own)."""
    answers: dict[int, bool] = {}

    def ask(theta: int) -> bool:
        if theta not in answers:
            answers[theta] = bool(check(theta))
        return answers[theta]

    return ask
