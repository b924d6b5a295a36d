"""Step 2 of a push run: the outbox's updates. Claimed and coalesced per contact; for every
≤250 contacts one batched GET (each contact by id for a push of a few) gives amoCRM's current
versions, each contact is merged and planned on its own, and the PATCH batches go out on the
read-then-write pool, each recorded in its own transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.core.items import PendingUpdate, UpdateOutcome
from sync.core.models import NOT_FOUND
from sync.db import outbox
from sync.push.context import Context, gone, invalid_reason, message, record_outcome, send
from sync.push.fresh import BY_ID_MAX, plan_current
from sync.push.overtaken import refresh_overtaken
from sync.push.plan import KnownFields, UpdatePlan, plan_update
from sync.push.pool import ReadThenWrite
from sync.push.report import tally

FETCH_CHUNK = 250  # contacts per GET by filter[id] (amoCRM's page maximum)


def push_updates(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        pending = outbox.claim_updates(conn)
        # the pull's cached definitions: which id a field code names, which fields are sets
        fields = KnownFields.of(ctx.runs.load_fields(conn).values() if pending else ())
    if not pending:
        return
    chunks = [pending[i : i + FETCH_CHUNK] for i in range(0, len(pending), FETCH_CHUNK)]
    by_id = len(pending) <= BY_ID_MAX  # a few contacts: read where amoCRM's lists cannot lag
    work: ReadThenWrite[list[PendingUpdate], list[UpdatePlan]] = ReadThenWrite(
        chunks,
        lambda chunk: _plan_chunk(ctx, fields, chunk, by_id),
        lambda batch: _send_update_batch(ctx, batch),
    )
    work.run(ctx.config.sync.push_workers)


def _plan_chunk(
    ctx: Context, fields: KnownFields, chunk: list[PendingUpdate], by_id: bool
) -> list[list[UpdatePlan]]:
    """amoCRM's versions (each by id for a push of a few contacts, else one GET re-read by id
    where it may lag); record what needs no PATCH (or cannot be sent); return the PATCH
    batches. Each contact is planned on its own: one bad row never stops the rest."""
    plans, deferred = plan_current(
        ctx.client,
        chunk,
        lambda pending, remote: _plan_one(ctx, fields, pending, remote),
        by_id=by_id,
    )
    ctx.count.add(deferred=len(deferred))
    _record_updates(ctx, [plan.outcome() for plan in plans if plan.entity is None])
    to_send = [plan for plan in plans if plan.entity is not None]
    size = ctx.config.amocrm.batch_size
    return [to_send[start : start + size] for start in range(0, len(to_send), size)]


def _plan_one(
    ctx: Context,
    fields: KnownFields,
    pending: PendingUpdate,
    remote: Mapping[str, Any] | None,
) -> UpdatePlan:
    """The contact's plan; a row that cannot be sent gets a plan that records why."""
    policy, overrides = ctx.config.sync.conflict_policy, ctx.config.sync.conflict_fields_map
    try:
        return plan_update(pending, remote, policy, overrides, fields)
    except Exception as exc:  # noqa: BLE001 - one contact's bad row must not stop the others
        return UpdatePlan.invalid_row(pending, invalid_reason(pending.contact_id, exc))


def _send_update_batch(ctx: Context, batch: Sequence[UpdatePlan]) -> None:
    entities = [plan.entity for plan in batch if plan.entity is not None]
    planned = {p.pending.contact_id: p.planned_at for p in batch if p.planned_at is not None}
    results, rejected, failure = send(
        ctx,
        lambda: ctx.client.update_contacts(entities, batch_size=len(entities), planned_at=planned),
    )
    by_id = {r.request_id: r for r in results}
    missing = gone(ctx, [int(rid) for rid in rejected]) if rejected else set()
    outcomes = []
    answered: list[tuple[UpdatePlan, int | None]] = []  # read back at the run's end
    for plan in batch:
        rid = str(plan.pending.contact_id)  # the entity's request_id
        if rid in by_id and by_id[rid].superseded:
            # its answer was lost and the contact was edited since: nothing recorded, so the
            # edit stays pending and the next push merges it with that newer version
            ctx.count.add(deferred=1)
        elif rid in by_id:
            outcomes.append(plan.outcome(by_id[rid].updated_at))
            answered.append((plan, by_id[rid].updated_at))
        elif rid in rejected:
            lost = plan.pending.contact_id in missing  # deleted in amoCRM since it was read
            outcomes.append(
                plan.rejected(NOT_FOUND if lost else message(plan.user_errors(rejected[rid])))
            )
    _record_updates(ctx, outcomes)
    for plan, updated_at in answered:
        ctx.written.patched(plan, updated_at)
    if failure is not None:
        raise failure


def _record_updates(ctx: Context, outcomes: Sequence[UpdateOutcome]) -> None:
    """Record the outcomes; then read amoCRM's values of what a pull overtook meanwhile."""
    if not outcomes:
        return
    overtaken: list[int] = []

    def record(conn: Connection) -> None:
        overtaken[:] = outbox.record_updates(conn, outcomes, ctx.clock.now())

    record_outcome(ctx, record, **tally(outcomes))
    refresh_overtaken(ctx, overtaken)
