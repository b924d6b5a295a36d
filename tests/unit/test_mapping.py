"""Pure mapping: amoCRM contact JSON → rows, events → deletions; no database, no sockets."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sync.core.mapping import (
    CONTACT_COLUMNS,
    RELATION_COLUMNS,
    FieldDef,
    chat_rows,
    contact_row,
    custom_value_rows,
    event_changes,
    field_def,
    to_rows,
    unknown_fields,
    value_text,
)

PHONE = FieldDef(10, "Телефон", "PHONE", "multitext", {101: "WORK", 102: "MOB"})
COLOUR = FieldDef(20, "Colour", None, "select", {201: "Red", 202: "Blue"})
BIRTHDAY = FieldDef(30, "Birthday", None, "birthday")
FIELDS = {f.id: f for f in (PHONE, COLOUR, BIRTHDAY)}


def contact(cid: int = 1, updated_at: int = 1_700_000_000, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": cid,
        "name": "Ann Lee",
        "first_name": "Ann",
        "last_name": "Lee",
        "responsible_user_id": 5,
        "group_id": 0,
        "created_by": 5,
        "updated_by": 6,
        "created_at": 1_600_000_000,
        "updated_at": updated_at,
        "closest_task_at": None,
        "account_id": 31,
        "custom_fields_values": [
            {
                "field_id": 10,
                "field_name": "x",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [
                    {"value": "+7 1", "enum_id": 101, "enum_code": "WORK"},
                    {"value": "+7 2", "enum_id": 102, "enum_code": "MOB"},
                ],
            },
            {"field_id": 20, "values": [{"value": "Blue", "enum_id": 202}]},
            {"field_id": 30, "values": [{"value": 0}]},
        ],
        "_embedded": {
            "tags": [{"id": 7, "name": "vip", "color": None}],
            "companies": [{"id": 70}],
            "leads": [{"id": 8}, {"id": 9}, {"id": 8}],
            "customers": [{"id": 11}],
            "catalog_elements": [{"id": 12, "metadata": {"quantity": 2, "catalog_id": 13}}],
        },
    }
    data.update(extra)
    return data


def as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(CONTACT_COLUMNS, row, strict=True))


def value_dicts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(RELATION_COLUMNS["custom_values"], r, strict=True)) for r in rows]


def test_contact_row_keeps_unix_seconds_and_cfv_shape() -> None:
    row = as_dict(contact_row(contact()))
    assert row["id"] == 1
    assert row["updated_at"] == 1_700_000_000
    assert row["custom_fields_values"][0]["field_id"] == 10


def test_contact_without_values_has_null_jsonb() -> None:
    assert as_dict(contact_row(contact(custom_fields_values=[])))["custom_fields_values"] is None
    assert as_dict(contact_row(contact(custom_fields_values=None)))["custom_fields_values"] is None


def test_one_row_per_value_with_names_from_definitions_and_amocrms_own_enum_codes() -> None:
    rows = value_dicts(custom_value_rows(1, contact()["custom_fields_values"], FIELDS))
    assert [(r["field_id"], r["position"]) for r in rows] == [(10, 0), (10, 1), (20, 0), (30, 0)]
    assert rows[0]["field_name"] == "Телефон"  # the definition wins over the contact's copy
    assert (rows[1]["value"], rows[1]["enum_code"]) == ("+7 2", "MOB")
    # a select value: amoCRM sends the label in `value` and no code; none is made up
    assert (rows[2]["value"], rows[2]["enum_id"], rows[2]["enum_code"]) == ("Blue", 202, None)
    assert rows[3]["value"] == "1970-01-01T00:00:00+00:00"


def test_enum_code_is_the_values_own_never_a_label_from_the_definitions() -> None:
    values = [
        {"field_id": 10, "values": [{"value": "+7 3", "enum_id": 102}]},  # no code sent
        {"field_id": 20, "values": [{"value": "Red", "enum_id": 201, "enum_code": None}]},
    ]
    rows = value_dicts(custom_value_rows(1, values, FIELDS))
    assert [(r["enum_id"], r["enum_code"]) for r in rows] == [(102, None), (201, None)]


def test_enum_is_read_as_an_alias_of_enum_code() -> None:
    """The vendor reference's GET example renders a phone's kind as `enum`."""
    values = [
        {
            "field_id": 10,
            "values": [
                {"value": "+7 4", "enum_id": 102, "enum": "MOB"},
                {"value": "+7 5", "enum": "WORK", "enum_code": "HOME"},
            ],
        }
    ]
    rows = value_dicts(custom_value_rows(1, values, FIELDS))
    assert [(r["enum_id"], r["enum_code"]) for r in rows] == [(102, "MOB"), (None, "HOME")]


def test_unknown_field_falls_back_to_the_contacts_own_names() -> None:
    rows = value_dicts(custom_value_rows(1, contact()["custom_fields_values"][:1], {}))
    assert (rows[0]["field_code"], rows[0]["field_type"]) == ("PHONE", "multitext")


def test_relation_values_are_ints_strs_or_none_whatever_json_types_amocrm_sends() -> None:
    """The COPY into staging formats values by column type (`sync.db.staging.copy_rows`): an
    int where a text column is, or a str where a bigint column is, would fail the page."""
    odd = contact(
        custom_fields_values=[
            {"field_id": "99", "field_name": 5, "field_code": 6, "field_type": 7,
             "values": [{"value": 1.5, "enum_id": "3", "enum_code": 4}, {"value": True}]},
        ],
        _embedded={"tags": [{"id": "7", "name": 8}], "leads": [{"id": "9"}],
                   "customers": [{"id": 10}], "companies": [{"id": "11"}]},
    )  # fmt: skip
    rows = to_rows(
        [odd],
        {99: field_def({"id": 99, "name": 1, "code": None, "type": 2})},
        with_=("leads", "customers"),
    )
    text = {"field_code", "field_name", "field_type", "value", "enum_code", "tag_name"}
    for attr in ("custom_values", "tags", "leads", "customers", "companies"):
        for row in rows.dicts(attr):
            for column, value in row.items():
                wanted = str if column in text else int
                assert value is None or type(value) is wanted, (attr, column, value)
    assert [r["field_name"] for r in rows.dicts("custom_values")] == ["1", "1"]
    assert custom_value_rows(1, odd["custom_fields_values"], {})[0][3:6] == ("6", "5", "7")


def test_relations_deduplicated_and_only_the_configured_ones() -> None:
    rows = to_rows([contact()], FIELDS, with_=("leads", "catalog_elements"))
    assert rows.dicts("leads") == [
        {"contact_id": 1, "lead_id": 8},
        {"contact_id": 1, "lead_id": 9},
    ]
    assert rows.customers == []
    assert rows.dicts("tags") == [{"contact_id": 1, "tag_id": 7, "tag_name": "vip"}]
    assert rows.dicts("companies") == [{"contact_id": 1, "company_id": 70}]
    assert rows.dicts("catalog_elements")[0]["catalog_id"] == 13
    assert rows.dicts("catalog_elements")[0]["quantity"] == 2


def test_catalog_elements_read_quantity_and_catalog_id_at_the_top_level_first() -> None:
    """The reference lists both on the element beside `metadata`; the SDK's shape has them
    only in `metadata`. The element's own values win; `metadata` fills what it lacks."""
    elements = [
        {"id": 12, "quantity": 5, "catalog_id": 14, "metadata": {"quantity": 2, "catalog_id": 13}},
        {"id": 15, "quantity": 0, "catalog_id": 16, "metadata": {"quantity": 9}},
        {"id": 17, "quantity": 3, "catalog_id": 18},
        {"id": 19, "metadata": {"quantity": 4, "catalog_id": 20, "price_id": 21}},
    ]
    item = contact(_embedded={"catalog_elements": elements})
    rows = to_rows([item], FIELDS, with_=("catalog_elements",)).dicts("catalog_elements")
    assert [(r["element_id"], r["catalog_id"], r["quantity"]) for r in rows] == [
        (12, 14, 5),
        (15, 16, 0),
        (17, 18, 3),
        (19, 20, 4),
    ]
    assert rows[2]["metadata"] is None
    assert rows[3]["metadata"] == {"quantity": 4, "catalog_id": 20, "price_id": 21}


def test_a_contact_listed_twice_keeps_its_newest_version() -> None:
    rows = to_rows([contact(updated_at=5, name="new"), contact(updated_at=4, name="old")], {}, ())
    assert [r["name"] for r in rows.dicts("contacts")] == ["new"]


def test_unknown_fields_and_enums_are_noticed() -> None:
    assert not unknown_fields([contact()], FIELDS)
    assert unknown_fields([contact()], {10: PHONE})
    odd = contact(custom_fields_values=[{"field_id": 20, "values": [{"enum_id": 999}]}])
    assert unknown_fields([odd], FIELDS)


def test_field_def_reads_enums() -> None:
    raw = {
        "id": 5,
        "name": "N",
        "code": None,
        "type": "select",
        "enums": [{"id": 1, "value": "A", "sort": 1}],
    }
    assert field_def(raw) == FieldDef(5, "N", None, "select", {1: "A"})


def test_value_text_shapes() -> None:
    assert value_text(True, "checkbox") == "true"
    assert value_text(False, "checkbox") == "false"
    assert value_text("12.5", "numeric") == "12.5"
    assert value_text({"b": 1, "a": 2}, "legal_entity") == '{"a": 2, "b": 1}'
    assert value_text(None, "text") is None


def test_chat_rows_one_per_chat() -> None:
    links = [{"id": 1, "contact_id": 2, "chat_id": "a"}, {"id": 1, "contact_id": 2, "chat_id": "a"}]
    assert chat_rows(links) == [{"id": 1, "contact_id": 2, "chat_id": "a"}]


def event(cid: int, kind: str, at: int, eid: str = "") -> dict[str, Any]:
    return {
        "id": eid or f"{at:012d}",
        "type": kind,
        "entity_id": cid,
        "entity_type": "contact",
        "created_at": at,
    }


def test_latest_event_of_each_contact_wins() -> None:
    events = [
        event(1, "contact_deleted", 10),
        event(1, "contact_restored", 20),
        event(2, "contact_restored", 5),
        event(2, "contact_deleted", 6),
        event(3, "contact_added", 30),
        {**event(4, "contact_deleted", 7), "entity_type": "lead"},
    ]
    assert event_changes(events) == {1: (False, 20), 2: (True, 6)}


def test_a_deletion_and_a_restore_in_the_same_second_are_unsure_whatever_their_ids() -> None:
    """amoCRM's timestamps are whole seconds and the ids' order inside one is no promise: the
    pull must ask amoCRM by id (None), not guess from the list (found by the engine's
    completeness test: a contact restored in its deletion's second was marked deleted)."""
    for first, second in (("a", "b"), ("b", "a")):
        events = [
            event(1, "contact_deleted", 10, first),
            event(1, "contact_restored", 10, second),
            event(2, "contact_deleted", 9),
            event(2, "contact_deleted", 9, "z"),
        ]
        assert event_changes(events) == {1: (None, 10), 2: (True, 9)}


@given(st.lists(st.tuples(st.integers(1, 3), st.booleans(), st.integers(0, 50)), max_size=30))
def test_event_order_does_not_matter(raw: list[tuple[int, bool, int]]) -> None:
    kinds = {True: "contact_deleted", False: "contact_restored"}
    events = [event(c, kinds[d], at, f"{at:04d}-{i:04d}") for i, (c, d, at) in enumerate(raw)]
    assert event_changes(events) == event_changes(list(reversed(events)))


def test_a_date_no_iso_date_can_show_is_amocrms_number_as_text() -> None:
    assert value_text(1_735_689_600, "date") == "2025-01-01T00:00:00+00:00"
    assert value_text(1_735_689_600.5, "date_time") == "2025-01-01T00:00:00.500000+00:00"
    assert value_text(1_735_689_600_000, "birthday") == "1735689600000"
    assert value_text(-62_200_000_000, "date") == "-62200000000"
    assert value_text(253_402_300_800, "date") == "253402300800"
    assert value_text(1e20, "date") == "100000000000000000000"  # orjson reads big ints so
    assert value_text(1.5e300, "date") == str(int(1.5e300))
    assert value_text(-1.25e19, "date") == "-12500000000000000000"
    assert value_text(float("nan"), "date") == "nan"
    assert value_text(float("inf"), "date") == "inf"
    assert value_text("2025-01-01", "date") == "2025-01-01"


@given(st.one_of(st.integers(), st.floats()))
def test_a_date_value_of_any_number_becomes_text(number: int | float) -> None:
    assert isinstance(value_text(number, "date"), str)


def test_status_shows_a_cursor_no_iso_date_can_show_as_its_number() -> None:
    from sync.status import CONTACTS_CURSOR, _cursor

    state = {CONTACTS_CURSOR: {"value": {"updated_at": 1_735_689_600_000, "ids": []}}}
    assert _cursor(state) == {
        "updated_at": 1_735_689_600_000,
        "ids": [],
        "updated_at_iso": "1735689600000",
    }
