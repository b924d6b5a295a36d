"""amoCRM's current version of the contacts push updates, read where it cannot lag (issue 11).

Push reads a chunk of contacts with one batched list request (`filter[id]`). amoCRM's lists lag
a write by about a second, so a push right after its own PATCH (or after a dead leader's) may be
shown the version before it. A plan built on such a read is *doubtful* (`UpdatePlan.doubtful`:
the version is older than one this side already saw, the contact is missing, or a field looks
changed on both sides); its contact is read again with `GET /api/v4/contacts/{id}`, which does
not lag, and planned on that. If that read is still older, or fails transiently, nothing is
merged against it: the contact's outbox rows and status stay as they are for the next push, and
`push_remote_stale` is logged. A conflict is never recorded from a version older than one seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sync.amo.client import AmoClient
from sync.core.items import PendingUpdate
from sync.errors import AmoTransientError
from sync.logs import get_logger
from sync.push.plan import UpdatePlan

log = get_logger("sync.push")
Remote = Mapping[str, Any] | None
Planner = Callable[[PendingUpdate, Remote], UpdatePlan]


def plan_current(
    client: AmoClient, chunk: Sequence[PendingUpdate], plan: Planner
) -> tuple[list[UpdatePlan], list[int]]:
    """The chunk's plans on amoCRM's current versions, and the contacts left for the next push."""
    listed = client.fetch_contacts_by_ids(p.contact_id for p in chunk)
    plans: list[UpdatePlan] = []
    deferred: list[int] = []
    for pending in chunk:
        first = plan(pending, listed.get(pending.contact_id))
        final = _reread(client, first, plan) if first.doubtful else first
        if final is None:
            deferred.append(pending.contact_id)
        else:
            plans.append(final)
    return plans, deferred


def _reread(client: AmoClient, first: UpdatePlan, plan: Planner) -> UpdatePlan | None:
    """The plan on the single-contact read; None when it cannot be trusted yet."""
    pending = first.pending
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
