"""Steps 1, 3 and 4 of a push run, the POSTs: what a dead run left in flight is recovered
(looked up in amoCRM, found ones get their ids), then new contacts are created and chat links
made, one batch at a time, each recorded as in flight before it is sent.

A create is never sent twice on a guess. amoCRM's lists lag its writes (~1 s, 15 s seen), so a
create whose answer was lost (or left it out) is looked for over a confirmation window
(`confirm_window_s`: 10 x the client's `reconcile_settle_s`, 10 s) after it was sent: in-run by
`AmoClient.create_contacts` itself, a dead run's by the next push (creates younger than the
window are looked for again once it has passed; the run sleeps until then). One still not shown
is held, in a live run as after a dead one, until its send is `RESEND_AFTER_S` old
(`sync.push.held`: a list may lag longer than the window); every push looks again, and the first
past the bound sends it again. A server that
ignores `order[id]` is searched by `filter[created_at]` around the send (`sync.amo.created`,
trusted only once checked). Only when neither can be trusted, or when the look-up shows new
contacts of ours that match none of the creates (one may be ours, edited since:
`CreatesUnexplainedError`), does a create wait unsent: its row stays `pending` with `sync_error`
saying it waits for confirmation and how to withdraw it, and the run fails
(`AmoWriteUnconfirmedError`: `amosync push` exits 1) after everything else went out.

Withdrawing: a person deletes the row (`DELETE FROM contacts WHERE id = -N`, allowed for a
temporary id). The next push drops a withdrawn create from the in-flight record without looking
for it; if amoCRM did make it, the next pull brings it in under its real id: no duplicate, and
nothing lost."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from sync.amo.backoff import pause
from sync.amo.created import EmptyAnswerError, Sent
from sync.amo.reconcile import confirm_window_s
from sync.amo.writes import CreatesUnexplainedError, WriteResult
from sync.core.models import CF_COLUMN, NOT_FOUND
from sync.db import inflight
from sync.db.engine import store_errors
from sync.db.inflight import Done, PendingCreate, PendingLink
from sync.errors import (
    AmoError,
    AmoWriteUnconfirmedError,
    InvariantError,
    LockLostError,
    StoreError,
)
from sync.push.context import (
    Context,
    count_in,
    gone,
    invalid_reason,
    log,
    message,
    record_outcome,
    send,
)
from sync.push.error_paths import user_errors
from sync.push.held import Held, too_young_to_resend, waiting_message
from sync.push.plan import to_create_payload


def confirm_window(ctx: Context) -> float:
    """Seconds a create must stay invisible in amoCRM's lists to count as not applied."""
    return confirm_window_s(ctx.client.reconcile_settle_s)


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
    """Find a dead run's creates; those amoCRM does not show are sent again by step 3, but a
    create younger than the confirmation window gets one more look once it has passed. Those a
    person withdrew are dropped unlooked for; when amoCRM cannot be searched, or shows new
    contacts of ours that match none of them, the rest wait."""
    payloads = _not_withdrawn(ctx, [dict(p) for p in entry["items"].values()])
    if not payloads:
        return
    unexplained: CreatesUnexplainedError | None = None
    try:
        found, young = _look_for(ctx, entry, payloads)
    except CreatesUnexplainedError as exc:  # found ones are recorded, the rest wait
        found, young, unexplained = exc.found, {}, exc
    except InvariantError as exc:  # amoCRM cannot be searched: nothing is resent on a guess
        _wait_unconfirmed(ctx, entry, payloads, exc)
        return
    unfound = [p for p in payloads if str(p["request_id"]) not in found]
    waiting = unfound if unexplained is not None else []  # one may be ours, edited: not resent
    unseen = [int(p["request_id"]) for p in unfound if p not in waiting]
    held = too_young_to_resend(ctx.clock.now(), entry, unseen)  # a list may lag it yet
    missing = [temp for temp in unseen if temp not in held]
    with ctx.engine.begin() as conn:
        pending = {p.temp_id: p for p in inflight.claim_creates(conn, include_errors=True)}
        done = [
            Done(int(rid), r.id, _sent_changes(entry, pending[int(rid)]))
            for rid, r in found.items()
            if int(rid) in pending  # a row deleted locally meanwhile has nothing to swap
        ]
        inflight.record_created(conn, done, ctx.clock.now())
        settled = [int(rid) for rid in found] + missing  # missing ones are sent again below
        inflight.forget_sent(conn, "creates", settled, claimed=[r.id for r in found.values()])
        count_in(ctx, conn, created=len(done))
        for temp, hold in held.items():
            inflight.mark_waiting(conn, [temp], hold.message())
    ctx.count.add(recovered=len(done), created=len(done), creates_held=len(held))
    for item in done:
        ctx.written.created(item.real_id)
    log.warning("push_creates_recovered", sent=len(payloads), found=len(found),
                looked_again=len(young), resent=len(missing), held=len(held))  # fmt: skip
    if waiting and unexplained is not None:
        _wait_unconfirmed(ctx, entry, waiting, unexplained)


def _look_for(
    ctx: Context, entry: Mapping[str, Any], payloads: list[dict[str, Any]]
) -> tuple[dict[str, WriteResult], dict[int, float]]:
    """The creates amoCRM shows, looking once more when the window has passed for those sent
    less than a window ago (the run sleeps until then); and those young ones. A look-up that
    keeps answering 204 (`EmptyAnswerError`) is never taken for "not made": the look after the
    window decides, and when that one is the first, the creates wait (the caller)."""
    claimed = [int(i) for i in entry.get("claimed") or []]
    floor, sent = entry.get("floor"), _sent_span(entry, payloads)
    unsure = False
    try:
        found = ctx.client.recover_creates(payloads, floor, claimed, sent)
    except EmptyAnswerError:  # a lagging list: only the look after the window may decide
        if not _young(ctx, entry, payloads):
            raise
        found, unsure = {}, True
    except CreatesUnexplainedError as exc:  # may be a young one not listed yet: decided later
        if not _young(ctx, entry, payloads):
            raise
        found, unsure = exc.found, True
    young = _young(ctx, entry, [p for p in payloads if str(p["request_id"]) not in found])
    if young or unsure:
        # until the youngest is as old as the window; a stop (SIGTERM) ends the wait at once
        pause(ctx.clock, ctx.client.session.stopping, max(young.values(), default=0.0))
        taken = claimed + [r.id for r in found.values()]
        again = [p for p in payloads if str(p["request_id"]) not in found]
        again = again if unsure else [p for p in again if int(p["request_id"]) in young]
        try:
            found |= ctx.client.recover_creates(again, floor, taken, sent)
        except CreatesUnexplainedError as exc:
            raise CreatesUnexplainedError(str(exc), found=found | exc.found) from exc
    return found, young


def _sent_span(entry: Mapping[str, Any], payloads: list[dict[str, Any]]) -> Sent:
    times = [inflight.sent_at(entry, int(p["request_id"])) for p in payloads]
    return Sent(min(times), max(times))


def _not_withdrawn(ctx: Context, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The in-flight creates whose rows still exist; those a person deleted (withdrawn) leave
    the record without a look-up (a contact amoCRM did make comes in with the next pull)."""
    temps = [int(p["request_id"]) for p in payloads]
    with ctx.engine.begin() as conn:
        gone = inflight.withdrawn(conn, temps)
        if gone:
            inflight.forget_sent(conn, "creates", gone)
    if gone:
        log.warning("push_creates_withdrawn", count=len(gone), temp_ids=gone)
    return [p for p in payloads if int(p["request_id"]) not in gone]


def _wait_unconfirmed(
    ctx: Context, entry: Mapping[str, Any], payloads: list[dict[str, Any]], exc: Exception
) -> None:
    """Creates amoCRM cannot be searched for stay in flight, unsent; their rows say so (and how
    to withdraw them); the run goes on with everything else and fails at its end."""
    temps = [int(p["request_id"]) for p in payloads]
    with ctx.engine.begin() as conn:
        for temp in temps:
            inflight.mark_waiting(conn, [temp], waiting_message(inflight.sent_at(entry, temp)))
    ctx.unconfirmed.update(temps)
    log.warning("push_creates_unconfirmed", count=len(temps), reason=str(exc))


def _young(
    ctx: Context, entry: Mapping[str, Any], missing: list[dict[str, Any]]
) -> dict[int, float]:
    """Seconds until each of `missing` has been invisible for the whole window (if not yet)."""
    now, window = ctx.clock.now(), confirm_window(ctx)
    left = {}
    for payload in missing:
        temp = int(payload["request_id"])
        age = (now - inflight.sent_at(entry, temp)).total_seconds()
        if age < window:
            left[temp] = window - age
    return left


def _sent_changes(entry: Mapping[str, Any], pending: PendingCreate) -> tuple[int, ...]:
    """The outbox rows the POST carried; edits made since stay, as updates of the contact."""
    carried = inflight.carried_changes(entry, pending.temp_id)
    return pending.change_ids if carried is None else carried


def _recover_links(ctx: Context, entry: Mapping[str, Any]) -> None:
    payloads = [dict(p) for p in entry["items"].values()]
    found = ctx.client.recover_links(payloads)
    with ctx.engine.begin() as conn:
        pending = {p.temp_id: p for p in inflight.claim_links(conn, ctx.clock.now())}
        done = [
            Done(int(rid), r.id, pending[int(rid)].change_ids)
            for rid, r in found.items()
            if int(rid) in pending
        ]
        inflight.record_linked(conn, done, ctx.clock.now())
        inflight.forget_sent(conn, "links", [int(p["request_id"]) for p in payloads])
        count_in(ctx, conn, linked=len(done))
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
    sent = ctx.clock.now()
    with ctx.engine.begin() as conn:
        inflight.mark_errors(conn, invalid)
        if payloads:
            carried = {p.temp_id: p.change_ids for p in batch}
            inflight.mark_sending(conn, "creates", payloads, sent, floor, changes=carried)
        count_in(ctx, conn, errors=len(invalid))
    ctx.count.add(errors=len(invalid))
    if not payloads:
        return floor
    results, rejected, failure = _send_or_unmark(
        ctx,
        "creates",
        list(payloads),
        lambda: ctx.client.create_contacts(
            list(payloads.values()), batch_size=len(batch), hold_unseen=True
        ),
    )
    done = [Done(p.temp_id, r.id, p.change_ids) for p in batch for r in results
            if r.request_id == str(p.temp_id)]  # fmt: skip
    columns = {p.temp_id: p.values.get(CF_COLUMN) for p in batch}  # paths name their entries
    errors = {
        int(rid): message(user_errors(errs, _sent_fields(payloads, rid), columns.get(int(rid))))
        for rid, errs in rejected.items()
    }
    new_floor = max([d.real_id for d in done], default=None)
    settled = [d.temp_id for d in done] + list(errors)
    unsure = failure if isinstance(failure, AmoWriteUnconfirmedError) else None
    waiting = [int(rid) for rid in unsure.unconfirmed] if unsure else []
    held = [int(rid) for rid in unsure.held] if unsure else []
    hold = Held(sent)  # the send time `push_in_flight` holds: the next push's look counts from it

    def record(conn: Connection) -> None:
        inflight.record_created(conn, done, ctx.clock.now())
        inflight.mark_errors(conn, errors)
        inflight.mark_waiting(conn, waiting, waiting_message(sent))
        inflight.mark_waiting(conn, held, hold.message())  # in flight still: not in `settled`
        inflight.forget_sent(conn, "creates", settled, claimed=[d.real_id for d in done])

    record_outcome(ctx, record, created=len(done), errors=len(errors))
    for item in done:
        ctx.written.created(item.real_id)
    ctx.unconfirmed.update(waiting)
    if held:
        ctx.count.add(creates_held=len(held))
        log.warning("push_creates_held", count=len(held), temp_ids=held,
                    resend_after=f"{hold.due:%H:%M:%S} UTC")  # fmt: skip
    if failure is not None and not unsure:
        raise failure
    return new_floor if new_floor is not None else floor


def _sent_fields(payloads: Mapping[int, Mapping[str, Any]], rid: str) -> Any:
    return (payloads.get(int(rid)) or {}).get(CF_COLUMN)


def _send_or_unmark(
    ctx: Context, kind: str, temp_ids: list[int], write: Callable[[], list[WriteResult]]
) -> tuple[list[WriteResult], Mapping[str, Sequence[Mapping[str, str]]], AmoError | None]:
    """`send`; when the write guard (the push lock lost, PostgreSQL gone) stops the write
    before any attempt of it began (`writes_tried`), the batch is taken out of the in-flight
    record again, so the next push sends it at once instead of looking for it first. If
    PostgreSQL cannot record that, it stays "maybe sent" (the safe side)."""
    before = ctx.client.session.writes_tried
    try:
        return send(ctx, write)
    except LockLostError:
        if ctx.client.session.writes_tried == before:
            try:
                with store_errors(ctx.config.database), ctx.engine.begin() as conn:
                    inflight.forget_sent(conn, kind, temp_ids)
            except StoreError as exc:
                log.warning("in_flight_kept", kind=kind, count=len(temp_ids), error=str(exc))
        raise


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
    """Fail the run (after everything else went out) when creates wait for a confirmation
    reading cannot give (amoCRM ignores `order[id]` and the `created_at` filter)."""
    if not ctx.unconfirmed:
        return
    ctx.count.add(unconfirmed=len(ctx.unconfirmed))
    temps = sorted(ctx.unconfirmed, reverse=True)
    shown = ", ".join(map(str, temps[:5])) + (", …" if len(temps) > 5 else "")
    raise AmoWriteUnconfirmedError(
        f"{len(temps)} new contacts were sent but amoCRM has not confirmed them (could not be "
        "searched, or shows unmatched new contacts of ours: edited?); not sent again, so as "
        "not to create them twice. To withdraw them: DELETE FROM contacts WHERE id IN "
        f"({shown})",
        unconfirmed=[str(t) for t in temps],
    )


# --- 4. chat links -------------------------------------------------------------------------------


def push_links(ctx: Context) -> None:
    with ctx.engine.begin() as conn:
        pending = inflight.claim_links(conn, ctx.clock.now())
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
    results, rejected, failure = _send_or_unmark(
        ctx,
        "links",
        list(payloads),
        lambda: ctx.client.link_chats(list(payloads.values()), batch_size=len(batch)),
    )
    by_rid = {r.request_id: r for r in results}
    done = [Done(p.temp_id, by_rid[str(p.temp_id)].id, p.change_ids) for p in batch
            if str(p.temp_id) in by_rid]  # fmt: skip
    contact_of = {str(p.temp_id): p for p in batch}
    named = {contact_of[rid].contact_id for rid in rejected if rid in contact_of}
    missing = gone(ctx, sorted(named)) if named else set()  # deleted in amoCRM since
    errors = {
        contact_of[rid].contact_id: NOT_FOUND
        if contact_of[rid].contact_id in missing
        else f"chat link {contact_of[rid].chat_id}: {message(errs)}"
        for rid, errs in rejected.items()
        if rid in contact_of
    }
    settled = [d.temp_id for d in done] + [int(r) for r in rejected if r in contact_of]

    def record(conn: Connection) -> None:
        inflight.record_linked(conn, done, ctx.clock.now())
        inflight.mark_errors(conn, errors)
        inflight.forget_sent(conn, "links", settled)

    record_outcome(ctx, record, linked=len(done), errors=len(errors))
    if failure is not None:
        raise failure
