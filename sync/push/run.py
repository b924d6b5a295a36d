"""Push: local edits, inserted contacts and chat links go to amoCRM (issue 6).

    run_push(config, engine, client) -> PushReport

One run, under a per-schema lock:
1. **recover**: whatever a dead run left in flight (creates, chat links) is looked up in amoCRM
   through the client's duplicate-safe reconciliation; found ones get their ids, the rest are
   sent again below like any pending row;
2. **updates**: the outbox is claimed and coalesced per contact; for every ≤250 contacts one
   batched GET by `filter[id]` (each contact by id when the push has ≤5) gives amoCRM's
   current version, `sync.push.conflicts.resolve` merges
   field by field, and the fields to send go out as PATCHes of ≤`amocrm.batch_size` entities —
   several batches in flight on a small thread pool, each recorded in its own transaction;
3. **creates**: POSTs, one batch at a time, each first recorded as in flight; a create whose
   answer was lost and that amoCRM does not show yet is never resent on a guess (`posts`):
   it is held in flight for a later push (`held`), or, when amoCRM cannot be searched, waits
   for a person and the run fails at its end saying so;
4. **chat links**: POST `/contacts/chats`, likewise; with `sync.chats = false` they are kept and
   counted as held (the report's line and a warning say so);
5. **read-back**: the contacts written are read back (250 a request) and stored as a pull
   stores them, where the list shows a version at least as new as the write's answer
   (`readback`): the rows hold amoCRM's shape and columns, not the one the user wrote.
A 400 rejects a whole batch: the client resends the valid entities, the rejected contacts get
`sync_status = 'error'`. One `sync_runs` row and one `push_finished`/`push_failed` event per run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.clock import Clock, SystemClock
from sync.config import Config
from sync.core.models import RunKind, RunStatus
from sync.db.diag import error_line
from sync.db.engine import store_errors
from sync.db.inflight import drop_withdrawn_links
from sync.db.locks import LockWait
from sync.db.retries import noting_retries
from sync.db.runs import RunStore, push_lock
from sync.db.status import count_chat_links_to_push
from sync.errors import StoreError, mark_logged
from sync.logs import get_logger, log_failure
from sync.push.context import Context, Counter
from sync.push.posts import check_confirmed, push_creates, push_links, recover
from sync.push.readback import read_back
from sync.push.report import PushReport
from sync.push.updates import push_updates

log = get_logger("sync.push")


def run_push(
    config: Config,
    engine: Engine,
    client: AmoClient,
    *,
    clock: Clock | None = None,
    lock_wait: LockWait | None = None,
) -> PushReport:
    """One push of every pending local change; see the module docstring. A database failure
    is raised once, as `StoreError` with one line (the run row says `failed` when PostgreSQL
    can still record it)."""
    clock = clock or SystemClock()
    report = PushReport()
    started = clock.monotonic()
    requests_before = client.session.requests_sent  # runs in one process take turns
    schema = config.database.schema
    runs = RunStore(schema)
    with store_errors(config.database), push_lock(engine, schema, lock_wait) as lock:
        ctx = Context(config, engine, client, clock, Counter(report, requests_before), runs)
        with engine.begin() as conn:
            # a push killed earlier left its row 'running'; we hold the lock, so it is over
            runs.abandon_stale_runs(conn, (RunKind.PUSH,))
            report.run_id = runs.start_run(conn, RunKind.PUSH)
        guard_before = client.session.write_guard
        client.session.write_guard = lock.ensure_held  # before every write attempt, retries too
        notes = client.session.retry_notes  # status shows a retrying run as it retries
        try:
            with noting_retries(notes, engine, runs, report.run_id, RunKind.PUSH):
                recover(ctx)
                push_updates(ctx)
                push_creates(ctx)
                if config.sync.chats:
                    push_links(ctx)
                else:
                    _hold_links(ctx, report)
                read_back(ctx)
                check_confirmed(ctx)
            lock.ensure_held()  # a run that lost its lock never says succeeded
        except Exception as exc:
            report.requests = client.session.requests_sent - requests_before
            error = error_line(exc)  # one line: never the SQL, its parameters or a traceback
            _finish_failed(ctx, report, error)
            log_failure(log, "push_failed", error, **_summary(report, clock, started))
            mark_logged(exc)
            raise
        finally:
            client.session.write_guard = guard_before
        report.requests = client.session.requests_sent - requests_before
        _finish(ctx, report)
    log.info("push_finished", **_summary(report, clock, started))
    return report


def _hold_links(ctx: Context, report: PushReport) -> None:
    """With `sync.chats = false` local chat links are not sent (the capture triggers cannot see
    the configuration, so they are kept): say so, once per push, rather than leave them pending
    without a word."""
    with ctx.engine.begin() as conn:
        # a link deleted before it was pushed is not held (its contact may be settled now)
        drop_withdrawn_links(conn, ctx.clock.now())
        report.links_held = count_chat_links_to_push(conn)
    if report.links_held:
        log.warning(
            "chat_links_held",
            count=report.links_held,
            reason="sync.chats = false: local chat links are kept, not sent",
        )


def _finish(ctx: Context, report: PushReport, error: str | None = None) -> None:
    counts = {
        "pushed": report.pushed,
        "conflicts": report.conflicts,
        "errors": report.errors,
        "requests": report.requests,
    }
    status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
    with ctx.engine.begin() as conn:
        ctx.runs.finish_run(conn, report.run_id, status, counts, error)


def _finish_failed(ctx: Context, report: PushReport, error: str) -> None:
    """Mark the run failed (a fresh connection); if PostgreSQL is down too, say so and go on:
    the next push marks a row left 'running' failed."""
    try:
        with store_errors(ctx.config.database):
            _finish(ctx, report, error)
    except StoreError as exc:
        log.warning("push_run_not_recorded", run_id=report.run_id, error=str(exc))


def _summary(report: PushReport, clock: Clock, started: float) -> dict[str, Any]:
    return {**asdict(report), "duration_s": round(clock.monotonic() - started, 3)}


__all__ = ["PushReport", "run_push"]
