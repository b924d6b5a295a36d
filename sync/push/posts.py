"""Steps 1, 3 and 4 of a push run, the POSTs: what a dead run left in flight is recovered
(looked up in amoCRM, found ones get their ids), then new contacts are created and chat links
made, one batch at a time, each recorded as in flight before it is sent.

A create is never sent twice on a guess. amoCRM's lists lag its writes, so a create whose answer
was lost and that re-reading does not find yet stays in flight, not resent: its row stays
`pending` with `sync_error` saying it waits for confirmation, and each later push looks for it
again. Only when `CONFIRM_WINDOW_S` has passed since it was sent without amoCRM showing it is
it taken as not applied and sent again. A run that leaves creates unconfirmed fails
(`AmoWriteUnconfirmedError`: `amosync push` exits 1) after everything else went out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.db import inflight
from sync.db.inflight import Done, PendingCreate, PendingLink
from sync.errors import AmoWriteUnconfirmedError
from sync.push.context import Context, invalid_reason, log, message, record_outcome, send
from sync.push.plan import to_create_payload

# Lists showed writes ~1 s late in practice (amocrm-api.md §11.4, §13.14); a create not seen
# for a minute after its POST is taken as not applied. Many times any lag measured, and short
# enough that a create whose 504 came before amoCRM applied it is not held back for long.
CONFIRM_WINDOW_S = 60.0


def waiting_message(sent: int) -> str:
    return (f"waiting for confirmation: sent to amoCRM {sent} s ago, the answer was lost and "
            "amoCRM does not show the contact yet; not sent again before "
            f"{CONFIRM_WINDOW_S:g} s have passed")  # fmt: skip


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
    claimed = [int(i) for i in entry.get("claimed") or []]
    found = ctx.client.recover_creates(payloads, entry.get("floor"), claimed)
    now = ctx.clock.now()
    missing = [int(p["request_id"]) for p in payloads if str(p["request_id"]) not in found]
    ages = {t: (now - inflight.sent_at(entry, t)).total_seconds() for t in missing}
    expired = [t for t in missing if ages[t] >= CONFIRM_WINDOW_S]
    waiting = [t for t in missing if ages[t] < CONFIRM_WINDOW_S]
    with ctx.engine.begin() as conn:
        pending = {p.temp_id: p for p in inflight.claim_creates(conn, include_errors=True)}
        done = [
            Done(int(rid), r.id, _sent_changes(entry, pending[int(rid)]))
            for rid, r in found.items()
            if int(rid) in pending  # a row deleted locally meanwhile has nothing to swap
        ]
        inflight.record_created(conn, done, now)
        for temp in waiting:
            inflight.mark_waiting(conn, [temp], waiting_message(round(ages[temp])))
        settled = [int(rid) for rid in found] + expired  # expired ones are sent again below
        inflight.forget_sent(conn, "creates", settled, claimed=[r.id for r in found.values()])
    ctx.count.add(recovered=len(done), created=len(done))
    ctx.unconfirmed.update(waiting)
    log.warning("push_creates_recovered", sent=len(payloads), found=len(found),
                waiting=len(waiting), resent=len(expired))  # fmt: skip


def _sent_changes(entry: Mapping[str, Any], pending: PendingCreate) -> tuple[int, ...]:
    """The outbox rows the POST carried; edits made since stay, as updates of the contact."""
    carried = inflight.carried_changes(entry, pending.temp_id)
    return pending.change_ids if carried is None else carried


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
        flying = inflight.load_in_flight(conn).get("creates", {}).get("items", {})
        pending = [p for p in inflight.claim_creates(conn) if str(p.temp_id) not in flying]
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
            carried = {p.temp_id: p.change_ids for p in batch}
            inflight.mark_sending(
                conn, "creates", payloads, ctx.clock.now(), floor, changes=carried
            )
    ctx.count.add(errors=len(invalid))
    if not payloads:
        return floor
    results, rejected, failure = send(
        ctx, lambda: ctx.client.create_contacts(list(payloads.values()), batch_size=len(batch))
    )
    done = [Done(p.temp_id, r.id, p.change_ids) for p in batch for r in results
            if r.request_id == str(p.temp_id)]  # fmt: skip
    errors = {int(rid): message(errs) for rid, errs in rejected.items()}
    new_floor = max([d.real_id for d in done], default=None)
    settled = [d.temp_id for d in done] + list(errors)
    unsure = isinstance(failure, AmoWriteUnconfirmedError)
    waiting = (
        [int(rid) for rid in failure.unconfirmed]
        if isinstance(failure, AmoWriteUnconfirmedError)
        else []
    )

    def record(conn: Connection) -> None:
        inflight.record_created(conn, done, ctx.clock.now())
        inflight.mark_errors(conn, errors)
        inflight.mark_waiting(conn, waiting, waiting_message(0))
        inflight.forget_sent(conn, "creates", settled, claimed=[d.real_id for d in done])

    record_outcome(ctx, record)
    ctx.count.add(created=len(done), errors=len(errors))
    ctx.unconfirmed.update(waiting)
    if failure is not None and not unsure:
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


def check_confirmed(ctx: Context) -> None:
    """Fail the run (after everything else went out) when creates wait for confirmation."""
    if not ctx.unconfirmed:
        return
    ctx.count.add(unconfirmed=len(ctx.unconfirmed))
    raise AmoWriteUnconfirmedError(
        f"{len(ctx.unconfirmed)} new contacts were sent but amoCRM has not confirmed them yet "
        "(answer lost, not visible in its lists): not sent again; the next push looks again",
        unconfirmed=[str(t) for t in sorted(ctx.unconfirmed)],
    )


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
