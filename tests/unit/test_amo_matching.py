"""Does a contact read back carry what was written? (used to reconcile lost writes)."""

from __future__ import annotations

from typing import Any

from sync.amo.matching import carries, pair_created

REMOTE: dict[str, Any] = {
    "id": 10,
    "name": "Ann Lee",
    "first_name": "Ann",
    "last_name": "Lee",
    "responsible_user_id": 7,
    "custom_fields_values": [
        {
            "field_id": 1,
            "field_code": "PHONE",
            "field_type": "multitext",
            "values": [
                {"value": "+7999", "enum_id": 3, "enum_code": "WORK"},
                {"value": "+7888", "enum_id": 4, "enum_code": "MOB"},
            ],
        },
        {
            "field_id": 5,
            "field_code": None,
            "field_type": "select",
            "values": [{"value": "Gold", "enum_id": 51, "enum_code": None}],
        },
    ],
    "_embedded": {"tags": [{"id": 2, "name": "VIP", "color": None}]},
}


def test_write_shapes_match_the_read_shape() -> None:
    sent = {
        "name": "Ann Lee",
        "custom_fields_values": [
            {
                "field_code": "phone",
                "values": [
                    {"value": "+7888", "enum_code": "MOB"},
                    {"value": "+7999", "enum_code": "WORK"},
                ],
            },
            {"field_id": 5, "values": [{"enum_id": 51}]},
        ],
        "_embedded": {"tags": [{"name": "vip"}]},
        "request_id": "3",
    }
    assert carries(sent, REMOTE)


def test_any_difference_is_not_a_match() -> None:
    assert not carries({"name": "Ann Lea"}, REMOTE)
    assert not carries({"responsible_user_id": 8}, REMOTE)
    one_phone = {"custom_fields_values": [{"field_id": 1, "values": [{"value": "+7999"}]}]}
    assert not carries(one_phone, REMOTE)  # values replace the field: two remote phones differ
    assert not carries(
        {"custom_fields_values": [{"field_id": 9, "values": [{"value": "x"}]}]}, REMOTE
    )
    assert not carries({"_embedded": {"tags": [{"name": "vip"}, {"name": "new"}]}}, REMOTE)
    assert not carries({"name": "Ann Lee", "tags_to_add": [{"name": "x"}]}, REMOTE)


def test_cleared_field_matches_an_absent_field() -> None:
    assert carries({"custom_fields_values": [{"field_id": 77, "values": []}]}, REMOTE)
    assert not carries({"custom_fields_values": [{"field_id": 5, "values": []}]}, REMOTE)


def test_pairing_uses_each_remote_contact_once() -> None:
    twin = {"name": "Twin"}
    remote = [{"id": 30, "name": "Twin"}, {"id": 20, "name": "Twin"}, {"id": 25, "name": "Other"}]
    found = pair_created([twin, twin, twin], remote)
    assert {i: c["id"] for i, c in found.items()} == {0: 20, 1: 30}


def test_values_compare_as_push_compares_them() -> None:
    # the same normalisation as sync.push.conflicts: numbers, empties, booleans, enum code case
    remote = {
        "name": "Ann",
        "last_name": "",
        "custom_fields_values": [
            {"field_id": 8, "values": [{"value": 217000.0}]},
            {"field_id": 9, "values": [{"value": True}]},
            {"field_id": 1, "values": [{"value": "+7", "enum_id": 3, "enum_code": "WORK"}]},
        ],
    }
    sent = {
        "name": "Ann",
        "last_name": None,
        "custom_fields_values": [
            {"field_id": 8, "values": [{"value": "217000"}]},
            {"field_id": 9, "values": [{"value": "true"}]},
            {"field_id": 1, "values": [{"value": "+7", "enum_code": "work"}]},
        ],
    }
    assert carries(sent, remote)
    assert not carries({**sent, "name": "Anna"}, remote)


def test_an_enum_code_sent_matches_a_stand_in_that_reads_it_back_as_enum() -> None:
    sent = {
        "custom_fields_values": [{"field_id": 1, "values": [{"value": "+7", "enum_code": "MOB"}]}]
    }
    read = [{"field_id": 1, "values": [{"value": "+7", "enum_id": 3, "enum": "MOB"}]}]
    assert carries(sent, {**REMOTE, "custom_fields_values": read})
    read[0]["values"][0]["enum"] = "WORK"
    assert not carries(sent, {**REMOTE, "custom_fields_values": read})


def test_a_lost_create_is_matched_only_to_a_contact_our_own_user_made() -> None:
    sent = {"name": "Ann Lee"}
    ours, theirs = {**REMOTE, "created_by": 8000001}, {**REMOTE, "created_by": 8000002}
    assert carries(sent, theirs)  # the own user unknown: content alone, as before
    assert carries(sent, ours, own_user=8000001)
    assert not carries(sent, theirs, own_user=8000001)
    # nothing to tell it by (no created_by, or 0 for a robot): content alone
    assert carries(sent, REMOTE, own_user=8000001)
    assert carries(sent, {**REMOTE, "created_by": 0}, own_user=8000001)
    # a person's look-alike made first (a lower id) is passed over for ours
    pairs = pair_created([sent], [{**theirs, "id": 9}, {**ours, "id": 12}], own_user=8000001)
    assert pairs[0]["id"] == 12
    assert pair_created([sent], [{**theirs, "id": 9}], own_user=8000001) == {}


def _phones(*values: dict[str, Any]) -> dict[str, Any]:
    return {"custom_fields_values": [{"field_id": 1, "values": list(values)}]}


def test_an_update_reads_back_only_in_the_order_sent_a_create_in_any() -> None:
    mob, work = {"value": "+7888", "enum_code": "MOB"}, {"value": "+7999", "enum_code": "WORK"}
    assert carries(_phones(mob, work), REMOTE)  # a create: our contact whatever the order
    assert not carries(_phones(mob, work), REMOTE, ordered=True)  # a lost reorder: not applied
    assert carries(_phones(work, mob), REMOTE, ordered=True)
    a, b = {"value": "A", "enum_id": 1}, {"value": "B", "enum_id": 2}
    field = {"field_id": 7, "field_type": "multiselect", "values": [a, b]}
    interests = {**REMOTE, "custom_fields_values": [field]}
    sent = {"custom_fields_values": [{"field_id": 7, "values": [{"enum_id": 2}, {"enum_id": 1}]}]}
    assert carries(sent, interests, ordered=True)  # a set: amoCRM's order is its own


def test_an_object_value_read_back_in_another_key_order_is_carried() -> None:
    sent = {"custom_fields_values": [{"field_id": 9, "values": [{"value": {"b": 1, "a": "x"}}]}]}
    remote = {"custom_fields_values": [{"field_id": 9, "values": [{"value": {"a": "x", "b": 1}}]}]}
    assert carries(sent, remote, ordered=True)
    changed = {"custom_fields_values": [{"field_id": 9, "values": [{"value": {"a": "y", "b": 1}}]}]}
    assert not carries(sent, changed, ordered=True)
