"""Integers in amoCRM's read answers, whatever JSON type they come in.

amoCRM sends ids and unix seconds as JSON numbers, but its webhooks send every value as a
string (amocrm-api.md §7) and nothing in the reference rules out a list answer with `"123"`.
`normalise(path, data)` is the one place where a read answer's integer fields are made ints,
in place, before anything else looks at them (`AmoClient.get`): a number, an integral float or
a numeric string is accepted; anything else is an `InvariantError` whose one line names the
endpoint, the contact (or event, link) and the field. Event ids stay strings (they are ULIDs).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from sync.errors import InvariantError

CONTACTS = "/api/v4/contacts"
# field → may it be null? (`id` never)
CONTACT_INTS = {
    "id": False, "updated_at": True, "created_at": True, "responsible_user_id": True,
    "group_id": True, "created_by": True, "updated_by": True, "closest_task_at": True,
    "account_id": True,
}  # fmt: skip
EVENT_INTS = {"entity_id": False, "created_at": False, "created_by": True, "account_id": True}
CHAT_INTS = {"contact_id": False, "id": True}
_LIST_KEYS = {
    CONTACTS: ("contacts", CONTACT_INTS, "contact"),
    "/api/v4/events": ("events", EVENT_INTS, "event"),
    "/api/v4/contacts/chats": ("chats", CHAT_INTS, "chat link"),
}


def as_int(value: Any) -> int:
    """An int from an int, an integral float or a numeric string ("123", " -5 "); else
    ValueError. A bool is not a number here."""
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit():
            return int(text)
    raise ValueError(f"not an integer: {_shown(value)}")


def normalise(path: str, data: Any) -> Any:
    """Make the integer fields of a read answer from `path` ints (see the module docstring)."""
    if not isinstance(data, MutableMapping):
        return data
    if path.startswith(CONTACTS + "/") and path[len(CONTACTS) + 1 :].isdigit():
        _entity(data, CONTACT_INTS, "contact", path)  # GET /api/v4/contacts/{id}
        return data
    known = _LIST_KEYS.get(path)
    embedded = data.get("_embedded")
    if known is None or not isinstance(embedded, Mapping):
        return data
    key, fields, what = known
    items = embedded.get(key)
    for item in items if isinstance(items, list) else ():
        if isinstance(item, MutableMapping):
            _entity(item, fields, what, path)
    return data


def _entity(
    item: MutableMapping[str, Any], fields: Mapping[str, bool], what: str, path: str
) -> None:
    """Hot (every contact of a pull): the common all-ints case is one comprehension."""
    odd = [key for key in fields if type(item.get(key)) is not int]
    for key in odd:
        value = item.get(key)
        if value is None and fields[key]:
            continue
        item[key] = _coerced(value, key, item, what, path)
    if what != "contact":
        return
    entries = item.get("custom_fields_values")
    for entry in entries if type(entries) is list else ():
        if type(entry) is not dict:
            continue
        if "field_id" in entry and type(entry["field_id"]) is not int:
            entry["field_id"] = _coerced(entry["field_id"], "field_id", item, what, path)
        values = entry.get("values")
        for value in values if type(values) is list else ():
            enum = value.get("enum_id") if type(value) is dict else None
            if enum is not None and type(enum) is not int:
                value["enum_id"] = _coerced(enum, "enum_id", item, what, path)


def _coerced(value: Any, key: str, item: Mapping[str, Any], what: str, path: str) -> int:
    try:
        return as_int(value)
    except ValueError:
        field = key if key not in ("field_id", "enum_id") else f"custom field {key}"
        raise InvariantError(
            f"amoCRM answered {path} with {what} {_shown(item.get('id'))}: {field} is not an "
            f"integer: {_shown(value)}"
        ) from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
