"""Contract: response headers on every kind of answer, over real HTTP."""

from __future__ import annotations

import httpx
from emulator_helpers import live_ids

CONTACTS = "/api/v4/contacts"


def assert_no_content(response: httpx.Response) -> None:
    assert response.status_code == 204
    assert response.content == b""
    assert "content-length" not in response.headers  # RFC 9110 §8.6
    assert "content-type" not in response.headers
    assert response.headers["x-request-id"]


def test_a_204_list_page_has_no_content_length(client: httpx.Client, emulator) -> None:
    past_the_end = client.get(CONTACTS, params={"limit": 250, "page": 99})
    assert_no_content(past_the_end)
    assert_no_content(client.get(CONTACTS, params={"filter[id]": 1}))
    # the keep-alive connection is still in step: the next answer on it parses
    assert client.get(CONTACTS, params={"limit": 1}).status_code == 200


def test_a_204_get_by_id_has_no_content_length(client: httpx.Client, emulator) -> None:
    assert_no_content(client.get(f"{CONTACTS}/1"))
    contact_id = live_ids(emulator)[0]
    emulator.delete_contact(contact_id)
    assert_no_content(client.get(f"{CONTACTS}/{contact_id}"))
    assert client.get(f"{CONTACTS}/{live_ids(emulator)[0]}").status_code == 200


def test_answers_with_a_body_still_carry_their_length(client: httpx.Client) -> None:
    response = client.get(CONTACTS, params={"limit": 1})
    assert int(response.headers["content-length"]) == len(response.content)
