"""amoCRM's `contact_deleted` / `contact_restored` events, as the pull reads them.

    events = Events(client)
    listed = events.since(start)               # every event at or after `start`, in any order
    marker = events.marker()                   # where to watch from, and what is listed there
    events.new_deletion(marker, theta)         # a deletion at or after theta not in the marker
    events.confirmed_deletions(ids, give_up)   # of ids, those amoCRM's events say are deleted

A deletion changes no contact's `updated_at`, so only these events show it. The vendor does not
promise the list's order (amoCRM is seen to list newest first), so nothing here depends on it:
events before the start are skipped wherever they are, a read stops early only when the pages
prove the list newest first (`_Order`), and which of a contact's events counts is decided by
`created_at` (`sync.core.mapping.event_changes`), never by position; a deletion and a restore
of one contact in the same second are settled by reading the contact by id (event ids are not
taken as an order: the vendor documents them as opaque strings). `newest` keeps the newest
`created_at` read (the events cursor's next value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.amo.client import AmoClient
from sync.core.mapping import event_changes

EVENT_TYPES = ("contact_deleted", "contact_restored")
ENTITY_IDS_PER_REQUEST = 10  # amoCRM's most for `filter[entity_id]`


@dataclass
class Marker:
    """Where to watch for events from (a second before amoCRM's newest such event, by its own
    clock) and the ids of the events already listed from there."""

    start: int
    known: set[str] = field(default_factory=set)


class Events:
    """Reads the deletion and restore events of one run (thread-safe: no shared state but
    `newest`, which only grows)."""

    def __init__(self, client: AmoClient) -> None:
        self.client = client
        self.newest: int | None = None
        self.later: list[Mapping[str, Any]] = []  # what `new_deletion` listed (applied too)

    def since(self, start: int) -> list[Mapping[str, Any]]:
        return list(self._since(start))

    def _since(self, start: int) -> Iterator[Mapping[str, Any]]:
        pages = self.client.iter_events(types=EVENT_TYPES, filters={"created_at": {"from": start}})
        order = _Order()
        try:
            for page in pages:  # in any order: events before the start are skipped, not an end
                fresh = [e for e in page.items if _at(e) >= start]
                stamps = [_at(e) for e in fresh]
                if stamps:
                    self.newest = max([*stamps, self.newest or 0])
                yield from fresh
                if order.past(page.items, start):
                    return
        finally:
            pages.close()  # type: ignore[attr-defined]

    def marker(self) -> Marker:
        """A second before amoCRM's newest such event (its newest event of any kind if the
        filter is ignored), and the ids listed from there. Same-second events and exclusive date
        bounds are both covered by the one-second margin and the id set. The list's order is
        not promised: the newest event is wherever it is (`_Order` says when to stop)."""
        pages = self.client.iter_events(types=EVENT_TYPES)
        newest: int | None = None
        near: dict[str, int] = {}  # event id → created_at, for those not yet below the start
        order = _Order()
        try:  # usually one request (two when the newest page is full and the list newest first)
            for page in pages:
                for event in page.items:
                    at = _at(event)
                    newest = at if newest is None else max(newest, at)
                    near[str(event.get("id"))] = at
                floor = max(0, (newest or 0) - 1)
                near = {i: at for i, at in near.items() if at >= floor}
                if order.past(page.items, floor):
                    break
        finally:
            pages.close()  # type: ignore[attr-defined]
        return Marker(max(0, newest - 1) if newest is not None else 0, set(near))

    def moved_since(self, before: Marker) -> bool:
        """Whether amoCRM lists a deletion or restore that was not listed at `before`, or the
        list cannot be trusted to show one: it must show at least one event seen before (it
        starts at or before it); if it does not, a spurious 204 or a cut list may be hiding a
        new one too."""
        for attempt in range(2):
            listed = {str(e.get("id")): e.get("type") for e in self.since(before.start)}
            if any(kind in EVENT_TYPES for i, kind in listed.items() if i not in before.known):
                return True
            if before.known & listed.keys():
                return False
            if not before.known and attempt:  # empty before and twice after: nothing happened
                return False
        return bool(before.known)  # what was listed before is gone from the list: do not trust it

    def new_deletion(self, before: Marker, theta: int) -> bool:
        """A deletion that `before` did not list, created at or after `theta` (amoCRM's time),
        or a list that cannot be trusted to show one (as in `moved_since`)."""
        start = before.start if before.known else theta
        for _attempt in range(2):
            listed = self.since(start)
            self.later = listed
            if any(
                e.get("type") == "contact_deleted"
                and str(e.get("id")) not in before.known
                and int(e.get("created_at") or 0) >= theta
                for e in listed
            ):
                return True
            if not before.known or before.known & {str(e.get("id")) for e in listed}:
                return False
        return True

    def confirmed_deletions(self, ids: Sequence[int], give_up: Callable[[int], bool]) -> set[int]:
        """Of `ids`, those whose latest deletion or restore event is a deletion, read by
        `filter[entity_id]` (ten ids a request). Stops early once `give_up(n)` holds for the n
        ids read and not confirmed so far, or when amoCRM ignores the filter (it lists another
        contact's event): what was not read counts as not confirmed."""
        confirmed: set[int] = set()
        for start in range(0, len(ids), ENTITY_IDS_PER_REQUEST):
            chunk = list(ids[start : start + ENTITY_IDS_PER_REQUEST])
            listed = self._events_of(chunk)
            if listed is None:
                break
            changes = event_changes(listed)
            # None: a deletion and a restore in its latest second; the by-id read after it
            # found the contact absent, so the deletion came last
            confirmed.update(c for c in chunk if changes.get(c, (False, 0))[0] is not False)
            if give_up(start + len(chunk) - len(confirmed)):
                break
        return confirmed

    def _events_of(self, chunk: list[int]) -> list[Mapping[str, Any]] | None:
        """Every deletion and restore event of these contacts (None: the filter was ignored)."""
        wanted = set(chunk)
        pages = self.client.iter_events(types=EVENT_TYPES, filters={"entity_id": chunk})
        listed: list[Mapping[str, Any]] = []
        try:
            for page in pages:
                if any(int(e.get("entity_id") or 0) not in wanted for e in page.items):
                    return None
                listed += page.items
        finally:
            pages.close()  # type: ignore[attr-defined]
        return listed


def _at(event: Mapping[str, Any]) -> int:
    return int(event.get("created_at") or 0)


class _Order:
    """When a read of the events list may stop before its last page. The vendor promises no
    order (amocrm-api.md §7: newest first is only what amoCRM is seen to do), so a page of
    events all too old ends the read only when the list is shown to be newest first across
    pages: every event of that page is older than every event of the page before it (strictly:
    with equal seconds either order fits). An oldest-first list never shows that (it is read to
    its end, as it must be: the newest events come last); a list newest first by page but
    scrambled within each page stops one page after the last wanted event."""

    def __init__(self) -> None:
        self.previous_low: int | None = None

    def past(self, items: list[dict[str, Any]], floor: int) -> bool:
        """Whether the read may stop after this page: all of it before `floor`, and all of it
        older than the page before it."""
        stamps = [_at(e) for e in items]
        if not stamps:
            return False
        low, high = min(stamps), max(stamps)
        below = self.previous_low is not None and high < self.previous_low
        self.previous_low = low
        return below and high < floor
