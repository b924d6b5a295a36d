"""`contact_custom_field_values` holds each value as amoCRM sent it: `enum_code` is amoCRM's own
(WORK, MOB, … for phones and e-mails; NULL for select, multiselect and radiobutton values, whose
option label amoCRM sends in `value`), never a label copied from the field definitions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.emulator import Emulator
from sync.emulator.model import CustomField, EnumOption, field_ranks
from tests.integration.pull_helpers import emulated, make_config, pull

PHONE, EMAIL, SOURCE, INTERESTS, CHANNEL = 570_001, 570_002, 570_004, 570_005, 570_012
TWO_INTERESTS = [{"enum_id": 840_031}, {"enum_id": 840_033}]
VALUES_SQL = """
    SELECT contact_id, field_id, position, field_type, value, enum_id, enum_code
    FROM amocrm.contact_custom_field_values ORDER BY 1, 2, 3"""


def _rows(engine: Engine, contact_id: int | None = None) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(VALUES_SQL))]
    return [r for r in rows if contact_id is None or r[0] == contact_id]


def _amo_rows(emulator: Emulator) -> list[tuple[Any, ...]]:
    """One tuple per value of every live contact, straight from amoCRM's JSON."""
    rows = []
    for cid in sorted(emulator.account.contacts):
        data = emulator.contact(cid)
        assert data is not None
        if data.get("is_deleted"):
            continue
        for field in data.get("custom_fields_values") or ():
            for pos, value in enumerate(field["values"]):
                rows.append((cid, field["field_id"], pos, field["field_type"], value))
    return rows


def test_a_pull_stores_the_enum_code_amocrm_returned_and_null_for_choice_values(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=150) as (emulator, url):
        (cid,) = emulator.create_contacts(
            [
                {
                    "name": "Выбор",
                    "custom_fields_values": [
                        {"field_id": PHONE, "values": [{"value": "+7 1", "enum_code": "MOB"}]},
                        {"field_id": EMAIL, "values": [{"value": "a@b.c", "enum_code": "PRIV"}]},
                        {"field_id": SOURCE, "values": [{"enum_id": 840_022}]},
                        {"field_id": INTERESTS, "values": TWO_INTERESTS},
                        {"field_id": CHANNEL, "values": [{"enum_id": 840_043}]},
                    ],
                }
            ]
        )
        pull(make_config(db_config, url, emulator.long_lived_token), engine, emulator)
        amo = _amo_rows(emulator)
    assert _rows(engine, cid) == [
        (cid, PHONE, 0, "multitext", "+7 1", 840_003, "MOB"),
        (cid, EMAIL, 0, "multitext", "a@b.c", 840_012, "PRIV"),
        (cid, SOURCE, 0, "select", "Реклама", 840_022, None),
        (cid, INTERESTS, 0, "multiselect", "CRM", 840_031, None),
        (cid, INTERESTS, 1, "multiselect", "Интеграции", 840_033, None),
        (cid, CHANNEL, 0, "radiobutton", "Мессенджер", 840_043, None),
    ]
    # every value of the account: enum_id and enum_code exactly as amoCRM sent them
    stored = {r[:3]: r[3:] for r in _rows(engine)}
    assert len(stored) == len(amo)
    for key_cid, field_id, pos, ftype, value in amo:
        have = stored[key_cid, field_id, pos]
        assert (have[0], have[2], have[3]) == (ftype, value.get("enum_id"), value.get("enum_code"))
    choice = [r for r in stored.values() if r[0] in {"select", "multiselect", "radiobutton"}]
    assert {r[0] for r in choice} == {"select", "multiselect", "radiobutton"}
    assert all(r[3] is None and r[2] is not None for r in choice)


def test_views_still_show_phone_and_email_kinds(db_config: DatabaseConfig, engine: Engine) -> None:
    with emulated(contacts=20) as (emulator, url):
        (cid,) = emulator.create_contacts(
            [
                {
                    "name": "Виды",
                    "custom_fields_values": [
                        {"field_id": PHONE, "values": [{"value": "+7 2", "enum_id": 840_006}]},
                        {"field_id": EMAIL, "values": [{"value": "x@y.z", "enum_code": "WORK"}]},
                        {"field_id": SOURCE, "values": [{"value": "Сайт"}]},
                    ],
                }
            ]
        )
        pull(make_config(db_config, url, emulator.long_lived_token), engine, emulator)
    with engine.connect() as conn:
        flat = conn.execute(
            sa.text(
                "SELECT phone, phone_enum_code, email, email_enum_code "
                "FROM amocrm.contacts_flat WHERE id = :id"
            ),
            {"id": cid},
        ).one()
    assert tuple(flat) == ("+7 2", "OTHER", "x@y.z", "WORK")


def test_a_field_and_an_option_added_after_the_last_run_are_learnt_mid_walk(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    """A run starts with the stored definitions; a page naming a field or an enum option they
    lack makes it read them again before the page is stored (`sync.pull.complete`)."""
    new_field, new_option = 579_001, 849_001
    with emulated(contacts=120) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token)
        pull(config, engine, emulator)
        with emulator.account.lock:
            emulator.account.fields[new_field] = CustomField(
                new_field, "Новое поле", "select", None, 999, [EnumOption(849_101, "Да", 1)]
            )
            emulator.account.field_ranks = field_ranks(emulator.account.fields.values())
        first, second = sorted(emulator.account.contacts)[:2]
        emulator.clock.advance(5)
        emulator.update_contacts(
            [{"id": first, "custom_fields_values": [
                {"field_id": new_field, "values": [{"enum_id": 849_101}]}]}]
        )  # fmt: skip
        pull(config, engine, emulator)  # a field it does not know
        with emulator.account.lock:
            source = emulator.account.fields[SOURCE]
            source.enums = [*(source.enums or []), EnumOption(new_option, "Подкаст", 99)]
        emulator.clock.advance(5)
        emulator.update_contacts(
            [{"id": second, "custom_fields_values": [
                {"field_id": SOURCE, "values": [{"enum_id": new_option}]}]}]
        )  # fmt: skip
        pull(config, engine, emulator)  # an option of a field it knows
    with engine.connect() as conn:
        names = dict(
            conn.execute(sa.text("SELECT id, name FROM amocrm.contact_custom_fields")).all()
        )
        options = conn.execute(
            sa.text("SELECT enums FROM amocrm.contact_custom_fields WHERE id = :f"), {"f": SOURCE}
        ).scalar_one()
        first_rows = conn.execute(
            sa.text(
                "SELECT field_id, field_name, field_type, value, enum_id "
                "FROM amocrm.contact_custom_field_values WHERE contact_id = :c AND field_id = :f"
            ),
            {"c": first, "f": new_field},
        ).all()
    assert names[new_field] == "Новое поле"
    assert new_option in {option["id"] for option in options}
    assert [tuple(r) for r in first_rows] == [(new_field, "Новое поле", "select", "Да", 849_101)]
    sources = [r for r in _rows(engine, second) if r[1] == SOURCE]
    assert sources == [(second, SOURCE, 0, "select", "Подкаст", new_option, None)]
