"""The shapes a local `contacts.custom_fields_values` may take. Pure: no I/O.

    problem(column) -> str | None     "custom_fields_values[0].field_id: must be an integer, …"

Accepted (see docs/push.md, "Custom fields"):
- NULL (JSON null too): the contact has no custom fields — every field is cleared, as amoCRM's
  own `null` means;
- a JSON array of field objects, each with `field_id` (integer) and/or `field_code` (string) and
  `values`: null or [] (the field is cleared) or an array of value objects. Other keys of a field
  object (amoCRM's read shape carries `field_name`, `field_type`, …) are ignored, never sent;
- a value object has `value` (string, number, boolean, or an object: amoCRM's own shape for
  legal_entity, linked_entity and file fields, judged by amoCRM), `enum_id` (integer) and/or
  `enum_code` (string), at least one of them not null, and no other key; `enum` is read as an
  alias of `enum_code` (a stand-in built from the vendor reference's GET example renders
  multitext values so), and push sends it as `enum_code` (`enum_code_of`).
An id is at most 9223372036854775807 (bigint) and a number value below 1e300 in magnitude, as
is any number of a field object outside `values` (`field_name`, …).
A field named twice in one array is refused. A field whose values are as in the column before
the edit (`base`) is checked for its shape only, not value by value. The same rules run at SQL
time in the trigger of migration 0003 (since 0009 shapes only: unknown fields, choices and
wrong types are amoCRM's to reject; since 0014 numbers bounded) and produce the same messages;
push runs this copy for edits captured before the trigger existed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

COLUMN = "custom_fields_values"
VALUE_KEYS = ("value", "enum_id", "enum_code", "enum")
BIGINT = 2**63 - 1  # an id's upper bound: the tables' id columns are bigint
# a number value's magnitude bound: a double (amoCRM's and most JSON readers' number) ends near
# 1.8e308, and jsonb prints 1e5000 as 5001 digits, more than Python's json reads (4300)
VALUE_BOUND = 10**300
SHAPE = (
    'NULL, or a JSON array of {"field_id": <integer> or "field_code": "<CODE>", '
    '"values": null | [] | [{"value": <text, number, boolean or object>, "enum_id": <integer>, '
    '"enum_code": "<CODE>"}, …]}'
)


class ShapeError(ValueError):
    """A custom_fields_values that is not one of the accepted shapes; the message is one line."""


def problem(column: Any, base: Any = None) -> str | None:
    """What is wrong with a local custom_fields_values, as `path: what`; None when acceptable.

    A field whose values are exactly as in `base` (the column before the edit) is not checked
    value by value: push never sends an unchanged field, so values amoCRM itself gave (an object
    as `value`, an address's `subtype`) do not stop edits of the contact's other fields."""
    if column is None:
        return None
    if not isinstance(column, list):
        return f"{COLUMN}: must be a JSON array of fields or NULL, got {json_type(column)}"
    seen: dict[str, int] = {}
    codes = _codes(column)
    kept = _values_by_field(base)
    for index, entry in enumerate(column):
        path, check_items = f"{COLUMN}[{index}]", not _unchanged(entry, kept, codes)
        found = entry_problem(entry, path, check_items) or _duplicate(entry, index, seen, codes)
        if found:
            return found
    return None


def require(column: Any, base: Any = None) -> None:
    """Raise ShapeError unless `column` is an accepted custom_fields_values (see `problem`)."""
    found = problem(column, base)
    if found:
        raise ShapeError(found)


def entry_problem(entry: Any, path: str, check_items: bool = True) -> str | None:
    """What is wrong with one field object of the array (its values too, with `check_items`)."""
    if not isinstance(entry, Mapping):
        return f"{path}: must be an object with field_id or field_code and values, got " + (
            json_type(entry)
        )
    if entry.get("field_id") is None and entry.get("field_code") is None:
        return f"{path}: needs field_id or field_code"
    return (
        _integer(entry, "field_id", path)
        or _code(entry, "field_code", path)
        or _huge_number(entry, path)
        or values_problem(entry, f"{path}.values", check_items)
    )


def values_problem(entry: Mapping[str, Any], path: str, check_items: bool = True) -> str | None:
    if "values" not in entry:
        return f"{path}: missing; write null or [] to clear the field"
    values = entry["values"]
    if values is None:
        return None
    if not isinstance(values, list):
        return f"{path}: must be an array of values or null, got {json_type(values)}"
    if not check_items:
        return None
    for index, item in enumerate(values):
        found = item_problem(item, f"{path}[{index}]")
        if found:
            return found
    return None


def item_problem(item: Any, path: str) -> str | None:
    """What is wrong with one value object."""
    if not isinstance(item, Mapping):
        return f"{path}: must be an object with value, enum_id or enum_code, got {json_type(item)}"
    extra = sorted(str(k) for k in item if k not in VALUE_KEYS)
    if extra:
        return f'{path}: unexpected key "{extra[0]}" (a value has value, enum_id, enum_code)'
    if all(item.get(k) is None for k in VALUE_KEYS):
        return f"{path}: needs value, enum_id or enum_code"
    return (
        _value(item.get("value"), path)
        or _integer(item, "enum_id", path)
        or _code(item, "enum_code", path)
        or _code(item, "enum", path)
    )


def _value(value: Any, path: str) -> str | None:
    """What is wrong with a value's `value`: an array, or a number no reader can take."""
    if isinstance(value, list):
        return (f"{path}.value: must be a string, number, boolean or object (legal_entity, "
                f"linked_entity, file: amoCRM's own shape), got array")  # fmt: skip
    if isinstance(value, Mapping) and _has_huge(value):
        return f"{path}.value: holds a number of magnitude 1e300 or more"
    if _is_huge(value):
        return f"{path}.value: must be a number below 1e300 in magnitude, got {shown(value)}"
    return None


def enum_code_of(item: Mapping[str, Any]) -> Any:
    """A value's `enum_code`, or its alias `enum` when `enum_code` is absent or null."""
    code = item.get("enum_code")
    return item.get("enum") if code is None else code


def _integer(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not is_integer(value):
        return f"{path}.{key}: must be an integer, got {shown(value)}"
    if value <= 0:
        return f"{path}.{key}: must be above 0, got {shown(value)}"
    if value > BIGINT:
        return f"{path}.{key}: must be at most {BIGINT}, got {shown(value)}"
    return None


def _huge_number(entry: Mapping[str, Any], path: str) -> str | None:
    """A number of magnitude VALUE_BOUND or more anywhere in a field object outside `values`
    (keys that push ignores, such as `field_name`, are still read back from the column)."""
    if _has_huge({k: v for k, v in entry.items() if k != "values"}):
        return f"{path}: holds a number of magnitude 1e300 or more (outside values)"
    return None


def _has_huge(obj: Mapping[str, Any]) -> bool:
    """A number of magnitude VALUE_BOUND or more anywhere inside `obj`."""
    stack = list(obj.values())
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif _is_huge(value):
            return True
    return False


def _is_huge(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and abs(value) >= VALUE_BOUND


def _code(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return f"{path}.{key}: must be a non-empty string, got {shown(value)}"


def _codes(column: list[Any]) -> dict[str, int]:
    """field_code → field_id from the entries that carry both (amoCRM's read shape)."""
    return {
        str(e["field_code"]).upper(): int(e["field_id"])
        for e in column
        if isinstance(e, Mapping) and isinstance(e.get("field_code"), str)
        and is_integer(e.get("field_id"))
    }  # fmt: skip


def _duplicate(
    entry: Any, index: int, seen: dict[str, int], codes: Mapping[str, int]
) -> str | None:
    key = field_ref(entry, codes)
    if key in seen:
        return f"{COLUMN}[{index}]: field {key} appears twice (also at [{seen[key]}])"
    seen[key] = index
    return None


def _values_by_field(base: Any) -> dict[str, Any]:
    """The values of each field of the column before the edit (a malformed base: none)."""
    if not isinstance(base, list):
        return {}
    codes = _codes(base)
    kept: dict[str, Any] = {}
    for entry in base:
        if isinstance(entry, Mapping) and _names_a_field(entry):
            kept[field_ref(entry, codes)] = entry.get("values")
    return kept


def _unchanged(entry: Any, kept: Mapping[str, Any], codes: Mapping[str, int]) -> bool:
    if not (kept and isinstance(entry, Mapping) and _names_a_field(entry) and "values" in entry):
        return False
    ref = field_ref(entry, codes)
    return ref in kept and kept[ref] == entry["values"]


def _names_a_field(entry: Mapping[str, Any]) -> bool:
    field_id, code = entry.get("field_id"), entry.get("field_code")
    if field_id is not None:
        return is_integer(field_id)
    return isinstance(code, str) and bool(code.strip())


def field_ref(entry: Mapping[str, Any], codes: Mapping[str, int]) -> str:
    """The field an accepted entry names: its id, or its code when only that is known."""
    if entry.get("field_id") is not None:
        return str(int(entry["field_id"]))
    code = str(entry["field_code"]).upper()
    return str(codes[code]) if code in codes else code


def is_integer(value: Any) -> bool:
    """A JSON integer (570003 or 570003.0), not a boolean nor a string of digits."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as PostgreSQL's jsonb_typeof names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def shown(value: Any) -> str:
    """An identifier-like value as JSON text (cut at 40 characters); containers by type only."""
    if isinstance(value, (Mapping, list)) or value is None:
        return json_type(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:40] + "…"
