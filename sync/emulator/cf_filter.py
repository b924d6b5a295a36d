"""`filter[custom_fields_values][FIELD_ID][]=value` and `...[FIELD_ID][from|to]=N`.

Equality compares the stored `value` (case-insensitively) or `enum_id`; a range applies to
numeric and date fields. A filter with only empty values is accepted and ignored, as a 2025
report says amoCRM does (the data comes back unfiltered).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.emulator.model import CFValue, Contact
from sync.emulator.params import Query, values_of

_BOOL_TEXT = {True: {"1", "true"}, False: {"0", "false"}}


@dataclass(frozen=True)
class CustomFieldFilter:
    field_id: int
    wanted: frozenset[str] | None = None
    low: float | None = None
    high: float | None = None

    def holds(self, contact: Contact) -> bool:
        values = contact.custom_fields.get(self.field_id)
        if not values:
            return False
        if self.wanted is not None:
            return any(self._equal(value) for value in values)
        return any(self._in_range(value) for value in values)

    def _equal(self, value: CFValue) -> bool:
        raw = value.get("value")
        texts = _BOOL_TEXT[raw] if isinstance(raw, bool) else {str(raw).casefold()}
        if "enum_id" in value:
            texts.add(str(value["enum_id"]))
        return not texts.isdisjoint(self.wanted or ())

    def _in_range(self, value: CFValue) -> bool:
        number = _number(value.get("value"))
        if number is None:
            return False
        return (self.low is None or number >= self.low) and (
            self.high is None or number <= self.high
        )


def parse_cf_filters(raw: object) -> list[CustomFieldFilter]:
    if not isinstance(raw, dict):
        return []
    filters = []
    for key, node in raw.items():
        if key.isdigit():
            parsed = _parse_one(int(key), node)
            if parsed is not None:
                filters.append(parsed)
    return filters


def _parse_one(field_id: int, node: Query | str) -> CustomFieldFilter | None:
    if isinstance(node, dict) and ({"from", "to"} & node.keys()):
        low, high = _number(node.get("from")), _number(node.get("to"))
        if low is None and high is None:
            return None
        return CustomFieldFilter(field_id, low=low, high=high)
    wanted = frozenset(v.casefold() for v in values_of(node) if v != "")
    return CustomFieldFilter(field_id, wanted=wanted) if wanted else None


def _number(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        return float(raw)
    except ValueError:
        return None
