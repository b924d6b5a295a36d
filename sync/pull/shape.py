"""The pulled shape: which optional relations the stored data holds (`sync.with`, `sync.chats`).

    plan = settle(conn, runs, store, config)   # in the run's first transaction
    plan.full                                  # the configuration asks for more than was pulled
    plan.record(conn, runs)                    # when that run succeeded

A pull fills `contact_leads`, `contact_customers` and `contact_catalog_elements` only for the
`sync.with` entries that name them (companies and tags come with every contact), and
`contact_chats` only with `sync.chats`; an incremental pull writes them for the contacts that
changed. So a change of the configuration on an existing schema left them partial (more asked:
only changed contacts got theirs) or stale (less asked: the rows stayed forever). The shape
actually pulled is kept in `sync_state` (`pull.shape`: `{"with": [...], "chats": bool}`):

* more asked than pulled: the run becomes a full resync (one warning line says why), and the new
  shape is recorded once it has stored every contact (before its deletions are reconciled: a
  mass-delete guard refusing them must not make every poll a full walk): a run killed or
  failed midway leaves the old shape, so the next pull is full again;
* less asked: the tables of what is no longer pulled are emptied in the transaction that records
  the smaller shape (one warning line): stale links are worse than none for BI. Local chat links
  not pushed yet (negative ids) are kept;
* nothing stored: a first pull, or a schema upgraded from a release that did not keep it: taken
  as pulled with the current configuration (no surprise full resync) and recorded at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from sync.config import Config
from sync.db.contacts import ContactStore
from sync.db.runs import RunStore
from sync.logs import get_logger

log = get_logger("sync.pull")
SHAPE = "pull.shape"
TABLES = {
    "leads": "contact_leads",
    "customers": "contact_customers",
    "catalog_elements": "contact_catalog_elements",
}


@dataclass(frozen=True)
class Shape:
    with_: frozenset[str]
    chats: bool

    @classmethod
    def of(cls, config: Config) -> Shape:
        return cls(frozenset(config.sync.with_), config.sync.chats)

    @classmethod
    def load(cls, value: dict[str, Any] | None) -> Shape | None:
        if value is None:
            return None
        return cls(frozenset(value.get("with") or ()), bool(value.get("chats")))

    def state(self) -> dict[str, Any]:
        return {"with": sorted(self.with_), "chats": self.chats}

    def __and__(self, other: Shape) -> Shape:
        return Shape(self.with_ & other.with_, self.chats and other.chats)

    def beyond(self, other: Shape) -> tuple[list[str], bool]:
        """What this shape has that `other` lacks: `sync.with` entries, and chats."""
        return sorted(self.with_ - other.with_), self.chats and not other.chats


def _tables(entries: list[str], chats: bool) -> list[str]:
    return [TABLES[e] for e in entries if e in TABLES] + (["contact_chats"] if chats else [])


def _reason(verb: str, entries: list[str], chats: bool) -> str:
    parts = [f"sync.with {verb} {', '.join(entries)}"] if entries else []
    if chats:
        parts.append(f"sync.chats turned {'on' if verb == 'gained' else 'off'}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Plan:
    full: bool  # the run must be a full resync to fill what the configuration gained
    wanted: Shape

    def record(self, conn: Connection, runs: RunStore) -> None:
        """After a successful run that filled what was gained: the shape asked is now pulled."""
        if self.full:
            runs.set_state(conn, SHAPE, self.wanted.state())


def settle(conn: Connection, runs: RunStore, store: ContactStore, config: Config) -> Plan:
    """Compare the configured shape with the stored one, in the run's first transaction: empty
    what is no longer pulled (recording the smaller shape), and say whether a full resync must
    fill what was gained (see the module docstring)."""
    wanted = Shape.of(config)
    stored = Shape.load(runs.get_state(conn, SHAPE))
    if stored is None:  # a first pull, or a schema of an older release: pulled as configured
        runs.set_state(conn, SHAPE, wanted.state())
        return Plan(False, wanted)
    lost, lost_chats = stored.beyond(wanted)
    if lost or lost_chats:
        tables = _tables(lost, lost_chats)
        deleted = store.empty_relations(conn, tables)
        stored = stored & wanted
        runs.set_state(conn, SHAPE, stored.state())
        emptied = ", ".join(f"{table} ({rows} rows)" for table, rows in deleted.items())
        why = f"{_reason('lost', lost, lost_chats)}: emptied {emptied}, as no longer pulled"
        log.warning("pull_shape_lost", reason=why, rows=sum(deleted.values()))
    gained, gained_chats = wanted.beyond(stored)
    if not (gained or gained_chats):
        return Plan(False, wanted)
    fills = ", ".join(_tables(gained, gained_chats))
    why = f"{_reason('gained', gained, gained_chats)}: a full resync fills {fills}"
    log.warning("pull_shape_gained", reason=why)
    return Plan(True, wanted)


def stored_relations(config: Config) -> list[str]:
    """The relation rows a pull stores with each contact (`ContactStore.store_page`'s
    `with_relations`): custom field values, tags and companies always, the rest as `sync.with`
    asks. Push's read-back stores the same (`sync.push.readback`)."""
    return ["custom_values", "tags", "companies", *config.sync.with_]
