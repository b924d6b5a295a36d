"""Steps 1, 3 and 4 of a push run, the POSTs: what a dead run left in flight is recovered
(looked up in amoCRM, found ones get their ids), then new contacts are created and chat links
made, one batch at a time, each recorded as in flight before it is sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.db import inflight
from sync.db.inflight import Done, PendingCreate, PendingLink
from sync.push.context import Context, invalid_reason, log, message, record_outcome, send
from sync.push.plan import to_create_payload

# --- 1. recovery of a dead run's POSTs -----------------------------------------------------------


def recover(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        state = inflight.load_in_flight(conn)
    creates, links = state.get("creates"), state.get("links")
    if creates:
        _recover_creates(ctx, creates)
    if links:
        _recover_links(ctx, links)


def _recover_creates(ctx: Context, entry: Mapping[str, Any]) -> None:
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


def _recover_links(ctx: Context, entry: Mapping[str, Any]) -> None:
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


# --- 3. creates ----------------------------------------------------------------------------------


def push_creates(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        pending = inflight.claim_creates(conn)
    if not pending:
        return
    floor = ctx.client.newest_contact_id()
    size = ctx.config.amocrm.batch_size
    for start in range(0, len(pending), size):
        floor = _create_batch(ctx, pending[start : start + size], floor)


def _create_batch(ctx: Context, batch: list[PendingCreate], floor: int | None) -> int | None:
    payloads, invalid = _create_payloads(batch)
    batch = [p for p in batch if p.temp_id in payloads]
    with ctx.engine.begin() as conn:
        inflight.mark_errors(conn, invalid)
        if payloads:
            inflight.mark_sending(conn, "creates", payloads, ctx.clock.now(), floor)
    ctx.count.add(errors=len(invalid))
    if not payloads:
        return floor
    results, rejected, failure = send(
        ctx, lambda: ctx.client.create_contacts(list(payloads.values()), batch_size=len(batch))
    )
    done = [Done(p.temp_id, r.id, p.change_ids) for p in batch for r in results
            if r.request_id == str(p.temp_id)]  # fmt: skip
    errors = {int(rid): message(errs) for rid, errs in rejected.items()}
    settled = [d.temp_id for d in done] + list(errors)
    # the floor moves up only past a batch settled whole: an entity left in flight (amoCRM's
    # answer did not account for it) may have an id below the ones that came back
    whole = len(settled) == len(payloads)
    new_floor = max([d.real_id for d in done], default=None) if whole else None

    def record(conn: Connection) -> None:
        inflight.record_created(conn, done, ctx.clock.now())
        inflight.mark_errors(conn, errors)
        inflight.forget_sent(conn, "creates", settled, floor=new_floor)

    record_outcome(ctx, record)
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
            invalid[pending.temp_id] = invalid_reason(pending.temp_id, exc)
    return payloads, invalid


# --- 4. chat links -------------------------------------------------------------------------------


def push_links(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        pending = inflight.claim_links(conn)
    size = ctx.config.amocrm.batch_size
    for start in range(0, len(pending), size):
        _link_batch(ctx, pending[start : start + size])


def _link_batch(ctx: Context, batch: list[PendingLink]) -> None:
    payloads = {
        p.temp_id: {"contact_id": p.contact_id, "chat_id": p.chat_id, "request_id": str(p.temp_id)}
        for p in batch
    }
    with ctx.engine.begin() as conn:
        inflight.mark_sending(conn, "links", payloads, ctx.clock.now())
    results, rejected, failure = send(
        ctx, lambda: ctx.client.link_chats(list(payloads.values()), batch_size=len(batch))
    )
    by_rid = {r.request_id: r for r in results}
    done = [Done(p.temp_id, by_rid[str(p.temp_id)].id, p.change_ids) for p in batch
            if str(p.temp_id) in by_rid]  # fmt: skip
    contact_of = {str(p.temp_id): p for p in batch}
    errors = {
        contact_of[rid].contact_id: f"chat link {contact_of[rid].chat_id}: {message(errs)}"
        for rid, errs in rejected.items()
        if rid in contact_of
    }
    settled = [d.temp_id for d in done] + [int(r) for r in rejected if r in contact_of]

    def record(conn: Connection) -> None:
        inflight.record_linked(conn, done)
        inflight.mark_errors(conn, errors)
        inflight.forget_sent(conn, "links", settled)

    record_outcome(ctx, record)
    ctx.count.add(linked=len(done), errors=len(errors))
    if failure is not None:
        raise failure
