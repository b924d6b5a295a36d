"""Contract: the admin HTTP API e2e tests use to act as a CRM user and to control the emulator."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import NOW, SSL, all_pages, live_ids

from sync.emulator import Emulator, EmulatorSettings, serve

CONTACTS = "/api/v4/contacts"


def test_create_edit_delete_restore_as_a_crm_user(client: httpx.Client) -> None:
    created = client.post("/_emulator/contacts", json={"name": "Из интерфейса"}).json()
    (contact_id,) = created["ids"]
    client.post("/_emulator/clock", json={"action": "advance", "seconds": 30})
    edited = client.patch(f"/_emulator/contacts/{contact_id}", json={"last_name": "Правка"})
    assert edited.json()["updated_at"] == NOW + 30
    read = client.get(f"/_emulator/contacts/{contact_id}").json()
    assert read["last_name"] == "Правка"
    assert read["updated_by"] == 8_000_002  # a UI user, not the API token's user
    assert client.post(f"/_emulator/contacts/{contact_id}/delete").json() == {"ok": True}
    assert client.get(f"{CONTACTS}/{contact_id}").status_code == 204
    assert client.get(f"/_emulator/contacts/{contact_id}").json()["is_deleted"] is True
    assert client.post(f"/_emulator/contacts/{contact_id}/restore").json() == {"ok": True}
    restored = client.get(f"{CONTACTS}/{contact_id}").json()
    assert restored["name"] == "Из интерфейса"  # a hand-typed name survives a last-name edit
    assert restored["last_name"] == "Правка"


def test_bulk_edit_shares_one_second(client, emulator) -> None:
    ids = live_ids(emulator)[:20]
    client.post("/_emulator/clock", json={"action": "unfreeze"})
    response = client.patch(
        "/_emulator/contacts", json=[{"id": i, "first_name": "Bulk"} for i in ids]
    )
    stamp = response.json()["updated_at"]
    found = client.get(CONTACTS, params=[("filter[id][]", i) for i in ids]).json()
    assert {c["updated_at"] for c in found["_embedded"]["contacts"]} == {stamp}


def test_touch_bumps_updated_at_only(client, emulator) -> None:
    touched = client.post("/_emulator/contacts/touch", json={"count": 3}).json()["ids"]
    assert len(touched) == 3
    for contact_id in touched:
        assert client.get(f"{CONTACTS}/{contact_id}").json()["updated_at"] == NOW
    explicit = client.post("/_emulator/contacts/touch", json={"ids": [touched[0]]})
    assert explicit.json()["ids"] == [touched[0]]


def test_admin_errors(client) -> None:
    assert client.post("/_emulator/contacts/1/delete").status_code == 404
    assert client.post("/_emulator/contacts/1/restore").status_code == 404
    assert client.get("/_emulator/nothing").status_code == 404
    assert client.put("/_emulator/state").status_code == 405
    invalid = client.post("/_emulator/contacts", json=[{"responsible_user_id": 1}])
    assert invalid.status_code == 400
    assert invalid.json()["validation-errors"][0]["errors"][0]["path"] == "responsible_user_id"
    assert client.post("/_emulator/clock", json={"action": "rewind"}).status_code == 400


def test_clock_control(client, emulator) -> None:
    assert client.get("/_emulator/clock").json() == {"now": NOW, "frozen": True}
    client.post("/_emulator/clock", json={"action": "set", "at": NOW + 100})
    assert client.get("/_emulator/clock").json()["now"] == NOW + 100
    client.post("/_emulator/clock", json={"action": "freeze", "at": NOW + 200})
    assert emulator.clock.now_s() == NOW + 200
    running = client.post("/_emulator/clock", json={"action": "unfreeze"}).json()
    assert running["frozen"] is False
    assert running["now"] >= NOW + 200


def test_chat_link_from_admin(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    link = client.post("/_emulator/chats", json={"contact_id": contact_id, "chat_id": "c-1"}).json()
    assert link["contact_id"] == contact_id
    got = client.get("/api/v4/contacts/chats", params={"chat_id": "c-1"}).json()
    assert got["_embedded"]["chats"][0]["id"] == link["id"]


def test_request_log(client, emulator) -> None:
    contact_id = live_ids(emulator)[0]
    client.get(CONTACTS, params={"limit": 3, "filter[id][]": contact_id})
    client.patch(CONTACTS, json=[{"id": contact_id, "name": "Запись в журнале"}])
    log = client.get("/_emulator/requests").json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", CONTACTS, 200),
        ("PATCH", CONTACTS, 200),
    ]
    assert "filter%5Bid%5D%5B%5D" in log[0]["query"] or "filter[id][]" in log[0]["query"]
    assert log[0]["body"] is None
    assert log[1]["body"] == [{"id": contact_id, "name": "Запись в журнале"}]
    assert log[1]["arrived_at"] >= log[0]["arrived_at"]
    assert log[0]["clock"] == NOW
    assert client.delete("/_emulator/requests").json() == []
    assert client.get("/_emulator/requests").json() == []


def test_request_log_answers_a_body_with_an_integer_beyond_64_bits(client, emulator) -> None:
    """A client may write 1e20 as digits; the log still answers (it was a 500)."""
    contact_id, huge = live_ids(emulator)[0], 10**20
    body = f'[{{"id": {contact_id}, "custom_fields_values": [{{"field_id": 570008, '
    body += f'"values": [{{"value": {huge}}}]}}]}}]'
    client.patch(CONTACTS, content=body, headers={"Content-Type": "application/json"})
    log = client.get("/_emulator/requests")
    assert log.status_code == 200
    assert log.json()[-1]["body"][0]["custom_fields_values"][0]["values"] == [{"value": huge}]


def test_reset_and_state(client, emulator) -> None:
    client.post("/_emulator/contacts", json=[{"name": "a"}, {"name": "b"}])
    state = client.get("/_emulator/state").json()
    live = state["contacts"]
    assert state["clock"]["frozen"] is True
    reset = client.post("/_emulator/reset").json()
    assert client.get("/_emulator/state").json()["contacts"] == live - 2
    # a reset mints new tokens: the old long-lived one no longer works
    headers = {"Authorization": f"Bearer {reset['long_lived_token']}"}
    assert client.get(CONTACTS, headers=headers, params={"limit": 1}).status_code == 200


def test_controls_set_latency(client, emulator) -> None:
    controls = client.patch("/_emulator/controls", json={"latency_ms": 150, "jitter_ms": 0}).json()
    assert controls["latency_ms"] == 150
    response = client.get(CONTACTS, params={"limit": 1})
    assert response.elapsed.total_seconds() >= 0.15
    assert client.patch("/_emulator/controls", json={"nope": 1}).status_code == 400


def test_admin_key(make_settings) -> None:
    emulator = Emulator(make_settings(admin_key="s3cret"))
    with serve(emulator) as server, httpx.Client(verify=SSL, base_url=server.base_url) as http:
        assert http.get("/_emulator/state").status_code == 401
        assert http.get("/_emulator/state", headers={"X-Emulator-Key": "s3cret"}).status_code == 200


def test_same_seed_same_account_different_seed_different_account(make_settings) -> None:
    first = Emulator(make_settings(seed=11)).contact(20_000_001)
    again = Emulator(make_settings(seed=11)).contact(20_000_001)
    other = Emulator(make_settings(seed=12)).contact(20_000_001)
    assert first == again
    assert first != other


@pytest.mark.parametrize("path", ["/_emulator/state", "/_emulator/faults", "/_emulator/controls"])
def test_admin_reads_are_json(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


def test_admin_reads_every_contact_and_chat_link_including_the_trash(client, emulator) -> None:
    """A test (or an e2e run against a subprocess) can compare a database with the whole
    account without reaching into the emulator's objects: the API hides the trash's data and
    the chat links of trashed contacts."""
    gone = live_ids(emulator)[5]
    link = client.post("/_emulator/chats", json={"contact_id": gone, "chat_id": "c-gone"}).json()
    client.post(f"/_emulator/contacts/{gone}/delete")
    every = client.get("/_emulator/contacts").json()
    assert [c["id"] for c in every] == sorted(emulator.account.contacts)
    trash = {c["id"] for c in every if c.get("is_deleted")}
    assert gone in trash
    assert trash == {c.id for c in emulator.account.contacts.values() if c.is_deleted}
    live = next(c for c in every if c["id"] == live_ids(emulator)[0])
    assert set(live["_embedded"]) >= {"tags", "companies", "leads", "customers"}
    only_trash = client.get("/_emulator/contacts", params={"deleted": "true"}).json()
    assert {c["id"] for c in only_trash} == trash
    only_live = client.get("/_emulator/contacts", params={"deleted": "false"}).json()
    assert [c["id"] for c in only_live] == live_ids(emulator)
    assert client.get("/_emulator/contacts", params={"deleted": "maybe"}).status_code == 400
    links = client.get("/_emulator/chats").json()
    assert link in links
    assert [x["id"] for x in links] == sorted(x.id for x in emulator.account.chat_links.values())
    hidden = client.get("/api/v4/contacts/chats", params={"contact_id": gone})
    assert hidden.status_code == 204  # the API does not show a trashed contact's links
    assert emulator.chat_links() == links
    assert [c["id"] for c in emulator.contacts()] == [c["id"] for c in every]


def test_bulk_edit_puts_thousands_into_one_given_second_while_the_clock_runs() -> None:
    """Issue 12's knob: thousands of contacts in ONE `updated_at` second, over the admin HTTP
    API and from Python, with the clock running (an explicit second, or the clock's read once)."""
    emulator = Emulator(EmulatorSettings(contacts=3_200, seed=5, rate_limit=None))
    ids = live_ids(emulator)[:3_000]
    second = emulator.clock.now_s() - 3_600  # an hour ago: a window a cursor already passed
    with serve(emulator) as running, httpx.Client(base_url=running.base_url, verify=SSL) as http:
        http.headers["Authorization"] = f"Bearer {emulator.long_lived_token}"
        body = {"contacts": [{"id": i, "first_name": "Bulk"} for i in ids], "updated_at": second}
        answer = http.patch("/_emulator/contacts", json=body, timeout=60)
        assert answer.json() == {"updated_at": second}
        params = {"filter[updated_at][from]": second, "filter[updated_at][to]": second}
        assert sorted(c["id"] for c in all_pages(http, params)) == ids
        assert http.patch("/_emulator/contacts", json={"contacts": ids}).status_code == 400
        wrong = {"contacts": [{"id": ids[0]}], "updated_at": "soon"}
        assert http.patch("/_emulator/contacts", json=wrong).status_code == 400
        touched = http.post(
            "/_emulator/contacts/touch", json={"count": 2_000, "updated_at": second + 1}
        ).json()["ids"]
        assert len(touched) == 2_000
        params = {"filter[updated_at][from]": second + 1, "filter[updated_at][to]": second + 1}
        assert sorted(c["id"] for c in all_pages(http, params)) == sorted(touched)
    stamp = emulator.update_contacts([{"id": i, "last_name": "Py"} for i in ids])
    assert {emulator.account.contacts[i].updated_at for i in ids} == {stamp}
    assert emulator.update_contacts([{"id": ids[0]}], at=second + 2) == second + 2
    assert emulator.touch_contacts(ids[:10], at=second + 3) == ids[:10]
    assert {emulator.account.contacts[i].updated_at for i in ids[:10]} == {second + 3}


def test_a_delete_without_an_event_vanishes_unexplained(client: httpx.Client) -> None:
    """The knob behind the full resync's guard tests: a contact gone from lists and by-id reads
    with no `contact_deleted` event (as a broken listing would show it)."""
    quiet, logged = (
        client.post("/_emulator/contacts", json={"name": n}).json()["ids"][0] for n in "ab"
    )
    assert client.post(f"/_emulator/contacts/{quiet}/delete?event=false").json() == {"ok": True}
    assert client.post(f"/_emulator/contacts/{logged}/delete").json() == {"ok": True}
    assert client.post(f"/_emulator/contacts/{logged}/delete?event=no").status_code == 400
    assert client.get(f"/api/v4/contacts/{quiet}").status_code == 204
    params = [("filter[type][]", "contact_deleted")]
    found = client.get("/api/v4/events", params=params).json()["_embedded"]["events"]
    assert {e["entity_id"] for e in found} & {quiet, logged} == {logged}


def _phone_values(contact: dict) -> list[dict]:
    fields = contact["custom_fields_values"] or []
    return [v for f in fields if f["field_code"] == "PHONE" for v in f["values"]]


def test_enum_key_renders_a_multitext_kind_as_the_reference_get_example_does(
    client: httpx.Client, emulator: Emulator
) -> None:
    contact_id = next(i for i in live_ids(emulator) if _phone_values(emulator.contact(i) or {}))
    assert (
        client.patch("/_emulator/controls", json={"enum_key": "enum"}).json()["enum_key"] == "enum"
    )
    for read in (
        client.get(f"{CONTACTS}/{contact_id}").json(),
        client.get(CONTACTS, params={"filter[id]": contact_id}).json()["_embedded"]["contacts"][0],
    ):
        values = _phone_values(read)
        assert values
        assert all(set(v) == {"value", "enum_id", "enum"} for v in values)
    assert client.patch("/_emulator/controls", json={"enum_key": "kind"}).status_code == 400
    client.patch("/_emulator/controls", json={"enum_key": "enum_code"})
    values = _phone_values(client.get(f"{CONTACTS}/{contact_id}").json())
    assert all(set(v) == {"value", "enum_id", "enum_code"} for v in values)


def test_a_field_added_by_an_administrator_is_listed_and_writable(
    client: httpx.Client, emulator: Emulator
) -> None:
    field = {"id": 570_013, "name": "Мессенджер", "type": "select", "code": "MESSENGER",
             "enums": [{"id": 840_061, "value": "Telegram"}]}  # fmt: skip
    assert client.post("/_emulator/custom_fields", json=field).json() == {"ok": True, "id": 570_013}
    assert client.post("/_emulator/custom_fields", json=field).status_code == 400  # exists
    assert client.post("/_emulator/custom_fields", json={"id": 1}).status_code == 400
    listed = client.get("/api/v4/contacts/custom_fields", params={"limit": 250}).json()
    assert 570_013 in [f["id"] for f in listed["_embedded"]["custom_fields"]]
    contact_id = live_ids(emulator)[0]
    entity = {"id": contact_id, "custom_fields_values": [
        {"field_code": "MESSENGER", "values": [{"enum_id": 840_061}]}]}  # fmt: skip
    assert client.patch(CONTACTS, json=[entity]).status_code == 200
    fields = client.get(f"{CONTACTS}/{contact_id}").json()["custom_fields_values"]
    assert {"value": "Telegram", "enum_id": 840_061} in [
        v for f in fields if f["field_id"] == 570_013 for v in f["values"]
    ]
