"""What one push run wrote, for its read-back (`sync.push.readback`): each contact amoCRM
answered for, the version (`updated_at`) the answer gave, and for a PATCH the fields it sent.
The update pool's threads add to it under a lock.

A read is of our write when it shows a newer version, or the answer's version carrying every
field the PATCH sent. amoCRM's `updated_at` has a one-second resolution, so the version before
ours can show the same second (two pushes within a second, or a CRM user's edit and ours): a
lagging list showing it must not be stored as ours. A created contact is ours in any version a
list shows (it had none before; a lagging list does not show it at all).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.core.models import CF_COLUMN
from sync.push.conflicts import CF_PREFIX, field_codes, same, split
from sync.push.plan import UpdatePlan, unordered_fields


@dataclass(frozen=True)
class Write:
    at: int  # the answer's updated_at (unix seconds); 0: any version listed (a create)
    sent: Mapping[str, Any] = field(default_factory=dict)  # field → value a PATCH sent
    codes: Mapping[str, int] = field(default_factory=dict)  # field code → id the merge used

    def shown_by(self, contact: Mapping[str, Any]) -> bool:
        """The listed `contact` is this write's version or a newer one."""
        at = contact.get("updated_at")
        if type(at) is not int or at < self.at:
            return False
        return at > self.at or self._carries(contact)

    def _carries(self, contact: Mapping[str, Any]) -> bool:
        try:
            codes = {**self.codes, **field_codes(contact.get(CF_COLUMN))}
            theirs = split(contact, codes)
        except Exception:  # noqa: BLE001 - a shape we cannot read is not known to be ours
            return False
        unordered = unordered_fields(frozenset(), contact.get(CF_COLUMN))
        for name, value in self.sent.items():
            key = _by_id(name, codes)
            if not same(value, theirs.get(key), ordered=key not in unordered):
                return False
        return True


def _by_id(name: str, codes: Mapping[str, int]) -> str:
    """`cf:<CODE>` as `cf:<id>` once a code's id is known (amoCRM's read names ids)."""
    if not name.startswith(CF_PREFIX):
        return name
    ref = name[len(CF_PREFIX) :]
    known = None if ref.isdigit() else codes.get(ref.upper())
    return f"{CF_PREFIX}{known}" if known is not None else name


class Written:
    """contact id → its `Write` (the newest answered, for a contact written twice)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes: dict[int, Write] = {}

    def patched(self, plan: UpdatePlan, updated_at: int | None) -> None:
        """An answered PATCH; one without `updated_at` gives nothing to judge a read by."""
        if updated_at is not None:
            self._add(plan.pending.contact_id, Write(updated_at, dict(plan.merge.send), plan.codes))

    def created(self, contact_id: int) -> None:
        self._add(contact_id, Write(0))

    def _add(self, contact_id: int, write: Write) -> None:
        with self._lock:
            known = self.writes.get(contact_id)
            if known is None or write.at >= known.at:
                self.writes[contact_id] = write
