"""Batched writes with per-entity results, rejection mapping and lost-answer reconciliation.

The engine (`run_writes`) is endpoint-neutral; `AmoClient` gives it two functions: `send` (one
batch → results) and `reconcile` (a batch whose answer was lost → the results of the entities
that amoCRM did apply, found by re-reading). Rules:

- every entity gets a `request_id` (the caller's, or its index in the caller's list), and results
  are matched back by it, never by position alone; an answer with fewer or more entries than
  the batch (or entries that match nothing) keeps what it does match, and the entities left
  without a result are reconciled by reading like a lost answer (below), creates included;
- a 400 rejects the whole batch (amoCRM is treated as all-or-nothing): the entities named in
  `validation-errors` (by our request_id, or by batch index when that is what the names are)
  are set aside, the rest of the batch is sent again; a 400 that names nobody we can tell for
  sure is split in halves until each rejected entity is alone in its batch; at the end an
  `AmoRejectedError` lists every rejected `request_id` and carries the successful results;
- a lost answer (`AmoWriteUnknownError`: timeout after send, reset, 5xx, 504, broken body) is
  **reconciled before any retry**; only entities not found are sent again. For creates the
  reconcile step keeps looking for a confirmation window (`sync.amo.reconcile`: lists lag
  writes), so one is resent only once it stayed invisible that long. When reading cannot tell
  at all (amoCRM ignores `order[id]`: `InvariantError`) and a blind resend could duplicate
  (`blind_resend=False`, creates), nothing is resent: an answer that left entities out ends
  the call with `AmoWriteUnconfirmedError` naming them (after the other batches went out), a
  lost answer with its `AmoWriteUnknownError`. When reading shows new contacts of ours that
  match none of the creates (`CreatesUnexplainedError`: one may be ours, edited since), those
  found are kept and the rest end the call as unconfirmed, whichever way the answer failed;
  a 504 (or a 422 "Limit 250 per page") halves the batch size for the rest of the call;
- `hold_unseen` (push's creates): a create not found within the window is not resent (a list
  lagging longer would make it a duplicate) but *held* (`AmoWriteUnconfirmedError.held`, after
  the other batches went out): the caller keeps it in flight for a later look (`sync.push.held`);
- any error that ends the call carries `.results` for what did go through.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.amo.numbers import as_int
from sync.amo.rejections import all_errors, named_by_us
from sync.errors import (
    AmoError,
    AmoRejectedError,
    AmoWriteUnconfirmedError,
    AmoWriteUnknownError,
    InvariantError,
)
from sync.logs import get_logger

log = get_logger("sync.amo.writes")


@dataclass(frozen=True)
class WriteResult:
    """What amoCRM reported for one written entity."""

    request_id: str
    id: int
    updated_at: int | None = None
    reconciled: bool = False  # found by re-reading after the answer was lost
    # a lost PATCH answer, and the contact read back neither as sent nor as planned on: edited
    # since (perhaps after ours applied); not resent, so that edit is not overwritten
    superseded: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


class CreatesUnexplainedError(InvariantError):
    """Lost creates reading does not find, while amoCRM shows new contacts our user made that
    nothing explains: one may be ours, edited since (by a person or an automation), so none is
    resent (they wait as unconfirmed). `found`: those that were matched, by request_id."""

    def __init__(self, message: str, *, found: Mapping[str, WriteResult]) -> None:
        self.found = dict(found)
        super().__init__(message)


@dataclass(frozen=True)
class Item:
    request_id: str
    payload: dict[str, Any]


def prepare(entities: Sequence[Mapping[str, Any]]) -> list[Item]:
    """Copy entities, giving each a unique `request_id` (the caller's or its list index)."""
    items: list[Item] = []
    seen: set[str] = set()
    for index, entity in enumerate(entities):
        request_id = str(entity.get("request_id", index))
        if request_id in seen:
            raise ValueError(f"duplicate request_id {request_id!r} in one write")
        seen.add(request_id)
        items.append(Item(request_id, {**entity, "request_id": request_id}))
    return items


def parse_results(
    items: Sequence[Item], data: Any, key: str, *, id_key: str = "id"
) -> list[WriteResult]:
    """Match `_embedded.<key>` of a write answer to the batch by `request_id` (by position only
    for an entry without one in an answer of exactly one entry per entity). What cannot be
    matched is left out, never guessed: an entry naming no entity of the batch, a second entry
    for an entity that names another id, an id that is not an integer. The caller treats the
    entities left without a result as a lost answer (`run_writes`)."""
    embedded = data.get("_embedded") if isinstance(data, Mapping) else None
    answers = embedded.get(key) if isinstance(embedded, Mapping) else None
    answers = answers if isinstance(answers, list) else []
    by_id = {item.request_id: item for item in items}
    matched: dict[str, WriteResult] = {}
    clashed: set[str] = set()
    for position, answer in enumerate(answers):
        if not isinstance(answer, Mapping):
            continue
        request_id = answer.get("request_id")
        if request_id is None and len(answers) == len(items):
            request_id = items[position].request_id
        request_id = None if request_id is None else str(request_id)
        if request_id not in by_id:
            continue
        try:
            result = to_result(request_id, answer, id_key=id_key)
        except (KeyError, ValueError):
            continue
        seen = matched.setdefault(request_id, result)
        if seen.id != result.id:
            clashed.add(request_id)
    if len(matched) - len(clashed) != len(items) or len(answers) != len(items):
        log.warning(
            "amo_write_answer_mismatch",
            key=key,
            sent=len(items),
            answered=len(answers),
            matched=len(matched) - len(clashed),
        )
    return [r for rid, r in matched.items() if rid not in clashed]


def to_result(
    request_id: str, answer: Mapping[str, Any], *, id_key: str = "id", reconciled: bool = False
) -> WriteResult:
    """One answer entry → `WriteResult` (ids and `updated_at` as ints, numeric strings too);
    ValueError or KeyError when its id is missing or not an integer."""
    updated = answer.get("updated_at")
    try:
        updated_at = None if updated is None else as_int(updated)
    except ValueError:
        updated_at = None
    return WriteResult(
        request_id=request_id,
        id=as_int(answer[id_key]),
        updated_at=updated_at,
        reconciled=reconciled,
        data=dict(answer),
    )


Send = Callable[[list[Item]], list[WriteResult]]
Reconcile = Callable[[list[Item]], dict[str, WriteResult]]
Wait = Callable[[int], None]


@dataclass
class _State:
    order: list[str]
    results: dict[str, WriteResult] = field(default_factory=dict)
    rejected: dict[str, Sequence[Mapping[str, str]]] = field(default_factory=dict)
    unconfirmed: list[str] = field(default_factory=list)  # creates reading cannot confirm
    held: list[str] | None = None  # creates not found in the window (`hold_unseen`), or None
    unsettled: list[Item] = field(default_factory=list)  # unmatched after every retry

    def ordered(self) -> tuple[WriteResult, ...]:
        return tuple(self.results[r] for r in self.order if r in self.results)


def run_writes(
    items: list[Item],
    batch_size: int,
    send: Send,
    reconcile: Reconcile,
    *,
    max_retries: int,
    wait: Wait,
    what: str,
    blind_resend: bool = True,
    hold_unseen: bool = False,
) -> list[WriteResult]:
    """Write `items` in batches; see the module docstring for the rules."""
    state = _State([i.request_id for i in items], held=[] if hold_unseen else None)
    try:
        _write_all(
            items, batch_size, send, reconcile, state,
            max_retries=max_retries, wait=wait, what=what, blind_resend=blind_resend,
        )  # fmt: skip
    except AmoError as exc:  # whatever ends the call (a stop during a pause too) carries results
        exc.results = state.ordered()
        raise
    return _finish(state, len(items), what)


def _write_all(
    items: list[Item],
    batch_size: int,
    send: Send,
    reconcile: Reconcile,
    state: _State,
    *,
    max_retries: int,
    wait: Wait,
    what: str,
    blind_resend: bool,
) -> None:
    """The batches of one call, into `state`; see the module docstring for the rules."""
    size = max(1, batch_size)
    queue: deque[list[Item]] = deque(_chunks(items, size))
    failures = 0
    while queue:
        batch = queue.popleft()
        try:
            answered = send(batch)
        except AmoRejectedError as exc:
            queue.extendleft(reversed(_set_aside_rejected(batch, exc, state)))
            continue
        except AmoWriteUnknownError as exc:
            failures += 1
            if failures > max_retries:
                raise exc from None
            if exc.status == 504:
                size = max(1, size // 2)
            wait(failures - 1)
            unsure = [i for i in batch if i.request_id not in state.results]
            rest = _reconciled_rest(unsure, exc, reconcile, state, what)
            queue = deque(_chunks(rest + [i for b in queue for i in b], size))
            continue
        except AmoError as exc:
            if exc.status == 422 and len(batch) > 1:
                size = max(1, min(size, len(batch)) // 2)
                queue = deque(_chunks(batch + [i for b in queue for i in b], size))
                continue
            raise exc from None
        # outside the `try`: an error of the reads that look for unmatched entities is not an
        # answer to the batch (a 400 there must not set aside or resend entities just created)
        state.results.update((r.request_id, r) for r in answered)
        unmatched = [i for i in batch if i.request_id not in state.results]
        rest = _unmatched(unmatched, reconcile, state, what, blind_resend)
        if rest:
            failures += 1
            if failures > max_retries:
                state.unsettled += rest
            else:
                queue.appendleft(rest)


def _finish(state: _State, count: int, what: str) -> list[WriteResult]:
    """The results, or the error that carries them: entities left unsettled first (the caller
    must look again), then unconfirmed creates, then rejected entities."""
    if state.unsettled:
        raise _with_results(
            AmoWriteUnknownError(
                f"amoCRM's answer to {count} {what} did not account for "
                f"{len(state.unsettled)}, and reading did not find them: left for the next run"
            ),
            state,
        )
    if state.unconfirmed or state.held:
        raise AmoWriteUnconfirmedError(
            _unconfirmed_line(state, count, what),
            unconfirmed=state.unconfirmed,
            held=state.held or (),
            errors_by_request_id=state.rejected,
            results=state.ordered(),
        )
    if state.rejected:
        raise AmoRejectedError(
            f"amoCRM rejected {len(state.rejected)} of {count} {what}",
            errors_by_request_id=state.rejected,
            results=state.ordered(),
        )
    return list(state.ordered())


def _unconfirmed_line(state: _State, count: int, what: str) -> str:
    parts = {f"{len(state.unconfirmed)} could not be looked up (amoCRM ignores order[id]), or "
             "new contacts of ours match none": state.unconfirmed, f"{len(state.held or ())} "
             "lost their answer and amoCRM's lists do not show them yet": state.held}  # fmt: skip
    return (f"amoCRM did not confirm {len(state.unconfirmed) + len(state.held or ())} of {count} "
            f"{what}: {'; '.join(p for p, some in parts.items() if some)}; not sent again, so "
            "as not to create them twice")  # fmt: skip


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _with_results(exc: AmoError, state: _State) -> AmoError:
    exc.results = state.ordered()
    return exc


def _set_aside_rejected(
    batch: list[Item], exc: AmoRejectedError, state: _State
) -> list[list[Item]]:
    """Record the entities a 400 names; the batches to send again (the rest of it, or, when
    who was meant cannot be told, its two halves: nothing of a rejected batch was applied)."""
    named = named_by_us([i.request_id for i in batch], exc.errors_by_request_id)
    if named is None and len(batch) > 1:
        half = len(batch) // 2
        log.info("amo_write_rejected_split", batch=len(batch))
        return [batch[:half], batch[half:]]
    if named is None:  # a batch of one: whatever the 400 says is about this entity
        named = {batch[0].request_id: all_errors(exc)}
    state.rejected.update(named)
    log.info("amo_write_rejected", count=len(named), batch=len(batch))
    rest = [i for i in batch if i.request_id not in named]
    return [rest] if rest else []


def _unmatched(
    unmatched: list[Item], reconcile: Reconcile, state: _State, what: str, blind: bool
) -> list[Item]:
    """Entities a 200 answer did not account for: amoCRM applies a batch whole, so they are
    most likely applied; reading finds them. Returns those to send again (not found); when
    reading cannot tell (`InvariantError`) and a blind resend is unsafe (`blind` false:
    creates), none: they wait as unconfirmed."""
    if not unmatched:
        return []
    try:
        found = reconcile(unmatched)
    except CreatesUnexplainedError as err:
        return _unconfirmed(unmatched, err, state, what)
    except InvariantError:
        if not blind:
            state.unconfirmed.extend(i.request_id for i in unmatched)
            log.warning("amo_write_answer_unmatched", what=what, unmatched=len(unmatched),
                        found=0, resent=0, unconfirmed=len(unmatched))  # fmt: skip
            return []
        found = {}
    except AmoRejectedError as err:  # a read refused: no verdict on the entities written
        raise AmoWriteUnknownError(
            f"amoCRM's answer to {what} left {len(unmatched)} out, and reading them back was "
            f"refused ({err.reason})",
            method=err.method, url=err.url, status=err.status,
        ) from err  # fmt: skip
    state.results.update(found)
    rest = [i for i in unmatched if i.request_id not in found]
    held = _hold(rest, state)
    edited = _superseded(found)
    log.warning("amo_write_answer_unmatched", what=what, unmatched=len(unmatched),
                found=len(found) - edited, superseded=edited, resent=len(rest) - held,
                held=held)  # fmt: skip
    return rest if not held else []


def _reconciled_rest(
    batch: list[Item], exc: AmoWriteUnknownError, reconcile: Reconcile, state: _State, what: str
) -> list[Item]:
    """The entities of a batch whose answer was lost that reading did not find: to send again.
    When reading cannot tell (`InvariantError`), the call ends with the lost answer's error."""
    try:
        found = reconcile(batch)
    except AmoError as err:
        raise err from exc
    except CreatesUnexplainedError as err:
        return _unconfirmed(batch, err, state, what)
    except InvariantError as err:
        raise exc from err
    state.results.update(found)
    rest = [i for i in batch if i.request_id not in found]
    held = _hold(rest, state)
    edited = _superseded(found)
    log.warning("amo_write_reconciled", what=what, status=exc.status,
                applied=len(found) - edited, superseded=edited, resent=len(rest) - held,
                held=held)  # fmt: skip
    return rest if not held else []


def _hold(unseen: list[Item], state: _State) -> int:
    """With `hold_unseen`, the creates reading did not find are held, not sent again (a list
    may lag longer than the window); how many."""
    if state.held is None:
        return 0
    state.held.extend(i.request_id for i in unseen)
    return len(unseen)


def _superseded(found: Mapping[str, WriteResult]) -> int:
    """How many of the results read back show a newer edit, not ours (`superseded`): whether
    ours applied cannot be told, and they are never resent."""
    return sum(r.superseded for r in found.values())


def _unconfirmed(
    batch: list[Item], err: CreatesUnexplainedError, state: _State, what: str
) -> list[Item]:
    """Keep what reading found; the rest wait as unconfirmed (never resent): nothing to send."""
    state.results.update(err.found)
    waiting = [i.request_id for i in batch if i.request_id not in err.found]
    state.unconfirmed.extend(waiting)
    log.warning("amo_write_unconfirmed", what=what, found=len(err.found), resent=0,
                unconfirmed=len(waiting), reason=str(err))  # fmt: skip
    return []
