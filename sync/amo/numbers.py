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
    name = f"{what} {_shown(item.get('id'))}"
    for key, nullable in fields.items():
        value = item.get(key)
        if type(value) is int or (value is None and nullable):
            continue
        try:
            item[key] = as_int(value)
        except ValueError:
            raise InvariantError(
                f"amoCRM answered {path} with {name}: {key} is not an integer: {_shown(value)}"
            ) from None
    if what == "contact":
        _custom_fields(item, name, path)


def _custom_fields(contact: MutableMapping[str, Any], name: str, path: str) -> None:
    """`field_id` of each custom-field entry and `enum_id` of each value, when not ints."""
    entries = contact.get("custom_fields_values")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, MutableMapping):
            continue
        _one(entry, "field_id", False, name, path)
        values = entry.get("values")
        for value in values if isinstance(values, list) else ():
            if isinstance(value, MutableMapping) and "enum_id" in value:
                _one(value, "enum_id", True, name, path)


def _one(entry: MutableMapping[str, Any], key: str, nullable: bool, name: str, path: str) -> None:
    value = entry.get(key)
    if type(value) is int or (value is None and nullable) or key not in entry:
        return
    try:
        entry[key] = as_int(value)
    except ValueError:
        raise InvariantError(
            f"amoCRM answered {path} with {name}: custom field {key} is not an integer: "
            f"{_shown(value)}"
        ) from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
