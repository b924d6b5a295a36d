"""What one push run did: its counts (also in its `sync_runs` row and `push_finished` event) and
the line the CLI prints for it. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sync.core.items import UpdateOutcome
from sync.lines import count


@dataclass
class PushReport:
    """Counts of one push run (also stored in its `sync_runs` row)."""

    run_id: int = 0
    updated: int = 0
    created: int = 0
    linked: int = 0
    unchanged: int = 0  # contacts whose edit amoCRM already carried
    conflicts: int = 0  # every conflict this run met: new ones and ones on record
    held: int = 0  # contacts with a field waiting for a person
    waiting: int = 0  # conflicts waiting for a person (policy manual, or no winner set yet)
    decided: int = 0  # conflicts on record whose winner a person set: applied by this run
    agreed: int = 0  # waiting conflicts closed: both sides came to hold the same value
    errors: int = 0
    requests: int = 0  # HTTP requests sent to amoCRM, retries included
    recovered: int = 0
    deferred: int = 0  # contacts left for the next push: amoCRM's version could not be trusted
    unconfirmed: int = 0  # new contacts sent, answer left them out, amoCRM unsearchable
    creates_held: int = 0  # creates whose answer was lost, not shown yet: looked for again
    links_held: int = 0  # local chat links not sent: `sync.chats = false`
    read_back: int = 0  # written contacts read back and stored as amoCRM holds them
    read_back_left: int = 0  # written contacts a lagging list showed older: the next pull's

    @property
    def pushed(self) -> int:
        return self.updated + self.created + self.linked

    def describe(self) -> str:
        """One line for a person: `push run 7: 1 updated, 0 created, 0 chat links, 0 already in
        amoCRM, 0 rejected, 2 requests; 1 conflict waiting for a person`."""
        line = (
            f"push run {self.run_id}: {self.updated} updated, {self.created} created, "
            f"{count(self.linked, 'chat link')}, {self.unchanged} already in amoCRM, "
            f"{self.errors} rejected, {count(self.requests, 'request')}"
        )
        parts = [*self._conflicts(), *self._deferred(), *self._creates_held(), *self._held()]
        return "; ".join([line, *parts])

    def _creates_held(self) -> list[str]:
        if not self.creates_held:
            return []
        return [f"{count(self.creates_held, 'new contact')} whose answer was lost not shown by "
                "amoCRM yet: left pending, looked for again (see sync_error)"]  # fmt: skip

    def _deferred(self) -> list[str]:
        """Contacts whose edit stays `pending` for the next push: a person reading "0 updated"
        would otherwise take the edit as lost or sent."""
        if not self.deferred:
            return []
        return [f"{count(self.deferred, 'contact')} left pending for the next push: amoCRM's "
                "version changed meanwhile or could not be read fresh"]  # fmt: skip

    def _held(self) -> list[str]:
        if not self.links_held:
            return []
        return [f"{count(self.links_held, 'chat link')} held: sync.chats = false (not sent)"]

    def _conflicts(self) -> list[str]:
        settled = self.conflicts - self.waiting - self.decided - self.agreed
        parts = []
        if settled:
            parts.append(f"{count(settled, 'new conflict')} settled by conflict_policy")
        if self.decided:
            parts.append(f"{count(self.decided, 'conflict')} settled by a person, applied")
        if self.agreed:
            parts.append(f"{count(self.agreed, 'conflict')} closed: both sides agree")
        if self.waiting:
            parts.append(f"{count(self.waiting, 'conflict')} waiting for a person "
                         "(amosync conflicts list)")  # fmt: skip
        return parts


def tally(outcomes: Sequence[UpdateOutcome]) -> dict[str, int]:
    """The report's counts for recorded outcomes, in one pass."""
    counts = dict.fromkeys(("updated", "unchanged", "conflicts", "held", "waiting", "decided",
                            "agreed", "errors"), 0)  # fmt: skip
    for outcome in outcomes:
        if outcome.error is not None:
            counts["errors"] += 1
            continue
        if outcome.sent:
            counts["updated"] += 1
        elif not outcome.held:
            counts["unchanged"] += 1
        counts["held"] += outcome.held
        for conflict in outcome.conflicts:
            counts["conflicts"] += 1
            if conflict.agreed:
                counts["agreed"] += 1
            elif conflict.winner is None:
                counts["waiting"] += 1
            elif conflict.conflict_id is not None:
                counts["decided"] += 1
    return counts
