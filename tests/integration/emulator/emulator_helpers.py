"""Shared constants and helpers for the emulator contract tests."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from sync.emulator import Emulator, EmulatorSettings, EmulatorTransport

# One TLS context for every client: httpx builds one per Client otherwise (~35-100 ms each),
# which would dominate this suite although the emulator speaks plain HTTP.
SSL = ssl.create_default_context()

NOW = 1_767_225_600 + 30 * 86_400  # a month after the seed's data epoch
BASE_SETTINGS = EmulatorSettings(
    contacts=300, seed=3, rate_limit=None, clock_start=NOW, clock_frozen=True
)


def contacts_of(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["_embedded"]["contacts"]


def all_pages(client: httpx.Client, params: dict | list, limit: int = 250) -> list[dict]:
    """Walk `_links.next` to the end, as the maintainers' reference loop does."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    found, url, query = [], "/api/v4/contacts", [*pairs, ("limit", limit)]
    while True:
        response = client.get(url, params=query)
        if response.status_code == 204:
            return found
        body = response.json()
        found.extend(body["_embedded"]["contacts"])
        if "next" not in body["_links"]:
            return found
        url, query = body["_links"]["next"]["href"], None


def ids_of(response: httpx.Response) -> list[int]:
    return [c["id"] for c in contacts_of(response)]


@contextmanager
def in_process_client(emulator: Emulator) -> Iterator[httpx.Client]:
    """A client on the httpx transport: no socket, for tests that need their own account."""
    headers = {"Authorization": f"Bearer {emulator.long_lived_token}"}
    transport = EmulatorTransport(emulator)
    with httpx.Client(
        verify=SSL, transport=transport, base_url="http://e.test", headers=headers
    ) as http:
        yield http


def live_ids(emulator: Emulator) -> list[int]:
    """Ids of the contacts not in the trash, ascending."""
    return sorted(c.id for c in emulator.account.contacts.values() if not c.is_deleted)
