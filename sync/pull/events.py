"""amoCRM's `contact_deleted` / `contact_restored` events, as the pull reads them.

    events = Events(client)
    listed = events.since(start)               # newest first, down to `start` (inclusive)
    marker = events.marker()                   # where to watch from, and what is listed there
    events.new_deletion(marker, theta)         # a deletion at or after theta not in the marker
    events.confirmed_deletions(ids, give_up)   # of ids, those amoCRM's events say are deleted

A deletion changes no contact's `updated_at`, so only these events show it. The list is read
newest first and stops at the first event older than the start; `newest` keeps the newest
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
        try:
            for page in pages:  # newest first: stop at the first event before the start
                fresh = [e for e in page.items if int(e.get("created_at") or 0) >= start]
                stamps = [int(e.get("created_at") or 0) for e in fresh]
                if stamps:
                    self.newest = max([*stamps, self.newest or 0])
                yield from fresh
                if len(fresh) < len(page.items):
                    return
        finally:
            pages.close()  # type: ignore[attr-defined]

    def marker(self) -> Marker:
        """A second before amoCRM's newest such event (its newest event of any kind if the
        filter is ignored), and the ids listed from there. Same-second events and exclusive date
        bounds are both covered by the one-second margin and the id set."""
        pages = self.client.iter_events(types=EVENT_TYPES)  # newest first
        start: int | None = None
        known: set[str] = set()
        try:  # usually one request: the newest page holds that second and the one before
            for page in pages:
                for event in page.items:
                    at = int(event.get("created_at") or 0)
                    start = max(0, at - 1) if start is None else start
                    if at < start:
                        return Marker(start, known)
                    known.add(str(event.get("id")))
        finally:
            pages.close()  # type: ignore[attr-defined]
        return Marker(start or 0, known)

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
