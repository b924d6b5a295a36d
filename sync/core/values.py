"""How two amoCRM values are compared: one rule for push's three-way merge (`sync.push.conflicts`)
and for the client's check of a lost write (`sync.amo.matching`). Pure functions.

amoCRM answers with JSON of its own choosing: a number written as `"5"` may come back as `5` or
`5.0`, a cleared text as `""` or `null`, a checkbox as `true`, an enum code in another case. Both
sides are compared as normalised text, so none of these differences reads as a change. A value
that is a JSON object (legal_entity, linked_entity, file, chained_list) is compared by its
canonical form: keys sorted, whole floats as integers. amoCRM's key order is its own, and jsonb
stores keys in yet another (shortest first), so the order of keys never counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")


def as_text(value: Any) -> str | None:
    """The normalised text of a scalar (None for null and for empty or blank text, which amoCRM
    shows alike: surrounding blanks never count)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(canonical(value), ensure_ascii=False, sort_keys=True)
    return str(value).strip() or None


def canonical(value: Any) -> Any:
    """A JSON value with every object's keys sorted (at any depth) and whole floats as integers:
    two values equal as JSON have equal canonical forms whatever their key order."""
    if isinstance(value, Mapping):
        return {str(key): canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def same_scalar(a: Any, b: Any, *, key: str | None = None) -> bool:
    """Equal as amoCRM means them; enum codes (`key="enum_code"`) ignore case."""
    left, right = as_text(a), as_text(b)
    if key == "enum_code" and left is not None and right is not None:
        return left.casefold() == right.casefold()
    return left == right


# Custom-field types whose values are a set: amoCRM keeps them in its own (the options') order.
# Every other list is ordered as written: the first phone or email of a multitext is the main one.
UNORDERED_TYPES = frozenset({"multiselect"})


def same_items(
    a: Sequence[A], b: Sequence[B], same: Callable[[A, B], bool], *, ordered: bool = False
) -> bool:
    """Whether the two lists pair off one to one under `same`: position by position when
    `ordered`, else in any order (a set of values)."""
    if len(a) != len(b):
        return False
    if ordered:
        return all(same(left, right) for left, right in zip(a, b, strict=True))
    unused = list(b)
    for item in a:
        hit = next((other for other in unused if same(item, other)), None)
        if hit is None:
            return False
        unused.remove(hit)
    return True
