"""The shapes a local custom_fields_values may take (`sync.core.cf_shape`), and that push plans
every accepted one without an exception and refuses every other one instead of clearing
fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.core.cf_shape import ShapeError, problem
from sync.core.items import Change, PendingUpdate
from sync.push.conflicts import same, split, write_values
from sync.push.plan import plan_update, to_create_payload

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
READ_SHAPE = [  # amoCRM's GET shape, as pull stores it
    {
        "field_id": 570001,
        "field_name": "Телефон",
        "field_code": "PHONE",
        "field_type": "multitext",
        "values": [{"value": "+79990000001", "enum_id": 840001, "enum_code": "WORK"}],
    },
    {
        "field_id": 570007,
        "field_name": "Подписка",
        "field_code": None,
        "field_type": "checkbox",
        "values": [{"value": True}],
    },
    {"field_id": 570008, "field_name": "Бюджет", "field_code": None, "values": [{"value": 5.5}]},
]

ACCEPTED = {
    "NULL": None,
    "empty array": [],
    "amoCRM's read shape": READ_SHAPE,
    "values null clears": [{"field_id": 1, "values": None}],
    "values [] clears": [{"field_id": 1, "values": []}],
    "field_code only": [{"field_code": "PHONE", "values": [{"value": "+7", "enum_code": "MOB"}]}],
    "enum_id only": [{"field_id": 4, "values": [{"enum_id": 840021}]}],
    "enum, a stand-in's read form of enum_code": [
        {"field_id": 570001, "values": [{"value": "+7", "enum_id": 840001, "enum": "WORK"}]}
    ],
    "enum alone": [{"field_code": "PHONE", "values": [{"value": "+7", "enum": "MOB"}]}],
    "integral float id": [{"field_id": 570003.0, "values": [{"value": "CTO"}]}],
    "ids at bigint's maximum": [{"field_id": 2**63 - 1, "values": [{"enum_id": 2**63 - 1}]}],
    "an object value (legal_entity, linked_entity, file)": [
        {"field_id": 1, "values": [{"value": {"name": "OOO", "vat_id": "77", "n": [1e299]}}]}
    ],
    "large numbers": [
        {"field_id": 1, "field_name": 1e299, "values": [{"value": 10**30}, {"value": -1e299}]}
    ],
}

REFUSED = {
    "object instead of array": (
        {"field_id": 570003, "values": [{"value": "CTO"}]},
        "custom_fields_values: must be a JSON array of fields or NULL, got object",
    ),
    "JSON string": (
        "CTO",
        "custom_fields_values: must be a JSON array of fields or NULL, got string",
    ),
    "JSON number": (42, "custom_fields_values: must be a JSON array of fields or NULL, got number"),
    "entry not an object": (
        [{"field_id": 1, "values": None}, 5],
        "custom_fields_values[1]: must be an object with field_id or field_code and values, "
        "got number",
    ),
    "no field reference": (
        [{"values": [{"value": "x"}]}],
        "custom_fields_values[0]: needs field_id or field_code",
    ),
    "field_id not an integer": (
        [{"field_id": "abc", "values": None}],
        'custom_fields_values[0].field_id: must be an integer, got "abc"',
    ),
    "field_id a digit string": (
        [{"field_id": "570003", "values": None}],
        'custom_fields_values[0].field_id: must be an integer, got "570003"',
    ),
    "field_id negative": (
        [{"field_id": -3, "values": None}],
        "custom_fields_values[0].field_id: must be above 0, got -3",
    ),
    "field_id above bigint": (
        [{"field_id": 2**63, "values": None}],
        "custom_fields_values[0].field_id: must be at most 9223372036854775807, "
        "got 9223372036854775808",
    ),
    "field_id boolean": (
        [{"field_id": True, "values": None}],
        "custom_fields_values[0].field_id: must be an integer, got true",
    ),
    "field_code empty": (
        [{"field_code": " ", "values": None}],
        'custom_fields_values[0].field_code: must be a non-empty string, got " "',
    ),
    "values missing": (
        [{"field_id": 1}],
        "custom_fields_values[0].values: missing; write null or [] to clear the field",
    ),
    "values a number": (
        [{"field_id": 1, "values": None}, {"field_id": 2, "values": 5}],
        "custom_fields_values[1].values: must be an array of values or null, got number",
    ),
    "values an object": (
        [{"field_id": 1, "values": {"value": "x"}}],
        "custom_fields_values[0].values: must be an array of values or null, got object",
    ),
    "value item a scalar": (
        [{"field_id": 1, "values": ["CTO"]}],
        "custom_fields_values[0].values[0]: must be an object with value, enum_id or enum_code, "
        "got string",
    ),
    "value item empty": (
        [{"field_id": 1, "values": [{"value": None}]}],
        "custom_fields_values[0].values[0]: needs value, enum_id or enum_code",
    ),
    "value item unknown key": (
        [{"field_id": 1, "values": [{"value": "x", "subtype": "y"}]}],
        'custom_fields_values[0].values[0]: unexpected key "subtype" (a value has value, '
        "enum_id, enum_code)",
    ),
    "nested array value": (
        [{"field_id": 1, "values": [{"value": [1]}]}],
        "custom_fields_values[0].values[0].value: must be a string, number, boolean or object "
        "(legal_entity, linked_entity, file: amoCRM's own shape), got array",
    ),
    "huge number inside an object value": (
        [{"field_id": 1, "values": [{"value": {"name": "x", "file_size": [10**300]}}]}],
        "custom_fields_values[0].values[0].value: holds a number of magnitude 1e300 or more",
    ),
    "enum_id not an integer": (
        [{"field_id": 1, "values": [{"enum_id": "WORK"}]}],
        'custom_fields_values[0].values[0].enum_id: must be an integer, got "WORK"',
    ),
    "enum_id above bigint": (
        [{"field_id": 1, "values": [{"enum_id": 10**19}]}],
        "custom_fields_values[0].values[0].enum_id: must be at most 9223372036854775807, "
        "got 10000000000000000000",
    ),
    "value of 1e300": (
        [{"field_id": 1, "values": [{"value": 10**300}]}],
        "custom_fields_values[0].values[0].value: must be a number below 1e300 in magnitude, "
        "got 1000000000000000000000000000000000000000…",
    ),
    "value of -1e301": (
        [{"field_id": 1, "values": [{"value": "x"}, {"value": -(10**301)}]}],
        "custom_fields_values[0].values[1].value: must be a number below 1e300 in magnitude, "
        "got -100000000000000000000000000000000000000…",
    ),
    "huge number outside values": (
        [{"field_id": 1, "field_name": {"a": [1, -(10**300)]}, "values": None}],
        "custom_fields_values[0]: holds a number of magnitude 1e300 or more (outside values)",
    ),
    "enum_code a number": (
        [{"field_id": 1, "values": [{"value": "x", "enum_code": 3}]}],
        "custom_fields_values[0].values[0].enum_code: must be a non-empty string, got 3",
    ),
    "enum a number": (
        [{"field_id": 1, "values": [{"value": "x", "enum": 3}]}],
        "custom_fields_values[0].values[0].enum: must be a non-empty string, got 3",
    ),
    "duplicate field_id": (
        [{"field_id": 1, "values": None}, {"field_id": 1, "values": []}],
        "custom_fields_values[1]: field 1 appears twice (also at [0])",
    ),
    "duplicate field_code": (
        [{"field_code": "PHONE", "values": None}, {"field_code": "phone", "values": []}],
        "custom_fields_values[1]: field PHONE appears twice (also at [0])",
    ),
    "code and id of one field": (
        [
            {"field_id": 7, "field_code": "PHONE", "values": None},
            {"field_code": "PHONE", "values": []},
        ],
        "custom_fields_values[1]: field 7 appears twice (also at [0])",
    ),
}


def pending(local: Any, base: Any = READ_SHAPE) -> PendingUpdate:
    update = PendingUpdate(10)
    columns = {"custom_fields_values": local}
    update.add(Change(1, 10, "update", columns, {"custom_fields_values": base}, T0, T0))
    return update


REMOTE = {"id": 10, "updated_at": int(T0.timestamp()), "custom_fields_values": READ_SHAPE}


@pytest.mark.parametrize("column", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_shapes_have_no_problem_and_plan(column: Any) -> None:
    assert problem(column) is None
    plan_update(pending(column), REMOTE, "local_wins")
    to_create_payload(-1, {"name": "N", "custom_fields_values": column})


@pytest.mark.parametrize(("column", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_shapes_name_the_path_and_never_plan(column: Any, message: str) -> None:
    assert problem(column) == message
    with pytest.raises(ShapeError) as refused:
        plan_update(pending(column), REMOTE, "local_wins")
    assert str(refused.value) == message
    with pytest.raises(ShapeError):
        to_create_payload(-1, {"name": "N", "custom_fields_values": column})


@pytest.mark.parametrize("column", [{"field_id": 1}, "[]", 42, 0, ""])
def test_split_never_reads_an_unexpected_column_as_no_fields(column: Any) -> None:
    with pytest.raises(ShapeError):
        split({"custom_fields_values": column})


@pytest.mark.parametrize("values", [5, "x", {"value": "x"}, 0, "", [5], [{}], [{"value": None}]])
def test_write_values_never_turns_an_unexpected_shape_into_null(values: Any) -> None:
    with pytest.raises(ShapeError):
        write_values(values)


def test_only_null_and_empty_clear() -> None:
    assert write_values(None) is None
    assert write_values([]) is None


# --- properties ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False)
    | (st.text(max_size=5))
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
value_items = st.fixed_dictionaries(
    {},
    optional={
        "value": scalars | json_values,
        "enum_id": st.integers(-1, 5) | st.text(max_size=2) | st.none(),
        "enum_code": st.sampled_from(["WORK", "", None, 3]),
        "enum": st.sampled_from(["MOB", "", None, 3]),
    },
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "field_id": st.integers(-1, 6) | st.sampled_from(["abc", "3", 2.0, 2.5, True, None]),
        "field_code": st.sampled_from(["PHONE", "email", "", None, 7]),
        "field_name": st.text(max_size=3),
        "values": st.none() | st.lists(value_items | scalars, max_size=3) | scalars,
    },
)
columns = st.none() | st.lists(entries | scalars, max_size=4) | entries | json_values


@settings(max_examples=400, deadline=None)
@given(local=columns, base=columns)
def test_whatever_the_validator_accepts_plans_and_the_rest_is_refused(
    local: Any, base: Any
) -> None:
    accepted = problem(local) is None
    try:
        plan = plan_update(
            pending(local, base if problem(base) is None else None), REMOTE, "local_wins"
        )
        payload = to_create_payload(-1, {"name": "N", "custom_fields_values": local})
    except ShapeError:
        assert not accepted
        return
    assert accepted
    sent = (plan.entity or {}).get("custom_fields_values") or []
    assert all(isinstance(e["values"], list) or e["values"] is None for e in sent)
    assert all(e["values"] for e in payload.get("custom_fields_values", []))


LEGAL = {"field_id": 570099, "values": [{"value": {"name": "OOO Romashka", "vat_id": "77"}}]}


def test_an_object_value_amocrm_gave_is_sent_only_when_changed() -> None:
    base = [*READ_SHAPE, LEGAL]
    edited = [{**READ_SHAPE[0], "values": [{"value": "+79990000002"}]}, *READ_SHAPE[1:], LEGAL]
    assert problem(edited, base) is None
    remote = {**REMOTE, "custom_fields_values": base}
    plan = plan_update(pending(edited, base), remote, "local_wins")
    assert plan.entity is not None
    assert plan.entity["custom_fields_values"] == [
        {"field_id": 570001, "values": [{"value": "+79990000002"}]}
    ]  # the legal entity is not sent: unchanged
    lutik = {"name": "OOO Lutik", "vat_id": "77"}
    changed = [*READ_SHAPE, {**LEGAL, "values": [{"value": lutik}]}]
    assert problem(changed, base) is None  # amoCRM's own shape: amoCRM judges it at push
    plan = plan_update(pending(changed, base), remote, "local_wins")
    assert plan.entity is not None
    assert plan.entity["custom_fields_values"] == [
        {"field_id": 570099, "values": [{"value": lutik}]}
    ]


# --- `enum`, a stand-in's read form of `enum_code` ------------------------------------------------

AS_READ = [{"field_id": 570001, "field_code": "PHONE",
            "values": [{"value": "+79990000001", "enum_id": 840001, "enum": "WORK"}]}]  # fmt: skip


def test_enum_goes_out_as_enum_code_and_matches_it() -> None:
    assert write_values([{"value": "+7", "enum": "MOB"}]) == [{"value": "+7", "enum_code": "MOB"}]
    assert write_values([{"value": "+7", "enum_id": 1, "enum": "MOB"}]) == [
        {"value": "+7", "enum_id": 1}
    ]
    assert same([{"value": "+7", "enum": "WORK"}], [{"value": "+7", "enum_code": "work"}])
    assert not same([{"value": "+7", "enum": "WORK"}], [{"value": "+7", "enum_code": "MOB"}])


def test_a_phone_pulled_with_enum_is_edited_sent_as_enum_code_and_then_settled() -> None:
    edited = [{**AS_READ[0], "values": [{"value": "+79990000002", "enum": "MOB"}]}]
    remote = {**REMOTE, "custom_fields_values": AS_READ}
    plan = plan_update(pending(edited, AS_READ), remote, "local_wins")
    assert plan.entity is not None
    assert plan.entity["custom_fields_values"] == [
        {"field_id": 570001, "values": [{"value": "+79990000002", "enum_code": "MOB"}]}
    ]
    # amoCRM now shows the sent value in its read form: the same edit again sends nothing
    echoed = [{**AS_READ[0], "values": [{"value": "+79990000002", "enum_id": 840002,
                                         "enum": "MOB"}]}]  # fmt: skip
    again = plan_update(pending(edited, AS_READ), {**REMOTE, "custom_fields_values": echoed},
                        "local_wins")  # fmt: skip
    assert again.entity is None
