"""One pull run: amoCRM contacts (with every embedded entity) → PostgreSQL.

    report = run_pull(config, engine, client)              # incremental (full if no cursor yet)
    report = run_pull(config, engine, client, full=True)   # full resync, reconciles deletions
    report = run_pull(config, engine, client, final_pass=True)  # incremental, as the CLI runs it
    report = serve_request(config, engine, client)         # a pending sync_requests row, if any

A run holds the single-pull lock (a second pull at the same time gets `PullBusyError`), writes
one `sync_runs` row and logs one summary event (`pull_finished` or `pull_failed`).

Both kinds run the same pipeline (`sync.pull.fetch` → bounded queue → `sync.pull.sink`) over a
list of spans of `updated_at` seconds:

* incremental: `[C - overlap, ∞)` from the cursor C, or the windows a killed run left plus its
  head; seconds up to the newest tie already read by id and settled are not read again.
  Deletions and restores come from the events (read while the walk runs; an idle poll of the
  daemon skips them, see `sync.pull.memo`), applied at the end. With `final_pass` (the CLI's
  `pull` and `sync`) it ends with a final pass as a full resync does, so every contact that
  existed throughout the run is stored when it returns, even one written just before it began
  that the lists did not show yet; a daemon poll leaves that to the next poll's overlap.
* full resync: `[0, ∞)`, the newest page at once, a final pass from the run's start (less the
  settle margin) after everything else, then every stored live contact the run did not list is
  read by id: found → stored, absent → tombstoned (unless more than `sync.max_delete_share`
  that amoCRM's deletion events do not confirm).

The account's filter flag is read while the walk runs; with filters off (the flag, or an answer
that shows it) the run switches to the fallback walks of `sync.pull.filters_off`. The parts:
`sync.pull.pipeline` (what both kinds share), `sync.pull.incremental`, `sync.pull.full`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from sqlalchemy.engine import Connection, Engine

from sync.amo.client import AmoClient
from sync.clock import Clock
from sync.config import Config
from sync.db.diag import error_line
from sync.db.engine import store_errors
from sync.db.locks import LockWait, SessionLock
from sync.db.retries import noting_retries
from sync.db.runs import CONTACTS_CURSOR, PULL_BUSY, RunStore, pull_lock
from sync.errors import SyncError, mark_logged, stopping
from sync.heap import fewer_collections
from sync.logs import get_logger, log_failure
from sync.pull import chat_form
from sync.pull.full import FullRun
from sync.pull.incremental import IncrementalRun
from sync.pull.memo import PollMemo
from sync.pull.pipeline import PullReport
from sync.pull.shape import settle
from sync.pull.sink import CursorState, Progress

log = get_logger("sync.pull")


class PullBusyError(SyncError):
    """Another pull holds the lock on this schema (the caller may try again later)."""


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
    final_pass: bool = False,
    lock_wait: LockWait | None = None,
) -> PullReport:
    """One pull run (see the module docstring). Raises `PullBusyError` if another pull runs
    (after waiting as `lock_wait` says: the CLI waits, bounded; the daemon does not).
    `final_pass`: an incremental run ends with a read of everything from the run's start (less
    the lists' lag), sent no earlier than the start plus that lag (a full resync always does)."""
    with store_errors(config.database), _locked(config, engine, lock_wait) as lock:
        return _pull(
            config, engine, client, lock, full=full, progress=progress,
            request_id=request_id, memo=memo, clock=clock, final_pass=final_pass,
        )  # fmt: skip


def serve_request(
    config: Config, engine: Engine, client: AmoClient, *, progress: Progress | None = None
) -> PullReport | None:
    """Run a full resync for the oldest pending `sync_requests` row (None if there is none).

    The request is claimed while the pull lock is held, after putting back to `pending` every
    request a killed run left `running` (so a new leader serves it)."""
    runs = RunStore(config.database.schema)
    with store_errors(config.database), _locked(config, engine, None) as lock:
        with engine.begin() as conn:
            _reopen(runs, conn, None)
            request_id = runs.claim_request(conn)
        if request_id is None:
            return None
        try:
            with store_errors(config.database):  # a driver error as StoreError, to record it
                return _pull(config, engine, client, lock, full=True, progress=progress,
                             request_id=request_id)  # fmt: skip
        except SyncError as exc:  # before the run had its row (a failed run closed it already)
            with engine.begin() as conn:
                if stopping(exc) or client.session.stopping.final:  # not done, nor failed
                    _put_back(runs, conn, request_id)
                else:
                    runs.finish_request(conn, request_id, None, str(exc))
            raise


@contextmanager
def _locked(config: Config, engine: Engine, wait: LockWait | None) -> Iterator[SessionLock]:
    with pull_lock(engine, config.database.schema, wait) as lock:
        if lock is None:
            raise PullBusyError(PULL_BUSY)
        yield lock


def _pull(
    config: Config, engine: Engine, client: AmoClient, lock: SessionLock, *, full: bool,
    request_id: int | None, progress: Progress | None = None, memo: PollMemo | None = None,
    clock: Clock | None = None, final_pass: bool = False,
) -> PullReport:  # fmt: skip
    with fewer_collections():  # pages are acyclic garbage: see sync.heap
        run = _Run(
            config, engine, client, progress, lock, memo=memo, clock=clock, final_pass=final_pass
        )
        return run.execute(full, request_id)


def _put_back(runs: RunStore, conn: Connection, request_id: int) -> None:
    if runs.put_back_request(conn, request_id):
        log.info(
            "request_put_back", request_id=request_id, reason="stopping: the next run serves it"
        )


def _reopen(runs: RunStore, conn: Connection, keep: int | None) -> None:
    reopened = runs.reopen_requests(conn, keep=keep)
    if reopened:
        log.info("requests_reopened", count=reopened, reason="their run was interrupted")


class _Run(FullRun, IncrementalRun):
    """One run: incremental or full."""

    # --- the run ------------------------------------------------------------------------------

    def execute(self, full: bool, request_id: int | None) -> PullReport:
        started = self.clock.monotonic()
        with self.engine.begin() as conn:
            self.runs.abandon_stale_runs(conn, ("pull", "full"))
            _reopen(self.runs, conn, request_id)  # requests whose run is gone: pending again
            self.old = CursorState.load(self.runs.get_state(conn, CONTACTS_CURSOR))
            self.fields = self.runs.load_fields(conn)
            # less pulled than before: emptied here; more: a full resync (`sync.pull.shape`)
            self.shape = settle(conn, self.runs, self.store, self.config)
            kind = "full" if full or self.old.cursor is None or self.shape.full else "pull"
            self.chat_form = chat_form.learn(
                conn, self.runs, self.store, self.config.amocrm.base_url,
                self.client.chats.form, pulled_before=kind != "full",
            )  # fmt: skip
            self.report = PullReport(self.runs.start_run(conn, kind), kind)
        notes = self.client.session.retry_notes  # status shows a retrying run as it retries
        try:
            with noting_retries(notes, self.engine, self.runs, self.report.run_id, kind):
                try:
                    self._full() if kind == "full" else self._incremental()
                finally:  # requests beside the walk are counted too: wait for them
                    interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt | SystemExit)
                    self.helpers.shutdown(wait=not interrupted, cancel_futures=True)
                self.lock.ensure_held()  # a run that lost its lock never says succeeded
        except BaseException as exc:
            self._finish(started, "failed", request_id, error_line(exc), stopped=stopping(exc))
            mark_logged(exc)  # pull_failed said it; the daemon's job runner must not repeat it
            raise
        self._finish(started, "succeeded", request_id, None)
        return self.report

    def _finish(
        self, started: float, status: str, request_id: int | None, error: str | None,
        *, stopped: bool = False,
    ) -> None:  # fmt: skip
        report = self.report
        report.duration_s = round(self.clock.monotonic() - started, 3)
        # every request this run sent, retries, prefetches past the end and refreshes included
        # (runs in one process take turns: the daemon has one worker)
        report.requests = self._requests()
        report.cursor = None if self.keeper is None else self.keeper.cursor
        if self.sink is not None:
            report.fetched, report.upserted = self.sink.fetched, self.sink.upserted
            report.new_versions = self.sink.new_versions
        counts = {k: v for k, v in asdict(report).items() if isinstance(v, int)}
        with self.engine.begin() as conn:
            self.runs.finish_run(conn, report.run_id, status, counts, error)
            chat_form.keep(
                conn, self.runs, self.config.amocrm.base_url, self.client.chats.form, self.chat_form
            )
            if report.kind == "full":  # (its shape is recorded once every contact is stored)
                self.store.forget_seen(conn, report.run_id)
            # cut short by a stop (the daemon's, or SIGTERM/SIGINT to a command: a final stop
            # of its session): not done, nor failed, so the next run serves it
            stopped = stopped or (error is not None and self.client.session.stopping.final)
            if request_id is not None and stopped:
                _put_back(self.runs, conn, request_id)
            elif request_id is not None:
                self.runs.finish_request(conn, request_id, report.run_id, error)
        asked = {} if request_id is None else {"request_id": request_id}  # a requested resync
        if error is None:
            log.info("pull_finished", **asdict(report), **asked, error=None)
        else:
            log_failure(log, "pull_failed", error, **asdict(report), **asked)
