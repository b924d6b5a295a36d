"""Custom-field values: the write shapes amoCRM accepts per field type, stored in its read shape.

Read shapes (what GET returns): text-like `{"value": str}`, numeric `{"value": "123.5"}` (a
string, as amoCRM returns it), checkbox `{"value": bool}`, dates `{"value": unix_seconds}`,
select/multiselect/radiobutton `{"value": label, "enum_id": N}` (no `enum_code`), multitext
`{"value": str, "enum_id": N, "enum_code": "WORK"}`, and the object-valued types (legal_entity,
linked_entity, file) `{"value": {…}}`, the object's keys in amoCRM's own order (`OBJECT_KEYS`)
whatever order a write gave them: never jsonb's (shortest key first), so a client comparing
objects by their text would see a change where there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.emulator.model import CFValue, CustomField

FieldErrors = list[dict[str, str]]
NOT_A_CHOICE = "The value you selected is not a valid choice."

TEXT_TYPES = {"text", "textarea", "url", "streetaddress"}
NUMBER_TYPES = {"numeric", "monetary", "price"}
DATE_TYPES = {"date", "birthday", "date_time"}
CHOICE_TYPES = {"select", "radiobutton", "multiselect", "category"}
# The keys of an object value in the order amoCRM gives them (the vendor's read shapes)
OBJECT_KEYS: dict[str, tuple[str, ...]] = {
    "legal_entity": (
        "name",
        "entity_type",
        "vat_id",
        "tax_registration_reason_code",
        "address",
        "kpp",
        "external_uid",
    ),
    "linked_entity": ("name", "entity_id", "entity_type", "catalog_id"),
    "file": ("file_uuid", "version_uuid", "file_name", "file_size", "is_deleted"),
}
SINGLE_VALUE_TYPES = (
    TEXT_TYPES
    | NUMBER_TYPES
    | DATE_TYPES
    | {"checkbox", "select", "radiobutton"}
    | set(OBJECT_KEYS)
)


def error(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def normalise_values(
    field: CustomField, raw: Any, path: str, errors: FieldErrors
) -> list[CFValue] | None:
    """The stored values for a write, or None to clear the field (`values: null` or `[]`)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        errors.append(error("InvalidType", path, "This value should be of type array."))
        return None
    if field.type in SINGLE_VALUE_TYPES and len(raw) > 1:
        errors.append(error("Count", path, "This collection should contain 1 element or less."))
        return None
    normalise = _NORMALISERS.get(field.type, _text)
    values = []
    for index, value in enumerate(raw):
        item_path = f"{path}.{index}"
        if not isinstance(value, dict):
            errors.append(error("InvalidType", item_path, "This value should be of type object."))
            continue
        stored = normalise(field, value, item_path, errors)
        if stored is not None:
            values.append(stored)
    return values or None


def _text(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    raw = value.get("value")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        errors.append(error("InvalidType", f"{path}.value", "This value should be of type string."))
        return None
    text = str(raw)
    return {"value": text} if text != "" else None


def _number(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    raw = value.get("value")
    number = _as_number(raw)
    if number is None:
        errors.append(
            error("InvalidType", f"{path}.value", "This value should be of type numeric.")
        )
        return None
    return {"value": number}


def _as_number(raw: Any) -> str | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        number = float(raw)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def _checkbox(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    raw = value.get("value")
    if not isinstance(raw, bool):
        errors.append(error("InvalidType", f"{path}.value", "This value should be of type bool."))
        return None
    return {"value": raw}


def _date(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    raw = value.get("value")
    if isinstance(raw, str) and raw.lstrip("-").isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors.append(error("InvalidType", f"{path}.value", "This value should be of type int."))
        return None
    return {"value": raw}


def _choice(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    enum_id, label = value.get("enum_id"), value.get("value")
    option = None
    if enum_id is not None:
        option = field.enum_by_id(enum_id) if isinstance(enum_id, int) else None
        if option is None:
            errors.append(error("NotSupportedChoice", f"{path}.enum_id", NOT_A_CHOICE))
            return None
    elif label is not None:
        option = field.enum_by_value(label) if isinstance(label, str) else None
        if option is None:
            errors.append(error("NotSupportedChoice", f"{path}.value", NOT_A_CHOICE))
            return None
    else:
        errors.append(error("NotBlank", f"{path}.enum_id", "This value should not be blank."))
        return None
    return {"value": option.value, "enum_id": option.id}


def _multitext(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    stored = _text(field, value, path, errors)
    if stored is None:
        return None
    option = _multitext_enum(field, value, path, errors)
    if option is None:
        return None
    return {"value": stored["value"], "enum_id": option.id, "enum_code": option.value}


def _multitext_enum(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> Any:
    enum_id, code = value.get("enum_id"), value.get("enum_code", value.get("enum"))
    if enum_id is not None:
        option = field.enum_by_id(enum_id) if isinstance(enum_id, int) else None
        if option is None:
            errors.append(error("NotSupportedChoice", f"{path}.enum_id", NOT_A_CHOICE))
        return option
    if code is not None:
        option = field.enum_by_value(code) if isinstance(code, str) else None
        if option is None:
            errors.append(error("NotSupportedChoice", f"{path}.enum_code", NOT_A_CHOICE))
        return option
    return field.enums[0] if field.enums else None  # no code given: amoCRM files it as WORK


def object_value(field_type: str, value: dict[str, Any]) -> dict[str, Any]:
    """An object value with its keys in amoCRM's order for the type (others after, as given)."""
    order = OBJECT_KEYS.get(field_type, ())
    first = {key: value[key] for key in order if key in value}
    return {**first, **{key: item for key, item in value.items() if key not in first}}


def _object(
    field: CustomField, value: dict[str, Any], path: str, errors: FieldErrors
) -> CFValue | None:
    raw = value.get("value")
    if not isinstance(raw, dict) or not raw:
        errors.append(error("InvalidType", f"{path}.value", "This value should be of type object."))
        return None
    return {"value": object_value(field.type, raw)}


Normaliser = Callable[[CustomField, dict[str, Any], str, FieldErrors], CFValue | None]
_NORMALISERS: dict[str, Normaliser] = {
    **dict.fromkeys(TEXT_TYPES, _text),
    **dict.fromkeys(NUMBER_TYPES, _number),
    **dict.fromkeys(DATE_TYPES, _date),
    **dict.fromkeys(CHOICE_TYPES, _choice),
    "checkbox": _checkbox,
    "multitext": _multitext,
    **dict.fromkeys(OBJECT_KEYS, _object),
}
