"""Contract: events, custom fields, account, contact-chat links."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import NOW, in_process_client, live_ids

from sync.emulator import Emulator


def events(client: httpx.Client, params) -> list[dict]:
    response = client.get("/api/v4/events", params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return response.json()["_embedded"]["events"]


def test_delete_restore_and_add_write_events(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    emulator.delete_contact(contact_id)
    emulator.clock.advance(5)
    emulator.restore_contact(contact_id)
    (created,) = emulator.create_contacts([{"name": "новый"}])
    params = [("filter[entity][]", "contact"), ("filter[created_at][from]", str(NOW))]
    found = events(client, params)
    assert [(e["type"], e["entity_id"]) for e in found] == [
        ("contact_added", created),
        ("contact_restored", contact_id),
        ("contact_deleted", contact_id),
    ]
    event = found[-1]
    assert isinstance(event["id"], str)
    assert len(event["id"]) == 26
    assert event["entity_type"] == "contact"
    assert event["created_at"] == NOW
    assert set(event) >= {"created_by", "value_after", "value_before", "account_id"}
    # the restored contact keeps its id and is readable again
    assert client.get(f"/api/v4/contacts/{contact_id}").json()["id"] == contact_id


def test_event_filters_by_type_entity_id_and_time(client, emulator) -> None:
    a, b = live_ids(emulator)[:2]
    emulator.delete_contact(a)
    emulator.clock.advance(10)
    emulator.delete_contact(b)
    deleted = [("filter[type][]", "contact_deleted"), ("filter[created_at][from]", str(NOW))]
    assert [e["entity_id"] for e in events(client, deleted)] == [b, a]
    comma = {"filter[type]": "contact_deleted,contact_restored", "filter[created_at][from]": NOW}
    assert len(events(client, comma)) == 2
    by_id = [*deleted, ("filter[entity]", "contact"), ("filter[entity_id][]", str(a))]
    assert [e["entity_id"] for e in events(client, by_id)] == [a]
    window = {"filter[created_at][from]": NOW + 5, "filter[created_at][to]": NOW + 10}
    assert [e["entity_id"] for e in events(client, window)] == [b]
    assert client.get("/api/v4/events", params={"filter[type]": "no_such"}).status_code == 204


@pytest.mark.parametrize("inclusive", [True, False])
def test_event_created_at_bounds_follow_the_date_bounds_setting(make_settings, inclusive) -> None:
    emulator = Emulator(make_settings(inclusive_date_bounds=inclusive))
    a, b, c = live_ids(emulator)[:3]
    for contact_id in (a, b, c):  # one deletion per second: NOW, NOW + 1, NOW + 2
        emulator.delete_contact(contact_id)
        emulator.clock.advance(1)
    window = {"filter[created_at][from]": NOW, "filter[created_at][to]": NOW + 2}
    with in_process_client(emulator) as http:
        found = [e["entity_id"] for e in events(http, window)]
    assert found == ([c, b, a] if inclusive else [b])


def test_seeded_trash_has_deleted_events_and_paging_works(client, emulator) -> None:
    trashed = sum(1 for c in emulator.account.contacts.values() if c.is_deleted)
    seen, page = [], 1
    while True:
        params = {"filter[type]": "contact_deleted", "limit": 2, "page": page}
        response = client.get("/api/v4/events", params=params)
        if response.status_code == 204:
            break
        body = response.json()
        seen += body["_embedded"]["events"]
        if "next" not in body["_links"]:
            break
        page += 1
    assert len(seen) == trashed
    assert len({e["id"] for e in seen}) == trashed


def test_edits_write_edit_events(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    client.patch(
        f"/api/v4/contacts/{contact_id}",
        json={"name": "Переименован", "tags_to_add": [{"name": "x"}]},
    )
    types = {
        e["type"]
        for e in events(client, {"filter[entity_id]": contact_id, "filter[entity]": "contact"})
    }
    assert {"name_field_changed", "entity_tag_added"} <= types


def test_custom_fields_list_is_counted_and_pages(client) -> None:
    body = client.get("/api/v4/contacts/custom_fields", params={"limit": 4}).json()
    assert body["_total_items"] == 15
    assert body["_page_count"] == 4
    fields = body["_embedded"]["custom_fields"]
    assert len(fields) == 4
    assert "next" in body["_links"]
    phone = next(f for f in fields if f["code"] == "PHONE")
    assert phone["type"] == "multitext"
    assert {e["value"] for e in phone["enums"]} >= {"WORK", "MOB", "WORKDD"}
    assert phone["is_predefined"] is True
    assert client.get("/api/v4/contacts/custom_fields", params={"page": 9}).status_code == 204


def test_custom_fields_filter_by_type_and_get_one(client) -> None:
    body = client.get("/api/v4/contacts/custom_fields", params={"filter[type][]": "select"}).json()
    (select,) = body["_embedded"]["custom_fields"]
    assert [e["id"] for e in select["enums"]][:2] == [840_021, 840_022]
    one = client.get(f"/api/v4/contacts/custom_fields/{select['id']}").json()
    assert one["name"] == select["name"]
    assert client.get("/api/v4/contacts/custom_fields/1").status_code == 404


def test_account_and_its_with_flags(client, emulator) -> None:
    plain = client.get("/api/v4/account").json()
    assert plain["id"] == emulator.settings.account_id
    assert plain["subdomain"] == "emulator"
    assert "is_api_filter_enabled" not in plain
    flags = client.get(
        "/api/v4/account", params={"with": "is_api_filter_enabled,amojo_id,datetime_settings"}
    ).json()
    assert flags["is_api_filter_enabled"] is True
    assert flags["amojo_id"]
    assert flags["_embedded"]["datetime_settings"]["timezone"]
    every = "amojo_rights,users_groups,task_types,version,entity_names,drive_url,invoices_settings"
    full = client.get("/api/v4/account", params={"with": every}).json()
    assert {"version", "drive_url", "invoices_settings"} <= set(full)
    assert {"amojo_rights", "users_groups", "task_types", "entity_names"} <= set(full["_embedded"])


def test_chat_links_post_and_get_with_array_forms(client, emulator) -> None:
    a, b = live_ids(emulator)[:2]
    chat_a, chat_b = "6cbab3d5-c4c1-46ff-b710-ad59ad10805f", "9fb564bb-0000-4000-8000-000000000001"
    posted = client.post(
        "/api/v4/contacts/chats",
        json=[
            {"contact_id": a, "chat_id": chat_a},
            {"contact_id": b, "chat_id": chat_b, "request_id": "x"},
        ],
    )
    body = posted.json()
    assert body["_total_items"] == 2
    assert [c["request_id"] for c in body["_embedded"]["chats"]] == ["0", "x"]
    by_contact = client.get(
        "/api/v4/contacts/chats", params=[("contact_id[]", a), ("contact_id[]", b)]
    )
    assert {c["chat_id"] for c in by_contact.json()["_embedded"]["chats"]} >= {chat_a, chat_b}
    by_chat = client.get("/api/v4/contacts/chats", params={"chat_id": chat_a}).json()
    assert by_chat["_embedded"]["chats"][0]["contact_id"] == a
    assert set(by_chat["_embedded"]["chats"][0]) == {"chat_id", "contact_id", "id"}


def test_linking_more_than_250_chats_is_a_422_and_links_nothing(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    items = [{"contact_id": contact_id, "chat_id": f"chat-{i}"} for i in range(251)]
    before = len(emulator.account.chat_links)
    response = client.post("/api/v4/contacts/chats", json=items)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "Limit 250 per page"
    assert len(emulator.account.chat_links) == before
    assert client.post("/api/v4/contacts/chats", json=items[:250]).status_code == 200


def test_chat_relink_moves_the_chat_and_changes_the_link_id(client, emulator) -> None:
    a, b = live_ids(emulator)[:2]
    chat = "11111111-2222-4333-8444-555555555555"
    first = client.post("/api/v4/contacts/chats", json=[{"contact_id": a, "chat_id": chat}]).json()
    second = client.post("/api/v4/contacts/chats", json=[{"contact_id": b, "chat_id": chat}]).json()
    assert first["_embedded"]["chats"][0]["id"] != second["_embedded"]["chats"][0]["id"]
    (link,) = client.get("/api/v4/contacts/chats", params={"chat_id": chat}).json()["_embedded"][
        "chats"
    ]
    assert link["contact_id"] == b


def test_chat_errors(client, emulator) -> None:
    assert client.get("/api/v4/contacts/chats").status_code == 400
    assert client.get("/api/v4/contacts/chats", params={"contact_id": 1}).status_code == 204
    bad = client.post("/api/v4/contacts/chats", json=[{"contact_id": 1, "chat_id": ""}])
    assert bad.status_code == 400
    codes = [e["code"] for e in bad.json()["validation-errors"][0]["errors"]]
    assert codes == ["NotFound", "NotBlank"]


def test_event_entity_id_needs_one_entity_and_at_most_ten_ids(client) -> None:
    many = [("filter[entity]", "contact"), *[("filter[entity_id][]", str(i)) for i in range(11)]]
    assert client.get("/api/v4/events", params=many).status_code == 400
    no_entity = client.get("/api/v4/events", params={"filter[entity_id]": 5})
    assert no_entity.status_code == 400
    assert no_entity.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/api/v4/users", "/api/v4/users/8000001", "/api/v4/contacts/tags"]
)
def test_endpoints_the_product_never_calls_are_not_served(client, path) -> None:
    """Users and the tags list were dropped (issue 14 item 5): the sync reads neither (tags come
    embedded in each contact) and nothing obliges it to. An unknown path is amoCRM's 404."""
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_event_filters_are_ignored_on_an_account_without_api_filtering(client, emulator) -> None:
    a = live_ids(emulator)[0]
    emulator.delete_contact(a)
    everything = len(emulator.account.events)
    emulator.set_controls(api_filter_enabled=False)
    deleted = {"filter[type]": "contact_deleted", "filter[created_at][from]": NOW}
    response = client.get("/api/v4/events", params={**deleted, "limit": 250})
    found = response.json()["_embedded"]["events"]
    assert len(found) == min(250, everything) > 1  # the filter was silently dropped
    assert found[0]["entity_id"] == a  # still newest first
