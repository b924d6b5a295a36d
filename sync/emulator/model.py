"""The account's records as plain mutable dataclasses (the store guards them with its lock)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# A stored custom-field value: the keys amoCRM returns on GET for that field type.
CFValue = dict[str, Any]


@dataclass
class EnumOption:
    id: int
    value: str
    sort: int


@dataclass
class CustomField:
    id: int
    name: str
    type: str  # amoCRM's type string: "text", "multitext", "select", ...
    code: str | None
    sort: int
    enums: list[EnumOption] | None = None
    is_predefined: bool = False

    def enum_by_id(self, enum_id: int) -> EnumOption | None:
        return next((e for e in self.enums or [] if e.id == enum_id), None)

    def enum_by_value(self, value: str) -> EnumOption | None:
        return next((e for e in self.enums or [] if e.value == value), None)


def field_ranks(fields: Iterable[CustomField]) -> dict[int, int]:
    """Each field's place in the account's field order: by `sort`, then id, as
    `/api/v4/contacts/custom_fields` lists them."""
    ordered = sorted(fields, key=lambda f: (f.sort, f.id))
    return {f.id: rank for rank, f in enumerate(ordered)}


def in_field_order(
    values: dict[int, list[CFValue]], ranks: dict[int, int]
) -> dict[int, list[CFValue]]:
    """A contact's values keyed by field id, re-keyed in the account's field order."""
    return {key: values[key] for key in sorted(values, key=ranks.__getitem__)}


@dataclass
class User:
    id: int
    name: str
    email: str
    group_id: int = 0


@dataclass
class Tag:
    id: int
    name: str
    color: str | None = None


@dataclass
class CatalogElementLink:
    id: int
    catalog_id: int
    quantity: int
    price_id: int | None = None


@dataclass
class Contact:
    id: int
    name: str
    first_name: str
    last_name: str
    responsible_user_id: int
    group_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    closest_task_at: int | None = None
    # field_id -> values, in the account's field order (`in_field_order`), whatever the order
    # they were set or cleared in: amoCRM lists a contact's values in a stable order
    custom_fields: dict[int, list[CFValue]] = field(default_factory=dict)
    tag_ids: list[int] = field(default_factory=list)
    company_id: int | None = None
    lead_ids: list[int] = field(default_factory=list)
    customer_ids: list[int] = field(default_factory=list)
    catalog_elements: list[CatalogElementLink] = field(default_factory=list)
    is_deleted: bool = False
    search_text: str | None = None  # what `query` searches; built on first use, reset on change


@dataclass
class Event:
    id: str
    type: str
    entity_id: int
    entity_type: str
    created_by: int
    created_at: int
    value_after: list[dict[str, Any]]
    value_before: list[dict[str, Any]]


@dataclass
class ChatLink:
    id: int
    contact_id: int
    chat_id: str
