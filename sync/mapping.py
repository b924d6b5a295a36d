"""amoCRM contact JSON → database rows: pure functions, no I/O.

    rows = to_rows(page_items, fields, with_=("leads", "customers", "catalog_elements"))
    rows.contacts          one dict per contact, the `contacts` columns (unix seconds as ints)
    rows.custom_values     one dict per custom field value (contact_custom_field_values)
    rows.tags / .leads / .customers / .companies / .catalog_elements   relation rows

`fields` maps field id → definition (`FieldDef`, from GET /api/v4/contacts/custom_fields); the
names, codes and types in the contact JSON are used when a field is not (yet) known.
`enum_id` and `enum_code` are the value's own, as amoCRM sent them: a phone or e-mail carries its
kind (`WORK`, `MOB`, …) in `enum_code`; a select, multiselect or radiobutton value carries its
option's label in `value` and its id in `enum_id`, and no `enum_code` (NULL). The definitions'
option labels are never copied into a row.
Values become text: dates as ISO 8601 (UTC), checkboxes as true/false, objects as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.models import WRITABLE_FIELDS

JSON = dict[str, Any]
CONTACT_SCALARS = (
    "id",
    "name",
    "first_name",
    "last_name",
    "responsible_user_id",
    "group_id",
    "created_by",
    "updated_by",
    "account_id",
)
CONTACT_TIMES = ("created_at", "updated_at", "closest_task_at")
DATE_TYPES = frozenset({"date", "birthday", "date_time"})
RELATIONS_ALWAYS = ("tags", "companies")


@dataclass(frozen=True)
class FieldDef:
    """A custom field definition as much as the mapping needs."""

    id: int
    name: str | None
    code: str | None
    type: str | None
    # enum id → label; only tells an unknown enum (refresh the definitions), never copied to rows
    enums: Mapping[int, str] = field(default_factory=dict)


@dataclass
class PageRows:
    """The rows of one page of contacts, ready for set-based writes."""

    contacts: list[JSON] = field(default_factory=list)
    custom_values: list[JSON] = field(default_factory=list)
    tags: list[JSON] = field(default_factory=list)
    leads: list[JSON] = field(default_factory=list)
    customers: list[JSON] = field(default_factory=list)
    companies: list[JSON] = field(default_factory=list)
    catalog_elements: list[JSON] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [row["id"] for row in self.contacts]


def field_def(raw: Mapping[str, Any]) -> FieldDef:
    """A custom field definition from GET /api/v4/contacts/custom_fields."""
    enums = {int(e["id"]): str(e.get("value")) for e in raw.get("enums") or () if "id" in e}
    return FieldDef(int(raw["id"]), raw.get("name"), raw.get("code"), raw.get("type"), enums)


def unknown_fields(items: Iterable[Mapping[str, Any]], fields: Mapping[int, FieldDef]) -> bool:
    """True if a contact uses a field or an enum the definitions do not know."""
    for item in items:
        for cf in item.get("custom_fields_values") or ():
            known = fields.get(int(cf.get("field_id", 0)))
            if known is None:
                return True
            for value in cf.get("values") or ():
                enum_id = value.get("enum_id")
                if enum_id is not None and int(enum_id) not in known.enums:
                    return True
    return False


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def contact_row(item: Mapping[str, Any]) -> JSON:
    """The `contacts` columns of one contact (times stay unix seconds; SQL converts them)."""
    row: JSON = {name: item.get(name) for name in CONTACT_SCALARS}
    for name in CONTACT_TIMES:
        row[name] = _int(item.get(name))
    row["id"] = int(item["id"])
    row["custom_fields_values"] = item.get("custom_fields_values") or None
    return row


def remote_values(item: Mapping[str, Any]) -> JSON:
    """amoCRM's values of the writable fields, the shape `contact_remote_values` keeps."""
    return {name: item.get(name) if name != "custom_fields_values" else
            (item.get(name) or None) for name in WRITABLE_FIELDS}  # fmt: skip


def value_text(value: Any, field_type: str | None) -> str | None:
    """One custom field value as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if field_type in DATE_TYPES and isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def custom_value_rows(
    contact_id: int, values: Sequence[Mapping[str, Any]] | None, fields: Mapping[int, FieldDef]
) -> list[JSON]:
    """One row per value of every custom field of a contact."""
    rows: list[JSON] = []
    for cf in values or ():
        field_id = int(cf["field_id"])
        known = fields.get(field_id)
        ftype = known.type if known else cf.get("field_type")
        for position, value in enumerate(cf.get("values") or ()):
            rows.append(_value_row(contact_id, field_id, cf, known, ftype, position, value))
    return rows


def _value_row(  # noqa: PLR0917 - one value's whole context, called from one place
    contact_id: int,
    field_id: int,
    cf: Mapping[str, Any],
    known: FieldDef | None,
    ftype: str | None,
    position: int,
    value: Mapping[str, Any],
) -> JSON:
    return {
        "contact_id": contact_id,
        "field_id": field_id,
        "field_code": known.code if known else cf.get("field_code"),
        "field_name": known.name if known else cf.get("field_name"),
        "field_type": ftype,
        "position": position,
        "value": value_text(value.get("value"), ftype),
        "enum_id": _int(value.get("enum_id")),
        "enum_code": value.get("enum_code"),  # amoCRM's own: null for select-type values
    }


def _embedded(item: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    embedded = item.get("_embedded") or {}
    return list(embedded.get(key) or ())


def _links(contact_id: int, items: Iterable[Mapping[str, Any]], column: str) -> list[JSON]:
    ids = dict.fromkeys(int(i["id"]) for i in items)  # amoCRM may repeat an id: keep one
    return [{"contact_id": contact_id, column: i} for i in ids]


def tag_rows(contact_id: int, item: Mapping[str, Any]) -> list[JSON]:
    tags = {int(t["id"]): t.get("name") for t in _embedded(item, "tags")}
    return [{"contact_id": contact_id, "tag_id": i, "tag_name": n} for i, n in tags.items()]


def catalog_rows(contact_id: int, item: Mapping[str, Any]) -> list[JSON]:
    rows: dict[tuple[int, int], JSON] = {}
    for element in _embedded(item, "catalog_elements"):
        meta = element.get("metadata") or {}
        # the reference lists quantity and catalog_id on the element, the SDK reads metadata
        catalog_id = element.get("catalog_id") or meta.get("catalog_id")
        quantity = element.get("quantity")
        quantity = meta.get("quantity") if quantity is None else quantity
        key = (int(catalog_id or 0), int(element["id"]))
        rows[key] = {
            "contact_id": contact_id,
            "catalog_id": key[0],
            "element_id": key[1],
            "quantity": quantity,
            "metadata": meta or None,
        }
    return list(rows.values())


def to_rows(
    items: Iterable[Mapping[str, Any]], fields: Mapping[int, FieldDef], with_: Sequence[str]
) -> PageRows:
    """All rows of a page of contacts. A contact listed twice keeps its newest version."""
    newest: dict[int, Mapping[str, Any]] = {}
    for item in items:
        cid = int(item["id"])
        stamp = item.get("updated_at") or 0
        if cid not in newest or stamp >= (newest[cid].get("updated_at") or 0):
            newest[cid] = item
    rows = PageRows()
    for cid, item in newest.items():
        _add_contact(rows, cid, item, fields, with_)
    return rows


def _add_contact(
    rows: PageRows,
    cid: int,
    item: Mapping[str, Any],
    fields: Mapping[int, FieldDef],
    with_: Sequence[str],
) -> None:
    rows.contacts.append(contact_row(item))
    rows.custom_values += custom_value_rows(cid, item.get("custom_fields_values"), fields)
    rows.tags += tag_rows(cid, item)
    rows.companies += _links(cid, _embedded(item, "companies"), "company_id")
    if "leads" in with_:
        rows.leads += _links(cid, _embedded(item, "leads"), "lead_id")
    if "customers" in with_:
        rows.customers += _links(cid, _embedded(item, "customers"), "customer_id")
    if "catalog_elements" in with_:
        rows.catalog_elements += catalog_rows(cid, item)


def chat_rows(links: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """`contact_chats` rows from GET /api/v4/contacts/chats (one row per chat)."""
    rows = {str(x["chat_id"]): x for x in links}
    return [
        {"id": int(x["id"]), "contact_id": int(x["contact_id"]), "chat_id": chat}
        for chat, x in rows.items()
    ]


def event_changes(events: Iterable[Mapping[str, Any]]) -> dict[int, tuple[bool, int]]:
    """contact_deleted / contact_restored events → contact id → (deleted?, at); the latest
    event of each contact wins (ties: the later id, amoCRM's ids sort by time)."""
    latest: dict[int, tuple[int, str, bool]] = {}
    for event in events:
        kind = event.get("type")
        if kind not in ("contact_deleted", "contact_restored") or event.get("entity_type") not in (
            "contact",
            None,
        ):
            continue
        key = (int(event.get("created_at") or 0), str(event.get("id")), kind == "contact_deleted")
        cid = int(event["entity_id"])
        if cid not in latest or key[:2] > latest[cid][:2]:
            latest[cid] = key
    return {cid: (deleted, at) for cid, (at, _, deleted) in latest.items()}
