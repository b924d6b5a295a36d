"""Contract: GET /api/v4/contacts — shape, paging, filters, ordering, 204s."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import (
    BASE_SETTINGS,
    all_pages,
    contacts_of,
    ids_of,
    in_process_client,
    live_ids,
)

from sync.emulator import Emulator, EmulatorSettings

CONTACT_KEYS = {
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
    "custom_fields_values",
    "account_id",
    "_links",
    "_embedded",
}


def test_page_shape_is_hal_with_absolute_links(client: httpx.Client, server) -> None:
    response = client.get("/api/v4/contacts", params={"limit": 2})
    assert response.headers["content-type"] == "application/hal+json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["_page"] == 1
    assert set(body) == {"_page", "_links", "_embedded"}  # no totals on contact lists
    assert body["_links"]["self"]["href"] == f"{server.base_url}/api/v4/contacts?limit=2&page=1"
    assert body["_links"]["next"]["href"] == f"{server.base_url}/api/v4/contacts?limit=2&page=2"
    assert "prev" not in body["_links"]
    for contact in body["_embedded"]["contacts"]:
        assert set(contact) == CONTACT_KEYS
        assert set(contact["_embedded"]) == {"tags", "companies"}
        assert contact["_links"]["self"]["href"].startswith(server.base_url + "/api/v4/contacts/")


def test_next_link_keeps_filters_and_prev_appears(client: httpx.Client) -> None:
    params = {"limit": 5, "page": 2, "filter[updated_at][from]": 1, "order[id]": "asc"}
    links = client.get("/api/v4/contacts", params=params).json()["_links"]
    assert "filter[updated_at][from]=1" in links["next"]["href"]
    assert links["next"]["href"].endswith("limit=5&page=3")
    assert links["prev"]["href"].endswith("limit=5&page=1")


def test_walking_next_links_returns_every_live_contact_once(client, emulator) -> None:
    ids = [c["id"] for c in all_pages(client, {}, limit=50)]
    assert ids == live_ids(emulator)


def test_last_page_has_no_next_and_past_the_end_is_an_empty_204(client, emulator) -> None:
    total = len(live_ids(emulator))
    pages = -(-total // 100)
    last = client.get("/api/v4/contacts", params={"limit": 100, "page": pages}).json()
    assert "next" not in last["_links"]
    past = client.get("/api/v4/contacts", params={"limit": 100, "page": pages + 1})
    assert past.status_code == 204
    assert past.content == b""


def test_an_exactly_full_last_page_has_no_next(client, emulator) -> None:
    """amocrm-api.md §2: the last page has no `_links.next`, also when it is full; a reader
    (a tie read by page number) then asks no page past it (none would answer but 204)."""
    ids = live_ids(emulator)[:4]
    params: dict[str, object] = {"filter[id][]": ids, "order[id]": "asc", "limit": 2}
    first = client.get("/api/v4/contacts", params={**params, "page": 1}).json()
    assert "next" in first["_links"]
    last = client.get("/api/v4/contacts", params={**params, "page": 2}).json()
    assert [c["id"] for c in last["_embedded"]["contacts"]] == ids[2:]
    assert "next" not in last["_links"]
    assert client.get("/api/v4/contacts", params={**params, "page": 3}).status_code == 204


@pytest.mark.parametrize(
    "path", ["/api/v4/contacts", "/api/v4/events", "/api/v4/contacts/custom_fields"]
)
@pytest.mark.parametrize("page", ["0", "-1", "x"])
def test_a_page_below_1_or_not_a_number_is_a_400(client: httpx.Client, path, page) -> None:
    """Pages are 1-based (fact sheet §2: "`page` (1-based)"): page=0 is a 400 problem, not
    page 1 served under another number."""
    response = client.get(path, params={"page": page, "limit": 5})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert client.get(path, params={"page": 1, "limit": 5}).status_code == 200


def test_limit_defaults_to_50_and_falls_back_to_50_above_250(make_settings) -> None:
    emulator = Emulator(make_settings(contacts=600))
    with in_process_client(emulator) as http:
        assert len(contacts_of(http.get("/api/v4/contacts"))) == 50
        assert len(contacts_of(http.get("/api/v4/contacts", params={"limit": 250}))) == 250
        # amoCRM does not refuse a larger limit: it silently serves its default page (§16)
        assert len(contacts_of(http.get("/api/v4/contacts", params={"limit": 251}))) == 50


def test_no_match_is_an_empty_204(client: httpx.Client) -> None:
    response = client.get("/api/v4/contacts", params={"filter[id]": 1})
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize(
    "params",
    [
        lambda a, b: {"filter[id]": str(a)},
        lambda a, b: [("filter[id][]", str(a)), ("filter[id][]", str(b))],
        lambda a, b: [("filter[id][0]", str(a)), ("filter[id][1]", str(b))],
    ],
    ids=["scalar", "brackets", "indexed"],
)
def test_filter_by_id_in_every_php_form(client, emulator, params) -> None:
    a, b = live_ids(emulator)[3], live_ids(emulator)[7]
    query = params(a, b)
    found = [c["id"] for c in contacts_of(client.get("/api/v4/contacts", params=query))]
    expected = [a] if isinstance(query, dict) else [a, b]
    assert found == expected


def test_comma_separated_ids_are_accepted_leniently(client, emulator) -> None:
    a, b = live_ids(emulator)[3], live_ids(emulator)[7]
    found = contacts_of(client.get("/api/v4/contacts", params={"filter[id]": f"{a}, {b}"}))
    assert [c["id"] for c in found] == [a, b]


def test_plain_repeated_key_keeps_the_last_value_like_php(client, emulator) -> None:
    a, b = live_ids(emulator)[:2]
    query = [("filter[id]", str(a)), ("filter[id]", str(b))]
    assert [c["id"] for c in contacts_of(client.get("/api/v4/contacts", params=query))] == [b]


def test_updated_at_range_is_inclusive_in_unix_seconds(client, emulator) -> None:
    stamps = sorted({c.updated_at for c in emulator.account.contacts.values() if not c.is_deleted})
    low, high = stamps[10], stamps[40]
    params = {"filter[updated_at][from]": low, "filter[updated_at][to]": high}
    found = all_pages(client, params)
    expected = [
        c
        for c in emulator.account.contacts.values()
        if not c.is_deleted and low <= c.updated_at <= high
    ]
    assert sorted(c["id"] for c in found) == sorted(c.id for c in expected)
    assert {c["updated_at"] for c in found} >= {low, high}


def test_exclusive_bounds_flag(make_settings) -> None:
    emulator = Emulator(make_settings(inclusive_date_bounds=False))
    stamps = sorted({c.updated_at for c in emulator.account.contacts.values() if not c.is_deleted})
    params = {"filter[updated_at][from]": stamps[5], "filter[updated_at][to]": stamps[6]}
    with in_process_client(emulator) as http:
        assert http.get("/api/v4/contacts", params=params).status_code == 204


def test_bare_updated_at_is_an_exact_match(client, emulator) -> None:
    target = emulator.account.contacts[live_ids(emulator)[0]].updated_at
    found = all_pages(client, {"filter[updated_at]": target})
    assert found
    assert all(c["updated_at"] == target for c in found)


def test_created_at_range(client, emulator) -> None:
    contacts = [emulator.account.contacts[i] for i in live_ids(emulator)]
    low, high = contacts[20].created_at, contacts[30].created_at
    found = all_pages(client, {"filter[created_at][from]": low, "filter[created_at][to]": high})
    assert [c["id"] for c in found] == [c.id for c in contacts if low <= c.created_at <= high]


def test_filter_by_name_and_responsible_user(client, emulator) -> None:
    target = emulator.account.contacts[live_ids(emulator)[5]]
    by_name = all_pages(client, {"filter[name]": target.name})
    assert by_name
    assert all(c["name"] == target.name for c in by_name)
    user = target.responsible_user_id
    by_user = all_pages(client, {"filter[responsible_user_id]": user})
    expected = [
        i for i in live_ids(emulator) if emulator.account.contacts[i].responsible_user_id == user
    ]
    assert [c["id"] for c in by_user] == expected


def test_query_finds_a_phone_by_its_digits_and_a_name_by_substring(client, emulator) -> None:
    phone = {"value": "+7 (999) 123-45-67", "enum_code": "MOB"}
    cf = [{"field_code": "PHONE", "values": [phone]}]
    ids = emulator.create_contacts([{"name": "Ёлка Тестовая", "custom_fields_values": cf}])
    assert ids_of(client.get("/api/v4/contacts", params={"query": "79991234567"})) == ids
    assert ids_of(client.get("/api/v4/contacts", params={"query": "ёлка тест"})) == ids


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_order_by_updated_at_breaks_ties_by_id(client, direction) -> None:
    found = all_pages(client, {"order[updated_at]": direction})
    keys = [(c["updated_at"], c["id"]) for c in found]
    if direction == "asc":
        assert keys == sorted(keys)
    else:
        assert keys == sorted(keys, key=lambda k: (-k[0], k[1]))
    assert len({k[0] for k in keys}) < len(keys)  # the seed really has ties


def test_tie_break_is_configurable(make_settings) -> None:
    emulator = Emulator(make_settings(tie_break="desc"))
    view = emulator.account.view("updated_at", False, False)
    keys = [(c.updated_at, c.id) for c in view]
    assert keys == sorted(keys, key=lambda k: (k[0], -k[1]))


def test_order_by_id_desc(client, emulator) -> None:
    found = contacts_of(client.get("/api/v4/contacts", params={"order[id]": "desc", "limit": 10}))
    assert [c["id"] for c in found] == live_ids(emulator)[::-1][:10]


def test_range_and_order_on_the_same_field_descending(client, emulator) -> None:
    stamps = sorted({c.updated_at for c in emulator.account.contacts.values() if not c.is_deleted})
    params = {
        "filter[updated_at][from]": stamps[3],
        "filter[updated_at][to]": stamps[60],
        "order[updated_at]": "desc",
    }
    found = all_pages(client, params, limit=7)
    assert [c["updated_at"] for c in found] == sorted(
        (c["updated_at"] for c in found), reverse=True
    )
    assert min(c["updated_at"] for c in found) == stamps[3]
    assert max(c["updated_at"] for c in found) == stamps[60]


def test_with_embeds_leads_customers_catalog_elements(client, emulator) -> None:
    contact = next(
        c
        for c in emulator.account.contacts.values()
        if c.lead_ids and c.catalog_elements and not c.is_deleted
    )
    params = {"filter[id]": contact.id, "with": "leads,customers,catalog_elements"}
    (found,) = contacts_of(client.get("/api/v4/contacts", params=params))
    embedded = found["_embedded"]
    assert [lead["id"] for lead in embedded["leads"]] == contact.lead_ids
    assert embedded["leads"][0]["_links"]["self"]["href"].endswith(
        f"/api/v4/leads/{contact.lead_ids[0]}"
    )
    assert "customers" in embedded
    element, stored = embedded["catalog_elements"][0], contact.catalog_elements[0]
    # the reference: `[catalog_elements][0][metadata]`, `[0][quantity]`, `[0][catalog_id]`
    assert set(element) == {"id", "metadata", "quantity", "catalog_id"}
    assert (element["quantity"], element["catalog_id"]) == (stored.quantity, stored.catalog_id)
    assert element["metadata"] == {
        "quantity": stored.quantity, "catalog_id": stored.catalog_id, "price_id": stored.price_id
    }  # fmt: skip


def test_custom_fields_values_is_null_when_empty_and_multitext_has_enum_codes(
    client, emulator
) -> None:
    (bare,) = emulator.create_contacts([{"name": "Без полей"}])
    assert client.get(f"/api/v4/contacts/{bare}").json()["custom_fields_values"] is None
    with_phone = next(
        c
        for c in emulator.account.contacts.values()
        if 570_001 in c.custom_fields and not c.is_deleted
    )
    body = client.get(f"/api/v4/contacts/{with_phone.id}").json()
    phone = next(f for f in body["custom_fields_values"] if f["field_code"] == "PHONE")
    assert phone["field_type"] == "multitext"
    assert set(phone["values"][0]) == {"value", "enum_id", "enum_code"}


CHOICE_TYPES = {"select", "multiselect", "radiobutton"}


def test_choice_values_read_as_label_and_enum_id_without_an_enum_code(client, emulator) -> None:
    """amoCRM gives select, multiselect and radiobutton options no code: a value reads as
    `{"value": <the option's label>, "enum_id": N}`; only multitext values carry `enum_code`."""
    fields = client.get("/api/v4/contacts/custom_fields", params={"limit": 250}).json()
    labels = {
        (f["id"], e["id"]): e["value"]
        for f in fields["_embedded"]["custom_fields"]
        for e in f["enums"] or ()
    }
    seen = set()
    for contact in all_pages(client, {}):
        for entry in contact["custom_fields_values"] or ():
            if entry["field_type"] in CHOICE_TYPES:
                seen.add(entry["field_type"])
                for value in entry["values"]:
                    assert set(value) == {"value", "enum_id"}
                    assert value["value"] == labels[entry["field_id"], value["enum_id"]]
    assert seen == CHOICE_TYPES


def test_companies_and_tags_are_always_present(client, emulator) -> None:
    with_company = next(
        c
        for c in emulator.account.contacts.values()
        if c.company_id and c.tag_ids and not c.is_deleted
    )
    body = client.get(f"/api/v4/contacts/{with_company.id}").json()
    assert [c["id"] for c in body["_embedded"]["companies"]] == [with_company.company_id]
    assert set(body["_embedded"]["tags"][0]) == {"id", "name", "color"}


def test_filters_ignored_when_api_filtering_is_off(client, emulator) -> None:
    emulator.set_controls(api_filter_enabled=False)
    response = client.get("/api/v4/contacts", params={"filter[id]": 1, "limit": 3})
    assert len(contacts_of(response)) == 3  # the filter was silently ignored
    account = client.get("/api/v4/account", params={"with": "is_api_filter_enabled"}).json()
    assert account["is_api_filter_enabled"] is False


def test_only_deleted_lists_trash_stubs(client, emulator) -> None:
    trashed = sorted(c.id for c in emulator.account.contacts.values() if c.is_deleted)
    assert trashed, "the seed puts some contacts in the trash"
    found = all_pages(client, {"with": "only_deleted"})
    assert [c["id"] for c in found] == trashed
    stub, record = found[0], emulator.account.contacts[trashed[0]]
    # fact sheet §7: "`is_deleted: true` and most fields `null`. Only `id`, `updated_by`,
    # `updated_at`, `account_id` and `_links` stay filled"; no other keys
    filled = {key for key, value in stub.items() if value is not None}
    assert filled == {"id", "is_deleted", "updated_by", "updated_at", "account_id", "_links"}
    assert set(stub) - filled == {
        "name", "first_name", "last_name", "responsible_user_id", "group_id", "created_by",
        "created_at", "closest_task_at", "custom_fields_values",
    }  # fmt: skip
    assert stub["is_deleted"] is True
    assert (stub["updated_at"], stub["updated_by"]) == (record.updated_at, record.updated_by)
    assert stub["_links"]["self"]["href"].endswith(f"/api/v4/contacts/{record.id}")


def test_get_one_is_204_when_missing_or_deleted(client, emulator) -> None:
    assert client.get("/api/v4/contacts/1").status_code == 204
    contact_id = live_ids(emulator)[0]
    emulator.delete_contact(contact_id)
    response = client.get(f"/api/v4/contacts/{contact_id}")
    assert response.status_code == 204
    assert response.content == b""


def test_settings_fixture_is_the_base(settings: EmulatorSettings) -> None:
    assert settings is BASE_SETTINGS


def test_custom_field_filters_are_ignored_like_any_unknown_filter(client, emulator) -> None:
    """Nothing in the product filters by custom field, and many accounts ignore such filters
    anyway (fact sheet §3, I-339, I-507): the emulator answers the unfiltered list."""
    params = [("filter[custom_fields_values][570004][]", "840021"),
              ("filter[custom_fields_values][570008][from]", "100000")]  # fmt: skip
    assert [c["id"] for c in all_pages(client, params)] == live_ids(emulator)


def test_list_lag_hides_fresh_changes_from_lists_only(client, emulator) -> None:
    emulator.set_controls(list_lag_s=30)
    (new_id,) = emulator.create_contacts([{"name": "Ещё не видно"}])
    assert client.get("/api/v4/contacts", params={"filter[id]": new_id}).status_code == 204
    assert client.get(f"/api/v4/contacts/{new_id}").status_code == 200
    emulator.clock.advance(31)
    assert ids_of(client.get("/api/v4/contacts", params={"filter[id]": new_id})) == [new_id]
