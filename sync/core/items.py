"""The outbox's items as values: one captured change, the coalesced pending update of a contact,
and what push made of it. Pure: no I/O (`sync.db.outbox` reads and writes them, the pure
planning and reporting of push use them without reaching the database).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.core.models import Winner


@dataclass(frozen=True)
class Conflict:
    """A field changed on both sides, as recorded in `sync_conflicts`."""

    field: str
    base: Any
    local: Any
    remote: Any
    local_changed_at: datetime
    remote_updated_at: datetime | None
    policy: str
    winner: Winner | None
    conflict_id: int | None = None  # set when it continues a conflict already on record
    # both sides came to hold the same value while it waited for a person: closed, no winner
    agreed: bool = False


@dataclass(frozen=True)
class Change:
    """One captured row of `sync_changes`."""

    id: int
    contact_id: int
    kind: str
    new_values: Mapping[str, Any]
    base_values: Mapping[str, Any]
    base_updated_at: datetime | None
    changed_at: datetime


@dataclass
class PendingUpdate:
    """The coalesced local edit of one contact amoCRM already knows."""

    contact_id: int
    change_ids: list[int] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)  # column → value before the first edit
    local: dict[str, Any] = field(default_factory=dict)  # column → latest local value
    changed_at: dict[str, datetime] = field(default_factory=dict)  # column → last edit time
    base_updated_at: datetime | None = None  # amoCRM's updated_at the first edit was made on
    open_conflicts: dict[str, tuple[int, Winner | None]] = field(default_factory=dict)
    # column → every value the chain gave it, oldest first (the last one is `local`): an earlier
    # one in amoCRM may be our own write from a run that died before recording it
    values: dict[str, list[Any]] = field(default_factory=dict)
    known_updated_at: datetime | None = None  # the newest amoCRM version this side has seen

    def add(self, change: Change) -> None:
        self.change_ids.append(change.id)
        if not self.change_ids[:-1]:
            self.base_updated_at = change.base_updated_at
        for column, value in change.new_values.items():
            if column not in self.local:
                self.base[column] = change.base_values.get(column)
            self.local[column] = value
            self.values.setdefault(column, []).append(value)
            self.changed_at[column] = change.changed_at

    def earlier_values(self, column: str) -> list[Any]:
        """The values the chain gave `column` before its latest one."""
        return self.values.get(column, [])[:-1]

    @property
    def newest_known(self) -> datetime | None:
        """amoCRM's newest version seen here: the edit's base, or the row's `updated_at` (a
        pull's, or our last PATCH's answer). A version older than this is a lagging read."""
        stamps = [t for t in (self.base_updated_at, self.known_updated_at) if t is not None]
        return max(stamps, default=None)


@dataclass(frozen=True)
class UpdateOutcome:
    """What push made of one claimed contact."""

    pending: PendingUpdate
    done_columns: frozenset[str]  # columns settled: removed from the claimed outbox rows
    write: Mapping[str, Any] = field(default_factory=dict)  # columns taken from amoCRM
    updated_at: datetime | None = None  # amoCRM's updated_at to store (None: leave it)
    held: bool = False  # a field waits for a person
    error: str | None = None  # amoCRM's rejection message
    conflicts: tuple[Conflict, ...] = ()
    sent: bool = False  # a PATCH carried it
    # amoCRM's version the settled columns are known to match: the PATCH's answer, or the
    # version read when nothing was sent. A newer one stored by the time push records was
    # stored by a pull meanwhile, with those columns held back (`sync.push.overtaken`)
    remote_at: datetime | None = None
