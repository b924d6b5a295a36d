"""Seed data: deterministic, realistic, fast."""

from __future__ import annotations

import time
from dataclasses import asdict

from sync.emulator.seed import DELETED_USER_IDS, generate
from sync.emulator.settings import EmulatorSettings


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = generate(EmulatorSettings(contacts=500, seed=42))
    again = generate(EmulatorSettings(contacts=500, seed=42))
    other = generate(EmulatorSettings(contacts=500, seed=43))
    assert [asdict(c) for c in first.contacts] == [asdict(c) for c in again.contacts]
    assert first.chat_links == again.chat_links
    assert [asdict(c) for c in first.contacts] != [asdict(c) for c in other.contacts]


def test_data_is_realistic() -> None:
    settings = EmulatorSettings(contacts=3000, seed=1)
    data = generate(settings)
    contacts = data.contacts
    assert len(contacts) == 3000
    ids = [c.id for c in contacts]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [c.created_at for c in contacts] == sorted(c.created_at for c in contacts)
    year = 365 * 86_400
    assert all(settings.data_epoch - year <= c.created_at <= c.updated_at <= settings.data_epoch
               for c in contacts)  # fmt: skip
    assert max(c.created_at for c in contacts) - min(c.created_at for c in contacts) > year * 0.9
    assert any(not c.name.isascii() for c in contacts)
    assert len({c.updated_at for c in contacts}) < len(contacts) * 0.95  # shared seconds
    types = {f.type for f in data.fields}
    assert types >= {"text", "numeric", "select", "multiselect", "date", "checkbox", "multitext"}
    used = {field_id for c in contacts for field_id in c.custom_fields}
    assert used == {f.id for f in data.fields if f.type != "birthday"}
    assert any(not c.custom_fields for c in contacts)  # some have none: null in the API
    assert any(c.company_id for c in contacts)
    assert any(c.lead_ids for c in contacts)
    assert any(c.customer_ids for c in contacts)
    assert any(c.catalog_elements for c in contacts)
    assert any(c.tag_ids for c in contacts)
    assert any(c.is_deleted for c in contacts)
    assert data.chat_links


def test_multitext_values_carry_enum_ids_and_codes() -> None:
    data = generate(EmulatorSettings(contacts=200, seed=5))
    phone_field = next(f for f in data.fields if f.code == "PHONE")
    codes = {e.id: e.value for e in phone_field.enums or []}
    phones = [v for c in data.contacts for v in c.custom_fields.get(phone_field.id, [])]
    assert phones
    assert all(codes[v["enum_id"]] == v["enum_code"] for v in phones)
    assert all(str(v["value"]).startswith("+79") for v in phones)


def test_twenty_thousand_contacts_seed_quickly() -> None:
    started = time.process_time()
    data = generate(EmulatorSettings(contacts=20_000, seed=9))
    assert len(data.contacts) == 20_000
    assert time.process_time() - started < 3.0  # ~0.5 s here; 100k take a few seconds


def test_a_few_contacts_keep_the_ids_of_deleted_users() -> None:
    settings = EmulatorSettings(contacts=3000, seed=1)
    data = generate(settings)
    live_users = {u.id for u in data.users}
    authored = [c for c in data.contacts if c.created_by in DELETED_USER_IDS]
    assert 0.01 * 3000 < len(authored) < 0.03 * 3000
    assert any(c.updated_by in DELETED_USER_IDS for c in authored)
    assert not live_users & set(DELETED_USER_IDS)
    assert all(c.responsible_user_id in live_users for c in data.contacts)
    assert [c.id for c in generate(settings).contacts if c.created_by in DELETED_USER_IDS] == [
        c.id for c in authored
    ]


def test_deleted_users_draw_from_their_own_random_stream() -> None:
    """Turning the share off changes only the authors: the rest of the seed is the same."""
    with_deleted = generate(EmulatorSettings(contacts=500, seed=4))
    without = generate(EmulatorSettings(contacts=500, seed=4, deleted_user_fraction=0.0))
    assert not any(c.created_by in DELETED_USER_IDS for c in without.contacts)

    def rest(contacts: list) -> list[dict]:
        return [asdict(c) | {"created_by": 0, "updated_by": 0} for c in contacts]

    assert rest(with_deleted.contacts) == rest(without.contacts)
