"""Contract: with `list_lag_s`, lists serve each contact as it was that long ago (the previous
version after an edit, as amoCRM's lists lag a write by about a second); GET by id never lags."""

from __future__ import annotations

import httpx
from emulator_helpers import contacts_of, ids_of

from sync.emulator import Emulator


def _listed(client: httpx.Client, contact_id: int) -> dict:
    (contact,) = contacts_of(client.get("/api/v4/contacts", params={"filter[id][]": contact_id}))
    return contact


def _first(emulator: Emulator) -> int:
    return min(c.id for c in emulator.account.contacts.values() if not c.is_deleted)


def test_an_edit_is_listed_as_the_previous_version_until_the_lag_passed(
    client: httpx.Client, emulator: Emulator
) -> None:
    contact_id = _first(emulator)
    before = _listed(client, contact_id)
    emulator.set_controls(list_lag_s=2)
    emulator.clock.advance(5)
    at = emulator.update_contacts([{"id": contact_id, "name": "Свежее имя"}])
    listed = _listed(client, contact_id)
    assert (listed["name"], listed["updated_at"]) == (before["name"], before["updated_at"])
    single = client.get(f"/api/v4/contacts/{contact_id}").json()
    assert (single["name"], single["updated_at"]) == ("Свежее имя", at)
    emulator.clock.advance(2.5)
    assert (_listed(client, contact_id)["name"], _listed(client, contact_id)["updated_at"]) == (
        "Свежее имя",
        at,
    )


def test_two_edits_inside_the_lag_show_the_version_of_lag_seconds_ago(
    client: httpx.Client, emulator: Emulator
) -> None:
    contact_id = _first(emulator)
    emulator.set_controls(list_lag_s=2)
    emulator.clock.advance(5)
    emulator.update_contacts([{"id": contact_id, "name": "first"}])
    emulator.clock.advance(1.5)
    emulator.update_contacts([{"id": contact_id, "name": "second"}])
    emulator.clock.advance(1)  # 2.5 s after the first edit, 1 s after the second
    assert _listed(client, contact_id)["name"] == "first"


def test_filters_and_order_see_the_lagging_version(
    client: httpx.Client, emulator: Emulator
) -> None:
    contact_id = _first(emulator)
    emulator.set_controls(list_lag_s=2)
    emulator.clock.advance(60)
    at = emulator.update_contacts([{"id": contact_id, "name": "moved"}])
    fresh = {"filter[updated_at][from]": at, "order[updated_at]": "asc"}
    assert client.get("/api/v4/contacts", params=fresh).status_code == 204
    emulator.clock.advance(3)
    assert ids_of(client.get("/api/v4/contacts", params=fresh)) == [contact_id]


def test_a_deleted_contact_stays_listed_during_the_lag(
    client: httpx.Client, emulator: Emulator
) -> None:
    contact_id = _first(emulator)
    emulator.set_controls(list_lag_s=2)
    emulator.delete_contact(contact_id)
    assert _listed(client, contact_id)["id"] == contact_id
    assert client.get(f"/api/v4/contacts/{contact_id}").status_code == 204
    emulator.clock.advance(3)
    params = {"filter[id][]": contact_id}
    assert client.get("/api/v4/contacts", params=params).status_code == 204
