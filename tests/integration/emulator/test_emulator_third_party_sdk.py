"""The PyPI `amocrm-sdk` client, written by nobody here, run against the emulator.

It builds its own URLs, query strings and payloads (including the whole fetched contact on
update) and refreshes its OAuth token on a 401, so it checks the emulator's reading of the API
rather than our own.
"""

from __future__ import annotations

from collections.abc import Iterator

import amocrm.client
import pytest
from amocrm import AmoCRM
from amocrm.auth import InMemoryTokenStorage, OAuthConfig
from amocrm.models.common import Tag
from amocrm.models.contacts import Contact
from emulator_helpers import live_ids

from sync.emulator import Emulator, EmulatorSettings, RunningServer


@pytest.fixture
def settings(make_settings) -> EmulatorSettings:
    # The SDK compares the token's `exp` with the wall clock, so the emulator follows it too.
    return make_settings(contacts=180, clock_start=None, clock_frozen=False)


@pytest.fixture
def sdk(
    emulator: Emulator, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AmoCRM]:
    monkeypatch.setattr(amocrm.client, "_TOKEN_URL", f"{server.base_url}/oauth2/access_token")
    pair = emulator.issue_tokens()
    storage = InMemoryTokenStorage()
    storage.save(pair["access_token"], pair["refresh_token"])
    s = emulator.settings
    oauth = OAuthConfig(client_id=s.client_id, client_secret=s.client_secret,
                        redirect_uri=s.redirect_uri, storage=storage)  # fmt: skip
    client = AmoCRM("emulator", oauth)
    client._base_url = server.base_url  # the SDK's only way to leave *.amocrm.ru
    yield client
    client._session.close()


def test_sdk_iterates_every_page(sdk: AmoCRM, emulator: Emulator) -> None:
    contacts = list(sdk.contacts.list(limit=50))
    assert [c.id for c in contacts] == live_ids(emulator)
    assert all(isinstance(c.updated_at, int) for c in contacts)


def test_sdk_page_filter_and_order(sdk: AmoCRM, emulator: Emulator) -> None:
    target = live_ids(emulator)[4]
    (found,) = sdk.contacts.list(page=1, limit=10, filter={"id": target})
    assert found.id == target
    newest = sdk.contacts.list(page=1, limit=5, order={"updated_at": "desc"})
    stamps = [c.updated_at for c in newest]
    assert stamps == sorted(stamps, reverse=True)


def test_sdk_create_get_and_update(sdk: AmoCRM, emulator: Emulator) -> None:
    new = Contact(first_name="Сторонний", last_name="Клиент", tags=[Tag(name="sdk")])
    new.set_cf_raw(570_001, [{"value": "+79990000001", "enum_code": "MOB"}])
    (created,) = sdk.contacts.create([new])
    assert created.id is not None
    fetched = sdk.contacts.get(created.id)
    assert fetched.name == "Сторонний Клиент"
    assert [t.name for t in fetched.tags] == ["sdk"]
    assert fetched.get_cf_raw(570_001)[0]["enum_code"] == "MOB"
    # The SDK sends the whole fetched contact back (ids, timestamps, account_id, ...).
    fetched.set_cf_value(570_003, "Главный")
    fetched.last_name = "Клиентов"
    updated = sdk.contacts.update_one(fetched)
    assert updated.id == created.id
    assert updated.updated_at >= fetched.updated_at
    again = sdk.contacts.get(created.id)
    assert again.get_cf_value(570_003) == "Главный"
    assert again.last_name == "Клиентов"


def test_sdk_batch_update(sdk: AmoCRM, emulator: Emulator) -> None:
    ids = live_ids(emulator)[:3]
    updated = sdk.contacts.update([Contact(id=i, first_name="Пакет") for i in ids])
    assert [c.id for c in updated] == ids
    assert {emulator.account.contacts[i].first_name for i in ids} == {"Пакет"}


def test_sdk_reads_custom_field_definitions(sdk: AmoCRM) -> None:
    fields = sdk.custom_fields.list("contacts")
    assert {f.id for f in fields} >= {570_001, 570_002}


def test_sdk_refreshes_an_expired_token_and_the_emulator_rotates_it(
    sdk: AmoCRM, emulator: Emulator
) -> None:
    old_access, old_refresh = sdk._oauth.storage.load()
    emulator.expire_access_tokens()
    assert sdk.contacts.list(page=1, limit=1)
    new_access, new_refresh = sdk._oauth.storage.load()
    assert (new_access, new_refresh) != (old_access, old_refresh)
    statuses = [(e["method"], e["path"], e["status"]) for e in emulator.requests()]
    assert statuses == [
        ("GET", "/api/v4/contacts", 401),
        ("POST", "/oauth2/access_token", 200),
        ("GET", "/api/v4/contacts", 200),
    ]
