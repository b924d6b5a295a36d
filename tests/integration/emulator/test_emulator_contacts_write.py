"""Contract: POST/PATCH /api/v4/contacts and PATCH /api/v4/contacts/{id}."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import NOW, live_ids

from sync.emulator import Emulator
from sync.emulator.seed import DELETED_USER_IDS

PHONE, EMAIL, POSITION, SOURCE, INTERESTS = 570_001, 570_002, 570_003, 570_004, 570_005
DATE, CHECKBOX, BUDGET, CHANNEL = 570_006, 570_007, 570_008, 570_012
BAD_PHONE = {"value": "1", "enum_code": "NOPE"}


def cf(body: dict, field_id: int) -> list[dict] | None:
    for entry in body["custom_fields_values"] or []:
        if entry["field_id"] == field_id:
            return entry["values"]
    return None


def test_post_creates_and_echoes_request_ids(client: httpx.Client, server) -> None:
    response = client.post(
        "/api/v4/contacts",
        json=[
            {"first_name": "Пётр", "last_name": "Паркер"},
            {"name": "Jane Doe", "request_id": "mine"},
        ],
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hal+json"
    created = response.json()["_embedded"]["contacts"]
    assert [c["request_id"] for c in created] == ["0", "mine"]
    assert created[0]["is_deleted"] is False
    assert (
        created[0]["_links"]["self"]["href"]
        == f"{server.base_url}/api/v4/contacts/{created[0]['id']}"
    )
    first = client.get(f"/api/v4/contacts/{created[0]['id']}").json()
    assert first["name"] == "Пётр Паркер"
    assert first["created_at"] == first["updated_at"] == NOW


def test_server_sets_updated_at_and_ignores_the_clients(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    emulator.clock.advance(7.9)
    body = [{"id": contact_id, "name": "X", "updated_at": 1}]
    (item,) = client.patch("/api/v4/contacts", json=body).json()["_embedded"]["contacts"]
    assert item["updated_at"] == NOW + 7  # whole seconds from the emulator clock
    assert item["request_id"] == "0"
    assert client.get(f"/api/v4/contacts/{contact_id}").json()["updated_at"] == NOW + 7


def test_a_batch_shares_one_updated_at_second(client, emulator) -> None:
    ids = sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)[:5]
    emulator.clock.unfreeze()
    response = client.patch("/api/v4/contacts", json=[{"id": i, "last_name": "Z"} for i in ids])
    stamps = {c["updated_at"] for c in response.json()["_embedded"]["contacts"]}
    assert len(stamps) == 1


def test_patch_touches_only_the_fields_given(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    before = client.get(f"/api/v4/contacts/{contact_id}").json()
    assert before["name"] == f"{before['first_name']} {before['last_name']}"  # built from them
    answer = client.patch(f"/api/v4/contacts/{contact_id}", json={"first_name": "Только"})
    after = client.get(f"/api/v4/contacts/{contact_id}").json()
    assert after["first_name"] == "Только"
    # the reference's update table lists name, first_name and last_name as separate fields:
    # a first_name alone does not rewrite the full name
    assert answer.json()["name"] == after["name"] == before["name"]
    assert after["last_name"] == before["last_name"]
    assert after["custom_fields_values"] == before["custom_fields_values"]
    assert after["_embedded"] == before["_embedded"]
    assert after["responsible_user_id"] == before["responsible_user_id"]


def test_custom_field_values_replace_and_null_clears(client, emulator) -> None:
    contact_id = next(
        c.id
        for c in emulator.account.contacts.values()
        if len(c.custom_fields.get(PHONE, [])) == 2 and not c.is_deleted
    )
    patch = {
        "custom_fields_values": [
            {"field_id": PHONE, "values": [{"value": "+74950000000", "enum_code": "WORKDD"}]},
            {"field_code": "EMAIL", "values": None},
        ]
    }
    client.patch(f"/api/v4/contacts/{contact_id}", json=patch)
    body = client.get(f"/api/v4/contacts/{contact_id}").json()
    (phone,) = cf(body, PHONE)
    assert phone["value"] == "+74950000000"
    assert phone["enum_code"] == "WORKDD"
    assert isinstance(phone["enum_id"], int)
    assert cf(body, EMAIL) is None


def test_every_field_type_round_trips(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    values = [
        {"field_id": POSITION, "values": [{"value": "CTO"}]},
        {"field_id": SOURCE, "values": [{"value": "Реклама"}]},
        {"field_id": INTERESTS, "values": [{"enum_id": 840_031}, {"enum_id": 840_033}]},
        {"field_id": DATE, "values": [{"value": 1_700_000_000}]},
        {"field_id": CHECKBOX, "values": [{"value": True}]},
        {"field_id": BUDGET, "values": [{"value": 1500}]},
        {"field_id": CHANNEL, "values": [{"enum_id": 840_043}]},
    ]
    response = client.patch(f"/api/v4/contacts/{contact_id}", json={"custom_fields_values": values})
    assert response.status_code == 200, response.text
    body = client.get(f"/api/v4/contacts/{contact_id}").json()
    assert cf(body, POSITION) == [{"value": "CTO"}]
    assert cf(body, SOURCE) == [{"value": "Реклама", "enum_id": 840_022}]
    assert [v["enum_id"] for v in cf(body, INTERESTS)] == [840_031, 840_033]
    assert cf(body, DATE) == [{"value": 1_700_000_000}]
    assert cf(body, CHECKBOX) == [{"value": True}]
    assert cf(body, BUDGET) == [{"value": "1500"}]
    assert cf(body, CHANNEL) == [{"value": "Мессенджер", "enum_id": 840_043}]


def test_tags_replace_clear_add_and_delete(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    url = f"/api/v4/contacts/{contact_id}"

    def tag_names() -> list[str]:
        return [t["name"] for t in client.get(url).json()["_embedded"]["tags"]]

    client.patch(url, json={"_embedded": {"tags": [{"id": 900_001}, {"name": "совсем новый"}]}})
    assert tag_names() == ["VIP", "совсем новый"]
    client.patch(url, json={"tags_to_add": [{"name": "B2B"}], "tags_to_delete": [{"id": 900_001}]})
    assert tag_names() == ["совсем новый", "B2B"]
    client.patch(url, json={"_embedded": {"tags": None}})
    assert tag_names() == []


def test_patch_response_shape(client, emulator, server) -> None:
    contact_id = live_ids(emulator)[0]
    response = client.patch(f"/api/v4/contacts/{contact_id}", json={"name": "Новое имя"})
    body = response.json()
    assert set(body) == {"id", "name", "updated_at", "request_id", "_links"}
    assert body["_links"]["self"]["href"] == f"{server.base_url}/api/v4/contacts/{contact_id}"


def test_more_than_250_is_a_422(client: httpx.Client) -> None:
    response = client.post("/api/v4/contacts", json=[{"name": str(i)} for i in range(251)])
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "Limit 250 per page"


def test_patching_more_than_250_is_a_422_and_changes_nothing(client, emulator) -> None:
    ids = live_ids(emulator)[:251]
    assert len(ids) == 251
    names = {i: emulator.account.contacts[i].name for i in ids}
    batch = [{"id": contact_id, "name": "новое имя"} for contact_id in ids]
    response = client.patch("/api/v4/contacts", json=batch)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Unprocessable Entity",
        "type": "https://httpstatus.es/422",
        "status": 422,
        "detail": "Limit 250 per page",
    }
    assert {i: emulator.account.contacts[i].name for i in ids} == names
    assert client.patch("/api/v4/contacts", json=batch[:250]).status_code == 200


@pytest.mark.parametrize("body", [None, [], {}])
def test_empty_body_is_a_400(client: httpx.Client, body) -> None:
    response = client.post(
        "/api/v4/contacts",
        content=b"" if body is None else str(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request data can not be empty",
    }


@pytest.mark.parametrize(
    ("entity", "code", "path"),
    [
        (
            {"custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]},
            "NotSupportedChoice",
            "custom_fields_values.0.field_id",
        ),
        (
            {"custom_fields_values": [{"field_id": SOURCE, "values": [{"enum_id": 1}]}]},
            "NotSupportedChoice",
            "custom_fields_values.0.values.0.enum_id",
        ),
        (
            {"custom_fields_values": [{"field_code": "PHONE", "values": [BAD_PHONE]}]},
            "NotSupportedChoice",
            "custom_fields_values.0.values.0.enum_code",
        ),
        (
            {"custom_fields_values": [{"field_id": CHECKBOX, "values": [{"value": "yes"}]}]},
            "InvalidType",
            "custom_fields_values.0.values.0.value",
        ),
        (
            {"custom_fields_values": [{"field_id": BUDGET, "values": [{"value": "много"}]}]},
            "InvalidType",
            "custom_fields_values.0.values.0.value",
        ),
        ({"name": 5}, "InvalidType", "name"),
        ({"responsible_user_id": 123}, "NotSupportedChoice", "responsible_user_id"),
        ({"created_by": "me"}, "InvalidType", "created_by"),
        ({"_embedded": {"tags": [{"id": 1}]}}, "NotSupportedChoice", "_embedded.tags.0.id"),
    ],
)
def test_validation_errors_reject_the_whole_batch(client, emulator, entity, code, path) -> None:
    before = len(emulator.account.contacts)
    response = client.post(
        "/api/v4/contacts", json=[{"name": "good"}, {**{"name": "bad"}, **entity}]
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["detail"] == "Request validation failed"
    (rejected,) = body["validation-errors"]
    assert rejected["request_id"] == "1"
    assert {"code": code, "path": path} == {k: rejected["errors"][0][k] for k in ("code", "path")}
    assert rejected["errors"][0]["detail"]
    assert len(emulator.account.contacts) == before  # nothing from the batch was saved


def test_patch_needs_known_live_ids(client, emulator) -> None:
    response = client.patch("/api/v4/contacts", json=[{"name": "no id"}, {"id": 1, "name": "x"}])
    errors = {e["request_id"]: e["errors"][0]["code"] for e in response.json()["validation-errors"]}
    assert errors == {"0": "NotBlank", "1": "NotFound"}


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert client.get("/api/v4/nothing").status_code == 404
    response = client.delete("/api/v4/contacts/1")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


def by_deleted_author(emulator: Emulator) -> list[int]:
    """Live contacts created by a since-deleted user but last edited by a current one."""
    users = emulator.account.users
    return sorted(
        c.id
        for c in emulator.account.contacts.values()
        if not c.is_deleted and c.created_by in DELETED_USER_IDS and c.updated_by in users
    )


def test_sending_back_a_deleted_author_is_a_400_at_created_by(client, emulator) -> None:
    url = f"/api/v4/contacts/{by_deleted_author(emulator)[0]}"
    fetched = client.get(url).json()  # such a contact stays readable
    assert fetched["created_by"] in DELETED_USER_IDS
    assert fetched["created_by"] not in emulator.account.users  # no longer a user
    whole = client.patch(url, json=fetched)
    assert whole.status_code == 400, whole.text
    (rejected,) = whole.json()["validation-errors"]
    assert [(e["code"], e["path"]) for e in rejected["errors"]] == [
        ("NotSupportedChoice", "created_by")
    ]
    only_name = client.patch(url, json={"name": "Только имя"})
    assert only_name.status_code == 200, only_name.text
    after = client.get(url).json()
    assert after["name"] == "Только имя"
    assert after["created_by"] == fetched["created_by"]  # stored, never re-validated


def test_a_fetched_contact_by_current_users_can_be_sent_back_whole(client, emulator) -> None:
    """Only the stale user id is refused: the rest of a GET payload is a valid write."""
    users = emulator.account.users
    contact_id = next(
        c.id
        for c in emulator.account.contacts.values()
        if not c.is_deleted and c.created_by in users and c.updated_by in users
        and c.custom_fields and c.tag_ids
    )  # fmt: skip
    url = f"/api/v4/contacts/{contact_id}"
    response = client.patch(url, json=client.get(url).json())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", ["created_by", "updated_by", "responsible_user_id"])
def test_a_deleted_user_id_in_any_user_field_rejects_the_batch(client, emulator, name) -> None:
    first, second = by_deleted_author(emulator)[:2]
    batch = [
        {"id": first, "name": "не сохранится"},
        {"id": second, name: DELETED_USER_IDS[0]},
    ]
    response = client.patch("/api/v4/contacts", json=batch)
    assert response.status_code == 400, response.text
    (rejected,) = response.json()["validation-errors"]
    assert rejected["request_id"] == "1"
    assert [(e["code"], e["path"]) for e in rejected["errors"]] == [("NotSupportedChoice", name)]
    assert client.get(f"/api/v4/contacts/{first}").json()["name"] != "не сохранится"


def account_field_order(client: httpx.Client) -> list[int]:
    fields = client.get("/api/v4/contacts/custom_fields", params={"limit": 250}).json()
    return [f["id"] for f in fields["_embedded"]["custom_fields"]]


def field_ids(client: httpx.Client, url: str) -> list[int]:
    return [entry["field_id"] for entry in client.get(url).json()["custom_fields_values"]]


def test_values_are_listed_in_the_accounts_field_order(client: httpx.Client) -> None:
    order = account_field_order(client)
    page = client.get("/api/v4/contacts", params={"limit": 250}).json()
    for contact in page["_embedded"]["contacts"]:
        listed = [entry["field_id"] for entry in contact["custom_fields_values"] or []]
        assert listed == [f for f in order if f in listed], contact["id"]


def test_clearing_and_setting_a_field_again_keeps_its_place(client, emulator) -> None:
    contact_id = next(
        c.id
        for c in emulator.account.contacts.values()
        if not c.is_deleted and {PHONE, EMAIL, POSITION, SOURCE} <= c.custom_fields.keys()
    )
    url = f"/api/v4/contacts/{contact_id}"
    before = field_ids(client, url)
    assert before == [f for f in account_field_order(client) if f in before]
    for values in (None, [{"value": "+74951112233", "enum_code": "MOB"}]):
        response = client.patch(
            url, json={"custom_fields_values": [{"field_id": PHONE, "values": values}]}
        )
        assert response.status_code == 200, response.text
    assert field_ids(client, url) == before


def test_a_field_set_for_the_first_time_takes_its_place(client, emulator) -> None:
    contact_id = next(
        c.id
        for c in emulator.account.contacts.values()
        if not c.is_deleted and {PHONE, SOURCE} <= c.custom_fields.keys()
        and POSITION not in c.custom_fields
    )  # fmt: skip
    url = f"/api/v4/contacts/{contact_id}"
    body = {"custom_fields_values": [{"field_id": POSITION, "values": [{"value": "CFO"}]}]}
    assert client.patch(url, json=body).status_code == 200
    listed = field_ids(client, url)
    assert POSITION in listed
    assert listed == [f for f in account_field_order(client) if f in listed]
