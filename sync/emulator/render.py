"""Records → the JSON amoCRM returns. Pure functions; call them with the account lock held."""

from __future__ import annotations

from typing import Any

from sync.emulator.model import CatalogElementLink, Contact, CustomField, Event, Tag
from sync.emulator.store import Account

JSON = dict[str, Any]


def link(href: str) -> JSON:
    return {"self": {"href": href}}


def contact_json(
    contact: Contact, account: Account, base: str, embeds: set[str], enum_key: str = "enum_code"
) -> JSON:
    """`enum_key`: the key of a multitext value's kind (`WORK`, …); "enum" renders it as the
    vendor reference's GET example does (its PATCH example, and amoCRM's docs, say `enum_code`)."""
    if contact.is_deleted:
        return trash_stub(contact, account, base)
    return {
        "id": contact.id,
        "name": contact.name,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "responsible_user_id": contact.responsible_user_id,
        "group_id": contact.group_id,
        "created_by": contact.created_by,
        "updated_by": contact.updated_by,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        "closest_task_at": contact.closest_task_at,
        "custom_fields_values": custom_fields_json(contact, account.fields, enum_key),
        "account_id": account.settings.account_id,
        "_links": link(f"{base}/api/v4/contacts/{contact.id}"),
        "_embedded": _embedded(contact, account, base, embeds),
    }


def trash_stub(contact: Contact, account: Account, base: str) -> JSON:
    """What `with=only_deleted` returns (fact sheet §7): `is_deleted: true`, the contact's
    fields null but `id`, `updated_by`, `updated_at`, `account_id` and `_links`; nothing else
    (no `_embedded`, no `is_unsorted`: the sheet lists neither)."""
    return {
        "id": contact.id,
        "name": None,
        "first_name": None,
        "last_name": None,
        "responsible_user_id": None,
        "group_id": None,
        "created_by": None,
        "updated_by": contact.updated_by,
        "created_at": None,
        "updated_at": contact.updated_at,
        "closest_task_at": None,
        "is_deleted": True,
        "custom_fields_values": None,
        "account_id": account.settings.account_id,
        "_links": link(f"{base}/api/v4/contacts/{contact.id}"),
    }


def custom_fields_json(
    contact: Contact, fields: dict[int, CustomField], enum_key: str = "enum_code"
) -> list[JSON] | None:
    if not contact.custom_fields:
        return None  # amoCRM sends null, not [], for a contact without values
    result = []
    for field_id, values in contact.custom_fields.items():
        field = fields[field_id]
        result.append({
            "field_id": field_id,
            "field_name": field.name,
            "field_code": field.code,
            "field_type": field.type,
            "values": values if enum_key == "enum_code" else _renamed(values, enum_key),
        })  # fmt: skip
    return result


def _renamed(values: list[Any] | None, enum_key: str) -> list[Any] | None:
    """Values with `enum_code` under `enum_key` (same place in the object)."""
    return [
        {(enum_key if k == "enum_code" else k): v for k, v in value.items()}
        for value in values or ()
    ] or values


def _embedded(contact: Contact, account: Account, base: str, embeds: set[str]) -> JSON:
    embedded: JSON = {"tags": [tag_json(account.tags[t]) for t in contact.tag_ids]}
    if "leads" in embeds:
        embedded["leads"] = [_ref(base, "leads", i) for i in contact.lead_ids]
    if "customers" in embeds:
        embedded["customers"] = [_ref(base, "customers", i) for i in contact.customer_ids]
    if "catalog_elements" in embeds:
        embedded["catalog_elements"] = [catalog_element_json(e) for e in contact.catalog_elements]
    company = contact.company_id
    embedded["companies"] = [] if company is None else [_ref(base, "companies", company)]
    return embedded


def catalog_element_json(element: CatalogElementLink) -> JSON:
    """The reference lists `quantity` and `catalog_id` on the element itself, beside
    `metadata`; the fact sheet (and the official SDK's model) read them inside `metadata`,
    with `price_id`. Both places carry them."""
    return {
        "id": element.id,
        "metadata": {
            "quantity": element.quantity,
            "catalog_id": element.catalog_id,
            "price_id": element.price_id,
        },
        "quantity": element.quantity,
        "catalog_id": element.catalog_id,
    }


def _ref(base: str, entity: str, entity_id: int) -> JSON:
    return {"id": entity_id, "_links": link(f"{base}/api/v4/{entity}/{entity_id}")}


def tag_json(tag: Tag) -> JSON:
    return {"id": tag.id, "name": tag.name, "color": tag.color}


def field_json(field: CustomField, account_id: int, base: str) -> JSON:
    enums = None
    if field.enums is not None:
        enums = [{"id": e.id, "value": e.value, "sort": e.sort} for e in field.enums]
    return {
        "id": field.id,
        "name": field.name,
        "type": field.type,
        "account_id": account_id,
        "code": field.code,
        "sort": field.sort,
        "is_api_only": False,
        "enums": enums,
        "group_id": None,
        "required_statuses": [],
        "is_deletable": not field.is_predefined,
        "is_predefined": field.is_predefined,
        "entity_type": "contacts",
        "remind": "never" if field.type == "birthday" else None,
        "tracking_callback": None,
        "triggers": [],
        "currency": None,
        "hidden_statuses": [],
        "chained_lists": None,
        "_links": link(f"{base}/api/v4/contacts/custom_fields/{field.id}"),
    }


def event_json(event: Event, account: Account, base: str, with_name: bool) -> JSON:
    data: JSON = {
        "id": event.id,
        "type": event.type,
        "entity_id": event.entity_id,
        "entity_type": event.entity_type,
        "created_by": event.created_by,
        "created_at": event.created_at,
        "value_after": event.value_after,
        "value_before": event.value_before,
        "account_id": account.settings.account_id,
        "_links": link(f"{base}/api/v4/events/{event.id}"),
    }
    if with_name:
        contact = account.contacts.get(event.entity_id)
        data["_embedded"] = {"entity": {"id": event.entity_id,
                                        "name": contact.name if contact else None}}  # fmt: skip
    return data
