"""amoCRM's current version of the contacts push updates, read where it cannot lag (issue 11).

Push reads a chunk of contacts with one batched list request (`filter[id]`). amoCRM's lists lag
a write by about a second, so a push right after its own PATCH (or after a dead leader's) may be
shown the version before it. A plan built on such a read is *doubtful* (`UpdatePlan.doubtful`:
the version is older than one this side already saw, the contact is missing, or a field looks
changed on both sides); its contact is read again with `GET /api/v4/contacts/{id}`, which does
not lag, and planned on that. If that read is still older, or fails transiently, nothing is
merged against it: the contact's outbox rows and status stay as they are for the next push, and
`push_remote_stale` is logged. A conflict is never recorded from a version older than one seen.

The lag also hides a CRM user's edit made within it: the list shows the base, and the local
value would overwrite the newer remote one unseen. A push of at most `BY_ID_MAX` contacts (the
daemon's usual one) reads each by id instead, which costs one request for one contact as the
list did; a larger push keeps the list (docs/push.md: the window left, and why).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sync.amo.client import AmoClient
from sync.core.items import PendingUpdate
from sync.errors import AmoTransientError
from sync.logs import get_logger
from sync.push.plan import UpdatePlan

log = get_logger("sync.push")
Remote = Mapping[str, Any] | None
Planner = Callable[[PendingUpdate, Remote], UpdatePlan]
BY_ID_MAX = 5  # a push of at most this many contacts reads each by id (no lag; ≤ 4 GETs more)


def plan_current(
    client: AmoClient, chunk: Sequence[PendingUpdate], plan: Planner, *, by_id: bool = False
) -> tuple[list[UpdatePlan], list[int]]:
    """The chunk's plans on amoCRM's current versions, and the contacts left for the next push.
    `by_id`: every contact is read with `GET /api/v4/contacts/{id}` (a push of a few contacts,
    `BY_ID_MAX`), so a remote edit made within the lists' lag is seen and merged, not
    overwritten; otherwise one batched list read, re-read by id where it may lag our writes."""
    if by_id:
        return _by_id(client, chunk, plan)
    listed = client.fetch_contacts_by_ids(p.contact_id for p in chunk)
    plans: list[UpdatePlan] = []
    deferred: list[int] = []
    for pending in chunk:
        first = plan(pending, listed.get(pending.contact_id))
        final = _reread(client, pending, plan) if first.doubtful else first
        if final is None:
            deferred.append(pending.contact_id)
        else:
            plans.append(final)
    return plans, deferred


def _by_id(
    client: AmoClient, chunk: Sequence[PendingUpdate], plan: Planner
) -> tuple[list[UpdatePlan], list[int]]:
    """Each contact read by id, the reads in parallel (the rate limiter paces them)."""
    with ThreadPoolExecutor(max_workers=max(1, len(chunk)), thread_name_prefix="push-read") as ex:
        finals = list(ex.map(lambda pending: _reread(client, pending, plan), chunk))
    plans = [final for final in finals if final is not None]
    deferred = [p.contact_id for p, final in zip(chunk, finals, strict=True) if final is None]
    return plans, deferred


def _reread(client: AmoClient, pending: PendingUpdate, plan: Planner) -> UpdatePlan | None:
    """The plan on the single-contact read; None when it cannot be trusted yet."""
    try:
        current = client.fetch_contact(pending.contact_id)
    except AmoTransientError as exc:
        _stale(pending, None, error=str(exc))
        return None
    second = plan(pending, current)
    if second.stale:
        _stale(pending, current)
        return None
    return second


def _stale(pending: PendingUpdate, remote: Remote, error: str | None = None) -> None:
    log.warning(
        "push_remote_stale",
        contact_id=pending.contact_id,
        remote_updated_at=(remote or {}).get("updated_at"),
        known_updated_at=_unix(pending),
        error=error,
    )


def _unix(pending: PendingUpdate) -> int | None:
    known = pending.newest_known
    return int(known.timestamp()) if known is not None else None
