"""amoCRM contact JSON → database rows: pure functions, no I/O.

    rows = to_rows(page_items, fields, with_=("leads", "customers", "catalog_elements"))
    rows.contacts          one tuple per contact, in `CONTACT_COLUMNS` order (unix seconds as ints)
    rows.custom_values     one tuple per custom field value (contact_custom_field_values)
    rows.tags / .leads / .customers / .companies / .catalog_elements   relation rows
    rows.dicts("tags")     the same rows as dicts, for people and tests

Rows are tuples in the column order `RELATION_COLUMNS[attr]` names (the contact id first):
what `COPY` takes, and about half the cost of a dict each on a page's ~2,000 rows. Their values
are of the columns' types (ints, strs or None; only catalog quantities and metadata are passed
as amoCRM sent them), so the COPY can format them by column (`sync.db.staging.copy_rows`).
`fields` maps field id → definition (`FieldDef`, from GET /api/v4/contacts/custom_fields); the
names, codes and types in the contact JSON are used when a field is not (yet) known.
`enum_id` and `enum_code` are the value's own, as amoCRM sent them: a phone or e-mail carries its
kind (`WORK`, `MOB`, …) in `enum_code` (or in `enum`, its alias in the vendor reference's GET
example, read the same); a select, multiselect or radiobutton value carries its
option's label in `value` and its id in `enum_id`, and no `enum_code` (NULL). The definitions'
option labels are never copied into a row.
Values become text: dates as ISO 8601 (UTC), checkboxes as true/false, objects as JSON. A date
amoCRM holds that no ISO date can show (milliseconds, 1735689600000; before year 1 or after 9999)
is its number as text, never a failed pull: amoCRM accepts such values from any integration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any

from sync.core.cf_shape import BIGINT, is_integer

JSON = dict[str, Any]
Row = tuple[Any, ...]
CONTACT_TIMES = ("created_at", "updated_at", "closest_task_at")
# a contact row's columns (times in unix seconds; custom_fields_values as amoCRM sent it, or None)
CONTACT_COLUMNS = (
    "id",
    "name",
    "first_name",
    "last_name",
    "responsible_user_id",
    "group_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "closest_task_at",
    "account_id",
    "custom_fields_values",
)
UPDATED_AT = CONTACT_COLUMNS.index("updated_at")
# PageRows attribute → the columns of its tuples (each a relation table's, contact_id first)
RELATION_COLUMNS: dict[str, tuple[str, ...]] = {
    "custom_values": (
        "contact_id",
        "field_id",
        "position",
        "field_code",
        "field_name",
        "field_type",
        "value",
        "enum_id",
        "enum_code",
    ),
    "tags": ("contact_id", "tag_id", "tag_name"),
    "leads": ("contact_id", "lead_id"),
    "customers": ("contact_id", "customer_id"),
    "companies": ("contact_id", "company_id"),
    "catalog_elements": ("contact_id", "catalog_id", "element_id", "quantity", "metadata"),
}
DATE_TYPES = frozenset({"date", "birthday", "date_time"})
RELATIONS_ALWAYS = ("tags", "companies")
_ID = itemgetter("id")


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
    """The rows of one page of contacts, ready for set-based writes (tuples: see the module
    docstring for their columns)."""

    contacts: list[Row] = field(default_factory=list)
    custom_values: list[Row] = field(default_factory=list)
    tags: list[Row] = field(default_factory=list)
    leads: list[Row] = field(default_factory=list)
    customers: list[Row] = field(default_factory=list)
    companies: list[Row] = field(default_factory=list)
    catalog_elements: list[Row] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [row[0] for row in self.contacts]

    def dicts(self, attr: str) -> list[JSON]:
        """The rows of `attr` ("contacts", "tags", …) as dicts keyed by column name."""
        columns = CONTACT_COLUMNS if attr == "contacts" else RELATION_COLUMNS[attr]
        return [dict(zip(columns, row, strict=True)) for row in getattr(self, attr)]


def field_def(raw: Mapping[str, Any]) -> FieldDef:
    """A custom field definition from GET /api/v4/contacts/custom_fields."""
    enums = {int(e["id"]): str(e.get("value")) for e in raw.get("enums") or () if "id" in e}
    name, code, kind = (_text(raw.get(key)) for key in ("name", "code", "type"))
    return FieldDef(int(raw["id"]), name, code, kind, enums)


def unknown_fields(items: Iterable[Mapping[str, Any]], fields: Mapping[int, FieldDef]) -> bool:
    """True if a contact uses a field or an enum the definitions do not know."""
    for item in items:
        for cf in item.get("custom_fields_values") or ():
            field_id = cf.get("field_id", 0)
            known = fields.get(field_id) or fields.get(int(field_id))
            if known is None:
                return True
            enums = known.enums
            for value in cf.get("values") or ():
                enum_id = value.get("enum_id")
                if enum_id is not None and enum_id not in enums and int(enum_id) not in enums:
                    return True
    return False


def _whole(value: Any) -> Any:
    """An integer column's value: amoCRM's int as is, an int-like string or float made one;
    anything else is left for PostgreSQL to refuse (one clear line, not a crash here)."""
    if value is None or type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _text(value: Any) -> Any:
    return value if value is None or type(value) is str else str(value)


def contact_row(item: Mapping[str, Any]) -> Row:
    """The `contacts` columns of one contact, in `CONTACT_COLUMNS` order (times stay unix
    seconds; SQL converts them)."""
    get = item.get
    return (
        int(item["id"]), _text(get("name")), _text(get("first_name")), _text(get("last_name")),
        _whole(get("responsible_user_id")), _whole(get("group_id")), _whole(get("created_by")),
        _whole(get("updated_by")), _whole(get("created_at")), _whole(get("updated_at")),
        _whole(get("closest_task_at")), _whole(get("account_id")),
        get("custom_fields_values") or None,
    )  # fmt: skip


def value_text(value: Any, field_type: str | None) -> str | None:
    """One custom field value as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if field_type in DATE_TYPES and isinstance(value, int | float):
        return date_text(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def date_text(seconds: int | float) -> str:
    """A date value's text: ISO 8601 in UTC when it is a date in years 1-9999, else amoCRM's
    number as written (a whole float as an integer): the row keeps what amoCRM holds and the
    pull goes on, whatever another integration stored (milliseconds, 1e20, a year before 1)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (ValueError, OverflowError, OSError):  # out of datetime's range, or not finite
        if isinstance(seconds, float) and seconds.is_integer():
            return str(int(seconds))
        return str(seconds)


def custom_value_rows(
    contact_id: int, values: Sequence[Mapping[str, Any]] | None, fields: Mapping[int, FieldDef]
) -> list[Row]:
    """One row per value of every custom field of a local `custom_fields_values` (a held-back
    edit: `RELATION_COLUMNS` "custom_values"). Fields are named as amoCRM's writes accept
    them (`local_entries`)."""
    rows: list[Row] = []
    if values:
        _value_rows(rows.append, contact_id, local_entries(values, fields), fields)
    return rows


def local_entries(values: Iterable[Any], fields: Mapping[int, FieldDef]) -> list[JSON]:
    """A local custom_fields_values' field objects, each with its `field_id`: one named only by
    `field_code` takes the id another entry carrying both gives it, else the definitions'
    (case-insensitive, as the SQL check resolves it). An entry whose field cannot be told (an
    unknown code), that is not a field object, or names a field again, gives no rows: push
    sends it and reports amoCRM's answer; the pull never fails on it. Value objects that are
    not objects, or whose enum_id is not an integer, are left out likewise."""
    entries = [e for e in values if isinstance(e, Mapping)]
    by_id_desc = sorted(fields.values(), key=attrgetter("id"), reverse=True)
    codes = {f.code.upper(): f.id for f in by_id_desc if f.code}  # the lowest id wins
    for entry in entries:
        named = _an_id(entry.get("field_id"))
        if isinstance(entry.get("field_code"), str) and named is not None:
            codes[entry["field_code"].upper()] = named
    out: list[JSON] = []
    seen: set[int] = set()
    for entry in entries:
        field_id, code = _an_id(entry.get("field_id")), entry.get("field_code")
        if entry.get("field_id") is None and isinstance(code, str):
            field_id = codes.get(code.upper())
        if field_id is None or field_id in seen:
            continue
        seen.add(field_id)
        items = entry.get("values")
        kept = [
            v for v in items if isinstance(v, Mapping)
            and (v.get("enum_id") is None or _an_id(v["enum_id"]) is not None)
        ] if isinstance(items, list) else []  # fmt: skip
        out.append({**entry, "field_id": field_id, "values": kept})
    return out


def _an_id(value: Any) -> int | None:
    """An id as JSON may carry it (570003, 570003.0 or "570003"); None if it is none, or if it
    is outside 1..bigint (a local edit's; amoCRM's answer to the push names it)."""
    digits = isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
    if not (digits or is_integer(value)):
        return None
    return number if 0 < (number := int(value)) <= BIGINT else None


def _value_rows(
    append: Callable[[Row], None],
    contact_id: int,
    values: Iterable[Mapping[str, Any]],
    fields: Mapping[int, FieldDef],
) -> None:
    """The hot loop of a pull (about seven values a contact), so it is written flat."""
    for cf in values:
        field_id = cf["field_id"]
        if type(field_id) is not int:
            field_id = int(field_id)
        known = fields.get(field_id)
        if known is not None:
            code, name, ftype = known.code, known.name, known.type
        else:  # a field not known yet: as the contact names it
            code, name = _text(cf.get("field_code")), _text(cf.get("field_name"))
            ftype = _text(cf.get("field_type"))
        for position, value in enumerate(cf.get("values") or ()):
            # `value.get(…)` thrice, not a bound `get`: CPython calls a method in place
            raw = value.get("value")
            enum_id, enum_code = value.get("enum_id"), value.get("enum_code")
            if enum_code is None:  # a stand-in's read form of it (the reference's GET example)
                enum_code = value.get("enum")
            append((
                contact_id, field_id, position, code, name, ftype,
                raw if type(raw) is str else value_text(raw, ftype),
                enum_id if enum_id is None or type(enum_id) is int else int(enum_id),
                # amoCRM's own: null for select-type values
                enum_code if enum_code is None or type(enum_code) is str else str(enum_code),
            ))  # fmt: skip


def _links(contact_id: int, items: Iterable[Mapping[str, Any]] | None) -> list[Row]:
    if not items:
        return []
    ids = dict.fromkeys(map(int, map(_ID, items)))  # amoCRM may repeat an id: keep one
    return [(contact_id, i) for i in ids]


def tag_rows(contact_id: int, tags: Iterable[Mapping[str, Any]] | None) -> list[Row]:
    if not tags:
        return []
    named = {int(t["id"]): _text(t.get("name")) for t in tags}
    return [(contact_id, i, n) for i, n in named.items()]


def catalog_rows(contact_id: int, elements: Iterable[Mapping[str, Any]] | None) -> list[Row]:
    rows: dict[tuple[int, int], Row] = {}
    for element in elements or ():
        meta = element.get("metadata") or {}
        # the reference lists quantity and catalog_id on the element, the SDK reads metadata
        catalog_id = element.get("catalog_id") or meta.get("catalog_id")
        quantity = element.get("quantity")
        quantity = meta.get("quantity") if quantity is None else quantity
        key = (int(catalog_id or 0), int(element["id"]))
        rows[key] = (contact_id, key[0], key[1], quantity, meta or None)
    return list(rows.values())


def to_rows(
    items: Iterable[Mapping[str, Any]], fields: Mapping[int, FieldDef], with_: Sequence[str]
) -> PageRows:
    """All rows of a page of contacts. A contact listed twice keeps its newest version."""
    items = items if isinstance(items, list) else list(items)
    newest: dict[int, Mapping[str, Any]] = {int(item["id"]): item for item in items}
    if len(newest) < len(items):  # a contact listed twice: the newest version, not the last
        newest = {}
        for item in items:
            cid = int(item["id"])
            kept = newest.get(cid)
            if kept is None or (item.get("updated_at") or 0) >= (kept.get("updated_at") or 0):
                newest[cid] = item
    rows = PageRows()
    add_contact, add_value = rows.contacts.append, rows.custom_values.append
    tags, companies = rows.tags, rows.companies
    leads = rows.leads if "leads" in with_ else None
    customers = rows.customers if "customers" in with_ else None
    catalog = rows.catalog_elements if "catalog_elements" in with_ else None
    for cid, item in newest.items():
        add_contact(contact_row(item))
        values = item.get("custom_fields_values")
        if values:
            _value_rows(add_value, cid, values, fields)
        embedded = item.get("_embedded")
        if not embedded:
            continue
        get = embedded.get
        tags += tag_rows(cid, get("tags"))
        companies += _links(cid, get("companies"))
        if leads is not None:
            leads += _links(cid, get("leads"))
        if customers is not None:
            customers += _links(cid, get("customers"))
        if catalog is not None:
            catalog += catalog_rows(cid, get("catalog_elements"))
    return rows


def chat_rows(links: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """`contact_chats` rows from GET /api/v4/contacts/chats (one row per chat)."""
    rows = {str(x["chat_id"]): x for x in links}
    return [
        {"id": int(x["id"]), "contact_id": int(x["contact_id"]), "chat_id": chat}
        for chat, x in rows.items()
    ]


def event_changes(events: Iterable[Mapping[str, Any]]) -> dict[int, tuple[bool | None, int]]:
    """contact_deleted / contact_restored events → contact id → (deleted?, at); the latest
    event of each contact wins. None for "unsure": a deletion and a restore of the contact in
    its latest second, whose order the list cannot tell (timestamps are whole seconds, and
    the ids' order within a second is not a promise) — the caller asks amoCRM by id."""
    latest: dict[int, tuple[int, set[bool]]] = {}
    for event in events:
        kind = event.get("type")
        if kind not in ("contact_deleted", "contact_restored") or event.get("entity_type") not in (
            "contact",
            None,
        ):
            continue
        at, cid = int(event.get("created_at") or 0), int(event["entity_id"])
        seen = latest.get(cid)
        if seen is None or at > seen[0]:
            latest[cid] = (at, {kind == "contact_deleted"})
        elif at == seen[0]:
            seen[1].add(kind == "contact_deleted")
    return {cid: (next(iter(kinds)) if len(kinds) == 1 else None, at)
            for cid, (at, kinds) in latest.items()}  # fmt: skip
