"""Push: local edits, inserted contacts and chat links go to amoCRM (issue 6).

    run_push(config, engine, client) -> PushReport

One run, under a per-schema lock:
1. **recover**: whatever a dead run left in flight (creates, chat links) is looked up in amoCRM
   through the client's duplicate-safe reconciliation; found ones get their ids, the rest are
   sent again below like any pending row;
2. **updates**: the outbox is claimed and coalesced per contact; for every ≤250 contacts one
   batched GET by `filter[id]` gives amoCRM's current version, `sync.conflicts.resolve` merges
   field by field, and the fields to send go out as PATCHes of ≤`amocrm.batch_size` entities —
   several batches in flight on a small thread pool, each recorded in its own transaction;
3. **creates**: POSTs, one batch at a time, each first recorded as in flight;
4. **chat links**: POST `/contacts/chats`, likewise.
A 400 rejects a whole batch: the client resends the valid entities, the rejected contacts get
`sync_status = 'error'`. One `sync_runs` row and one `push_finished`/`push_failed` event per run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine

from sync.amo.client import AmoClient
from sync.amo.writes import WriteResult
from sync.cf_shape import ShapeError
from sync.clock import Clock, SystemClock
from sync.config import Config
from sync.db import inflight, outbox
from sync.db.diag import error_line
from sync.db.engine import store_errors
from sync.db.inflight import Done, PendingCreate, PendingLink
from sync.db.lockwait import retrying
from sync.db.runs import RunStore, push_lock
from sync.errors import AmoError, AmoRejectedError, StoreError, mark_logged
from sync.logs import get_logger
from sync.models import RunKind, RunStatus
from sync.push_fresh import plan_current
from sync.push_items import PendingUpdate, UpdateOutcome
from sync.push_plan import UpdatePlan, plan_update, to_create_payload
from sync.push_pool import ReadThenWrite
from sync.push_report import PushReport, tally

log = get_logger("sync.push")
FETCH_CHUNK = 250  # contacts per GET by filter[id] (amoCRM's page maximum)


class _Counter:
    def __init__(self, report: PushReport) -> None:
        self.report = report
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.report, name, getattr(self.report, name) + value)


@dataclass(frozen=True)
class _Context:
    config: Config
    engine: Engine
    client: AmoClient
    clock: Clock
    count: _Counter
    runs: RunStore


def run_push(
    config: Config, engine: Engine, client: AmoClient, *, clock: Clock | None = None
) -> PushReport:
    """One push of every pending local change; see the module docstring. A database failure
    is raised once, as `StoreError` with one line (the run row says `failed` when PostgreSQL
    can still record it)."""
    clock = clock or SystemClock()
    report = PushReport()
    started = clock.monotonic()
    requests_before = client.session.requests_sent  # runs in one process take turns
    runs = RunStore(config.database.schema)
    with store_errors(config.database), push_lock(engine, config.database.schema) as lock:
        ctx = _Context(config, engine, client, clock, _Counter(report), runs)
        with engine.begin() as conn:
            # a push killed earlier left its row 'running'; we hold the lock, so it is over
            runs.abandon_stale_runs(conn, (RunKind.PUSH,))
            report.run_id = runs.start_run(conn, RunKind.PUSH)
        guard_before = client.session.write_guard
        client.session.write_guard = lock.ensure_held  # before every write attempt, retries too
        try:
            _recover(ctx)
            _push_updates(ctx)
            _push_creates(ctx)
            if config.sync.chats:
                _push_links(ctx)
            lock.ensure_held()  # a run that lost its lock never says succeeded
        except Exception as exc:
            report.requests = client.session.requests_sent - requests_before
            error = error_line(exc)  # one line: never the SQL, its parameters or a traceback
            _finish_failed(ctx, report, error)
            log.error("push_failed", error=error, **_summary(report, clock, started))
            mark_logged(exc)
            raise
        finally:
            client.session.write_guard = guard_before
        report.requests = client.session.requests_sent - requests_before
        _finish(ctx, report)
    log.info("push_finished", **_summary(report, clock, started))
    return report


def _finish(ctx: _Context, report: PushReport, error: str | None = None) -> None:
    counts = {
        "pushed": report.pushed,
        "conflicts": report.conflicts,
        "errors": report.errors,
        "requests": report.requests,
    }
    status = RunStatus.FAILED if error else RunStatus.SUCCEEDED
    with ctx.engine.begin() as conn:
        ctx.runs.finish_run(conn, report.run_id, status, counts, error)


def _finish_failed(ctx: _Context, report: PushReport, error: str) -> None:
    """Mark the run failed (a fresh connection); if PostgreSQL is down too, say so and go on:
    the next push marks a row left 'running' failed."""
    try:
        with store_errors(ctx.config.database):
            _finish(ctx, report, error)
    except StoreError as exc:
        log.warning("push_run_not_recorded", run_id=report.run_id, error=str(exc))


def _summary(report: PushReport, clock: Clock, started: float) -> dict[str, Any]:
    return {**asdict(report), "duration_s": round(clock.monotonic() - started, 3)}


# --- 1. recovery of a dead run's POSTs -----------------------------------------------------------


def _recover(ctx: _Context) -> None:
    with ctx.engine.begin() as conn:
        state = inflight.load_in_flight(conn)
    creates, links = state.get("creates"), state.get("links")
    if creates:
        _recover_creates(ctx, creates)
    if links:
        _recover_links(ctx, links)


def _recover_creates(ctx: _Context, entry: Mapping[str, Any]) -> None:
    payloads = [dict(p) for p in entry["items"].values()]
    found = ctx.client.recover_creates(payloads, entry.get("floor"))
    temps = [int(p["request_id"]) for p in payloads]
    with ctx.engine.begin() as conn:
        pending = {p.temp_id: p for p in inflight.claim_creates(conn, include_errors=True)}
        done = [
            Done(int(rid), r.id, pending[int(rid)].change_ids)
            for rid, r in found.items()
            if int(rid) in pending  # a row deleted locally meanwhile has nothing to swap
        ]
        inflight.record_created(conn, done, ctx.clock.now())
        inflight.forget_sent(conn, "creates", temps)
    ctx.count.add(recovered=len(done), created=len(done))
    log.warning("push_creates_recovered", sent=len(payloads), found=len(found))


def _recover_links(ctx: _Context, entry: Mapping[str, Any]) -> None:
    payloads = [dict(p) for p in entry["items"].values()]
    found = ctx.client.recover_links(payloads)
    with ctx.engine.begin() as conn:
        pending = {p.temp_id: p for p in inflight.claim_links(conn)}
        done = [
            Done(int(rid), r.id, pending[int(rid)].change_ids)
            for rid, r in found.items()
            if int(rid) in pending
        ]
        inflight.record_linked(conn, done)
        inflight.forget_sent(conn, "links", [int(p["request_id"]) for p in payloads])
    ctx.count.add(recovered=len(done), linked=len(done))


# --- 2. updates ----------------------------------------------------------------------------------


def _push_updates(ctx: _Context) -> None:
    with ctx.engine.begin() as conn:
        pending = outbox.claim_updates(conn)
    if not pending:
        return
    chunks = [pending[i : i + FETCH_CHUNK] for i in range(0, len(pending), FETCH_CHUNK)]
    work: ReadThenWrite[list[PendingUpdate], list[UpdatePlan]] = ReadThenWrite(
        chunks, lambda chunk: _plan_chunk(ctx, chunk), lambda batch: _send_update_batch(ctx, batch)
    )
    work.run(ctx.config.sync.push_workers)


def _plan_chunk(ctx: _Context, chunk: list[PendingUpdate]) -> list[list[UpdatePlan]]:
    """amoCRM's versions (one GET, re-read by id where it may lag); record what needs no PATCH
    (or cannot be sent); return the PATCH batches. Each contact is planned on its own: one bad
    row never stops the rest."""
    plans, deferred = plan_current(
        ctx.client, chunk, lambda pending, remote: _plan_one(ctx, pending, remote)
    )
    ctx.count.add(deferred=len(deferred))
    _record_updates(ctx, [plan.outcome() for plan in plans if plan.entity is None])
    to_send = [plan for plan in plans if plan.entity is not None]
    size = ctx.config.amocrm.batch_size
    return [to_send[start : start + size] for start in range(0, len(to_send), size)]


def _plan_one(
    ctx: _Context, pending: PendingUpdate, remote: Mapping[str, Any] | None
) -> UpdatePlan:
    """The contact's plan; a row that cannot be sent gets a plan that records why."""
    policy, overrides = ctx.config.sync.conflict_policy, ctx.config.sync.conflict_fields_map
    try:
        return plan_update(pending, remote, policy, overrides)
    except Exception as exc:  # noqa: BLE001 - one contact's bad row must not stop the others
        return UpdatePlan.invalid_row(pending, _invalid(pending.contact_id, exc))


def _invalid(contact_id: int, exc: Exception) -> str:
    """The one-line reason for a row push cannot send (logged without any of its values)."""
    if isinstance(exc, ShapeError):
        reason = f"not sent: {exc}"
    else:
        reason = f"not sent: push could not plan this change ({type(exc).__name__})"
    log.warning("push_row_invalid", contact_id=contact_id, reason=reason)
    return reason


def _send_update_batch(ctx: _Context, batch: Sequence[UpdatePlan]) -> None:
    entities = [plan.entity for plan in batch if plan.entity is not None]
    results, rejected, failure = _send(
        ctx, lambda: ctx.client.update_contacts(entities, batch_size=len(entities))
    )
    by_id = {r.request_id: r for r in results}
    outcomes = []
    for plan in batch:
        rid = str(plan.pending.contact_id)  # the entity's request_id
        if rid in by_id:
            outcomes.append(plan.outcome(by_id[rid].updated_at))
        elif rid in rejected:
            outcomes.append(plan.rejected(_message(rejected[rid])))
    _record_updates(ctx, outcomes)
    if failure is not None:
        raise failure


def _record_updates(ctx: _Context, outcomes: Sequence[UpdateOutcome]) -> None:
    if not outcomes:
        return
    _record(ctx, lambda conn: outbox.record_updates(conn, outcomes, ctx.clock.now()))
    ctx.count.add(**tally(outcomes))


def _record(ctx: _Context, work: Callable[[Connection], None]) -> None:
    """Record what amoCRM accepted, in one transaction; a lock another session holds (an
    analyst's `SELECT … FOR UPDATE`) delays the record with back-off instead of failing the run."""

    def attempt() -> None:
        with ctx.engine.begin() as conn:
            work(conn)

    retrying(attempt, ctx.clock.sleep)


def _send(
    ctx: _Context,
    write: Callable[[], list[WriteResult]],
) -> tuple[list[WriteResult], Mapping[str, Sequence[Mapping[str, str]]], AmoError | None]:
    """A batched write's results, the entities amoCRM rejected (by request_id), and a failure to
    raise once what did get through is recorded. The session's `write_guard` (set by
    `run_push`) raises `LockLostError` before every attempt when the push lock's session is
    gone (a second push may be sending the same edits)."""
    try:
        return write(), {}, None
    except AmoRejectedError as exc:
        return _results(exc), exc.errors_by_request_id, None
    except AmoError as exc:
        return _results(exc), {}, exc


def _results(exc: AmoError) -> list[WriteResult]:
    return [r for r in exc.results if isinstance(r, WriteResult)]


def _message(errors: Sequence[Mapping[str, str]]) -> str:
    parts = []
    for error in errors:
        path, detail = error.get("path") or "", error.get("detail") or error.get("code") or ""
        parts.append(f"{path}: {detail}" if path else detail)
    return "amoCRM rejected the change: " + "; ".join(parts)


# --- 3. creates ----------------------------------------------------------------------------------


def _push_creates(ctx: _Context) -> None:
    with ctx.engine.begin() as conn:
        pending = inflight.claim_creates(conn)
    if not pending:
        return
    floor = ctx.client.newest_contact_id()
    size = ctx.config.amocrm.batch_size
    for start in range(0, len(pending), size):
        floor = _create_batch(ctx, pending[start : start + size], floor)


def _create_batch(ctx: _Context, batch: list[PendingCreate], floor: int | None) -> int | None:
    payloads, invalid = _create_payloads(batch)
    batch = [p for p in batch if p.temp_id in payloads]
    with ctx.engine.begin() as conn:
        inflight.mark_errors(conn, invalid)
        if payloads:
            inflight.mark_sending(conn, "creates", payloads, ctx.clock.now(), floor)
    ctx.count.add(errors=len(invalid))
    if not payloads:
        return floor
    results, rejected, failure = _send(
        ctx, lambda: ctx.client.create_contacts(list(payloads.values()), batch_size=len(batch))
    )
    done = [Done(p.temp_id, r.id, p.change_ids) for p in batch for r in results
            if r.request_id == str(p.temp_id)]  # fmt: skip
    errors = {int(rid): _message(errs) for rid, errs in rejected.items()}
    new_floor = max([d.real_id for d in done], default=None)
    settled = [d.temp_id for d in done] + list(errors)

    def record(conn: Connection) -> None:
        inflight.record_created(conn, done, ctx.clock.now())
        inflight.mark_errors(conn, errors)
        inflight.forget_sent(conn, "creates", settled, floor=new_floor)

    _record(ctx, record)
    ctx.count.add(created=len(done), errors=len(errors))
    if failure is not None:
        raise failure
    return new_floor if new_floor is not None else floor


def _create_payloads(
    batch: Sequence[PendingCreate],
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """POST entities by temporary id, and the reasons of the new contacts that cannot be sent."""
    payloads: dict[int, dict[str, Any]] = {}
    invalid: dict[int, str] = {}
    for pending in batch:
        try:
            payloads[pending.temp_id] = to_create_payload(pending.temp_id, pending.values)
        except Exception as exc:  # noqa: BLE001 - one bad new row must not stop the others
            invalid[pending.temp_id] = _invalid(pending.temp_id, exc)
    return payloads, invalid


# --- 4. chat links -------------------------------------------------------------------------------


def _push_links(ctx: _Context) -> None:
    with ctx.engine.begin() as conn:
        pending = inflight.claim_links(conn)
    size = ctx.config.amocrm.batch_size
    for start in range(0, len(pending), size):
        _link_batch(ctx, pending[start : start + size])


def _link_batch(ctx: _Context, batch: list[PendingLink]) -> None:
    payloads = {
        p.temp_id: {"contact_id": p.contact_id, "chat_id": p.chat_id, "request_id": str(p.temp_id)}
        for p in batch
    }
    with ctx.engine.begin() as conn:
        inflight.mark_sending(conn, "links", payloads, ctx.clock.now())
    results, rejected, failure = _send(
        ctx, lambda: ctx.client.link_chats(list(payloads.values()), batch_size=len(batch))
    )
    by_rid = {r.request_id: r for r in results}
    done = [Done(p.temp_id, by_rid[str(p.temp_id)].id, p.change_ids) for p in batch
            if str(p.temp_id) in by_rid]  # fmt: skip
    contact_of = {str(p.temp_id): p for p in batch}
    errors = {
        contact_of[rid].contact_id: f"chat link {contact_of[rid].chat_id}: {_message(errs)}"
        for rid, errs in rejected.items()
        if rid in contact_of
    }
    settled = [d.temp_id for d in done] + [int(r) for r in rejected if r in contact_of]

    def record(conn: Connection) -> None:
        inflight.record_linked(conn, done)
        inflight.mark_errors(conn, errors)
        inflight.forget_sent(conn, "links", settled)

    _record(ctx, record)
    ctx.count.add(linked=len(done), errors=len(errors))
    if failure is not None:
        raise failure


__all__ = ["PushReport", "run_push"]
