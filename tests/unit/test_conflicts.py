"""The pure three-way merge (`sync.push.conflicts`) and push's entity planning
(`sync.push.plan`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sync.core.items import Change, PendingUpdate
from sync.core.mapping import FieldDef
from sync.push.conflicts import (
    FieldEdit,
    Resolution,
    changed_fields,
    decide_winner,
    field_codes,
    policies_by_field,
    resolve,
    same,
    split,
    write_values,
)
from sync.push.plan import KnownFields, plan_update, to_create_payload

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=30)


def edit(field: str, base: Any, local: Any, at: datetime = T0) -> FieldEdit:
    return FieldEdit(field, base, local, at)


# --- resolve: the decision table --------------------------------------------------------------


def test_remote_unchanged_sends_the_local_value() -> None:
    merge = resolve([edit("name", "A", "B")], {"name": "A"}, T0, "manual")
    assert merge.send == {"name": "B"}
    assert merge.settled == {"name"}
    assert merge.conflicts == ()


def test_remote_already_equal_sends_nothing() -> None:
    merge = resolve([edit("name", "A", "B")], {"name": "B"}, LATER, "manual")
    assert merge.send == {}
    assert merge.settled == {"name"}
    assert merge.conflicts == ()


def test_disjoint_edits_send_only_the_local_field() -> None:
    merge = resolve([edit("name", "A", "B")], {"name": "A", "last_name": "Z"}, LATER, "manual")
    assert merge.send == {"name": "B"}
    assert merge.take_remote == {}


@pytest.mark.parametrize(
    ("policy", "local_at", "winner"),
    [
        ("local_wins", T0, "local"),
        ("remote_wins", LATER + timedelta(hours=1), "remote"),
        ("newest_wins", T0, "remote"),  # amoCRM's edit (LATER) is newer
        ("newest_wins", LATER + timedelta(seconds=1), "local"),
        ("newest_wins", LATER, "remote"),  # a tie goes to amoCRM
        ("manual", T0, None),
    ],
)
def test_same_field_conflict_follows_the_policy(
    policy: str, local_at: datetime, winner: str | None
) -> None:
    merge = resolve([edit("name", "A", "B", local_at)], {"name": "C"}, LATER, policy)
    (conflict,) = merge.conflicts
    assert (conflict.base, conflict.local, conflict.remote) == ("A", "B", "C")
    assert (conflict.policy, conflict.winner) == (policy, winner)
    if winner == "local":
        assert merge.send == {"name": "B"}
    elif winner == "remote":
        assert merge.take_remote == {"name": "C"}
        assert merge.send == {}
    else:
        assert merge.held == {"name"}
        assert merge.settled == frozenset()


def test_per_field_policy_overrides() -> None:
    edits = [edit("name", "A", "B"), edit("cf:5", [{"value": "x"}], [{"value": "y"}])]
    remote = {"name": "C", "cf:5": [{"value": "z"}]}
    merge = resolve(
        edits,
        remote,
        LATER,
        "remote_wins",
        field_policies={"name": "local_wins", "custom_fields_values": "manual"},
    )
    assert merge.send == {"name": "B"}
    assert merge.held == {"cf:5"}


def test_a_recorded_conflict_applies_the_persons_choice_or_keeps_waiting() -> None:
    edits = [edit("name", "A", "B")]
    waiting = resolve(edits, {"name": "C"}, LATER, "newest_wins",
                      on_record={"name": Resolution(7, None)})  # fmt: skip
    assert waiting.held == {"name"}
    assert waiting.conflicts[0].conflict_id == 7
    chosen = resolve(
        edits, {"name": "C"}, LATER, "manual", on_record={"name": Resolution(7, "local")}
    )
    assert chosen.send == {"name": "B"}
    assert chosen.conflicts[0].winner == "local"


@pytest.mark.parametrize(
    ("local_at", "winner"),
    [
        (LATER, "remote"),  # the same instant
        (LATER + timedelta(microseconds=1), "remote"),  # same second: a tie, amoCRM wins
        (LATER + timedelta(microseconds=999_999), "remote"),
        (LATER + timedelta(seconds=1), "local"),  # the next whole second
        (LATER - timedelta(microseconds=1), "remote"),
    ],
)
def test_newest_wins_compares_whole_seconds_and_a_tie_goes_to_amocrm(
    local_at: datetime, winner: str
) -> None:
    assert decide_winner("newest_wins", local_at, LATER) == winner
    # amoCRM's second is whole; a local time with microseconds in a UTC+3 zone is the same instant
    msk = timezone(timedelta(hours=3))
    assert decide_winner("newest_wins", local_at.astimezone(msk), LATER) == winner


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown conflict policy"):
        decide_winner("first_wins", T0, T0)


# --- comparing values ---------------------------------------------------------------------------


def test_values_compare_as_amocrm_means_them() -> None:
    assert same(5, "5")
    assert same(None, "")
    assert same(True, "true")
    assert not same("a", "b")
    read = [{"value": "+7999", "enum_id": 11, "enum_code": "WORK"}, {"value": "+7888"}]
    written = [{"value": "+7999", "enum_code": "work"}, {"value": "+7888"}]
    assert same(read, written)
    assert not same(read, written[:1])
    # order counts (the first phone is the main one), except for a set of options
    assert not same(read, written[::-1])
    assert same(read, written[::-1], ordered=False)
    assert same(None, [])
    assert not same([{"value": "1"}], [{"value": "2"}])


scalars = st.one_of(st.none(), st.text(max_size=5), st.integers(-3, 3), st.booleans())


# The oracle: amoCRM's meaning of a scalar and the three-way merge, written out here from the
# decision table (docs/push.md) without `sync.push.conflicts` or `sync.core.values`.


def shown(value: Any) -> str:
    """What amoCRM shows for a scalar: checkboxes as true/false, numbers as digits, text without
    surrounding blanks; null, "" and blanks all show as nothing."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value).strip()


def expected_merge(
    base: Any, local: Any, remote: Any, policy: str, local_is_newer: bool
) -> tuple[dict[str, Any], dict[str, Any], set[str], set[str], list[str | None]]:
    """(send, take_remote, settled, held, conflict winners) for one edited field `name`."""
    if shown(local) == shown(remote):  # amoCRM already has it
        return {}, {}, {"name"}, set(), []
    if shown(base) == shown(remote):  # only we changed it
        return {"name": local}, {}, {"name"}, set(), []
    winner = {
        "local_wins": "local",
        "remote_wins": "remote",
        "newest_wins": "local" if local_is_newer else "remote",  # a tie goes to amoCRM
        "manual": None,
    }[policy]
    if winner is None:
        return {}, {}, set(), {"name"}, [None]
    if winner == "local":
        return {"name": local}, {}, {"name"}, set(), ["local"]
    return {}, {"name": remote}, {"name"}, set(), ["remote"]


@given(scalars, scalars, scalars, st.booleans())
@example(None, " ", None, False)  # blank text is cleared text
@example("1", 1, " 1", True)
@example(True, "true", False, False)
def test_merge_rules_hold_for_any_values(
    base: Any, local: Any, remote: Any, local_is_newer: bool
) -> None:
    local_at = LATER + timedelta(seconds=1) if local_is_newer else LATER
    for policy in ("newest_wins", "remote_wins", "local_wins", "manual"):
        merge = resolve([edit("name", base, local, local_at)], {"name": remote}, LATER, policy)
        actual = (
            merge.send,
            merge.take_remote,
            set(merge.settled),
            set(merge.held),
            [c.winner for c in merge.conflicts],
        )
        assert actual == expected_merge(base, local, remote, policy, local_is_newer), policy
        for conflict in merge.conflicts:
            assert (conflict.base, conflict.local, conflict.remote) == (base, local, remote)


# --- custom fields --------------------------------------------------------------------------------

PHONE = {"field_id": 1, "field_code": "PHONE", "values": [{"value": "+1", "enum_code": "WORK"}]}
COLOR = {"field_id": 2, "field_code": None, "values": [{"value": "Red", "enum_id": 9}]}


def test_custom_fields_split_per_field_and_codes_resolve_to_ids() -> None:
    codes = field_codes([PHONE, COLOR])
    assert codes == {"PHONE": 1}
    assert split({"name": "N", "custom_fields_values": [PHONE, COLOR]}) == {
        "name": "N",
        "cf:1": PHONE["values"],
        "cf:2": COLOR["values"],
    }
    local = [{"field_code": "PHONE", "values": [{"value": "+2"}]}, COLOR]
    changed = changed_fields(
        {"custom_fields_values": [PHONE, COLOR]}, {"custom_fields_values": local}, codes
    )
    assert changed == {"cf:1": (PHONE["values"], [{"value": "+2"}])}


def test_a_removed_custom_field_is_cleared_with_null() -> None:
    changed = changed_fields(
        {"custom_fields_values": [PHONE, COLOR]}, {"custom_fields_values": [PHONE]}, {}
    )
    assert changed == {"cf:2": (COLOR["values"], None)}
    assert write_values(None) is None
    assert write_values([{"value": "Red", "enum_id": 9, "enum_code": None}]) == [
        {"value": "Red", "enum_id": 9}
    ]
    assert write_values([{"value": "+1", "enum_code": "WORK"}]) == [
        {"value": "+1", "enum_code": "WORK"}
    ]


# --- push.plan: entities --------------------------------------------------------------------------


def pending(new: dict[str, Any], base: dict[str, Any]) -> PendingUpdate:
    p = PendingUpdate(42)
    p.add(Change(1, 42, "update", new, base, T0, T0))
    return p


def test_plan_sends_only_changed_writable_fields_never_updated_at() -> None:
    remote = {"id": 42, "name": "A", "updated_at": int(T0.timestamp()), "created_by": 999,
              "custom_fields_values": [PHONE, COLOR]}  # fmt: skip
    local_cf = [PHONE, {"field_id": 2, "values": [{"enum_id": 10}]}]
    plan = plan_update(
        pending({"name": "B", "custom_fields_values": local_cf},
                {"name": "A", "custom_fields_values": [PHONE, COLOR]}),
        remote,
        "manual",
    )  # fmt: skip
    assert plan.entity == {
        "id": 42,
        "request_id": "42",
        "name": "B",
        "custom_fields_values": [{"field_id": 2, "values": [{"enum_id": 10}]}],
    }
    outcome = plan.outcome(int(LATER.timestamp()))
    assert outcome.updated_at == LATER  # amoCRM was unchanged since the base
    assert outcome.done_columns == {"name", "custom_fields_values"}
    assert outcome.sent


def test_plan_for_a_merged_contact_leaves_updated_at_to_pull() -> None:
    remote = {"id": 42, "name": "A", "last_name": "new", "updated_at": int(LATER.timestamp())}
    plan = plan_update(pending({"first_name": "F"}, {"first_name": None}), remote, "manual")
    assert plan.entity == {"id": 42, "request_id": "42", "first_name": "F"}
    assert plan.outcome(int(LATER.timestamp()) + 5).updated_at is None


def test_plan_for_a_missing_contact_is_an_error() -> None:
    outcome = plan_update(pending({"name": "B"}, {"name": "A"}), None, "manual").outcome()
    assert outcome.error is not None
    assert "not found" in outcome.error


def test_create_payload_is_write_shaped() -> None:
    values = {"name": "N", "first_name": None,
              "custom_fields_values": [PHONE, {"field_id": 3, "values": []}]}  # fmt: skip
    payload = to_create_payload(-3, values)
    assert payload == {
        "name": "N",
        "custom_fields_values": [{"field_id": 1, "values": [{"value": "+1", "enum_code": "WORK"}]}],
        "request_id": "-3",
    }


# --- field codes, order of values (audit of push) ---------------------------------------------

POSITION = {"field_id": 570003, "field_code": "POSITION", "field_type": "text"}
PHONES = {"field_id": 570001, "field_code": "PHONE", "field_type": "multitext"}
INTERESTS = {"field_id": 570005, "field_code": None, "field_type": "multiselect"}


def cf(field: dict[str, Any], *values: Any) -> dict[str, Any]:
    return {**field, "values": [v if isinstance(v, dict) else {"value": v} for v in values]}


def remote_of(*fields: dict[str, Any], at: datetime = LATER) -> dict[str, Any]:
    return {"id": 42, "updated_at": int(at.timestamp()), "custom_fields_values": list(fields)}


@pytest.mark.parametrize("override", ["cf:POSITION", "cf:position", "cf:570003"])
def test_a_custom_field_override_by_code_or_id_settles_its_conflict(override: str) -> None:
    p = pending({"custom_fields_values": [cf(POSITION, "local")]},
                {"custom_fields_values": [cf(POSITION, "base")]})  # fmt: skip
    remote = remote_of(cf(POSITION, "theirs"))
    plan = plan_update(p, remote, "local_wins", {override: "remote_wins"})
    (conflict,) = plan.merge.conflicts
    assert (conflict.field, conflict.policy, conflict.winner) == ("cf:570003", "remote_wins",
                                                                   "remote")  # fmt: skip
    assert plan.entity is None
    assert plan.write == {"custom_fields_values": [cf(POSITION, "theirs")]}


def test_a_code_override_is_found_through_the_cached_definitions() -> None:
    """The code is in no array (written by id locally, cleared in amoCRM): the definitions that
    pull cached name it."""
    by_id = {"field_id": 570003}
    p = pending({"custom_fields_values": [cf(by_id, "local")]},
                {"custom_fields_values": [cf(by_id, "base")]})  # fmt: skip
    known = KnownFields.of([FieldDef(570003, "Position", "POSITION", "text")])
    plan = plan_update(p, remote_of(), "local_wins", {"cf:Position": "remote_wins"}, known)
    assert [(c.policy, c.winner) for c in plan.merge.conflicts] == [("remote_wins", "remote")]
    without = plan_update(p, remote_of(), "local_wins", {"cf:Position": "remote_wins"})
    assert [(c.policy, c.winner) for c in without.merge.conflicts] == [("local_wins", "local")]


def test_an_id_override_wins_over_a_code_override_of_the_same_field() -> None:
    policies = policies_by_field({"cf:570003": "manual", "cf:POSITION": "remote_wins",
                                  "cf:unknown": "local_wins", "name": "manual"},
                                 {"POSITION": 570003})  # fmt: skip
    assert policies == {"cf:570003": "manual", "cf:UNKNOWN": "local_wins", "name": "manual"}


def test_reordering_a_multitext_is_sent_and_a_multiselect_order_is_not_a_change() -> None:
    main, other = {"value": "+7111", "enum_code": "WORK"}, {"value": "+7222", "enum_code": "MOB"}
    p = pending({"custom_fields_values": [cf(PHONES, other, main)]},
                {"custom_fields_values": [cf(PHONES, main, other)]})  # fmt: skip
    plan = plan_update(p, remote_of(cf(PHONES, main, other), at=T0), "manual")
    assert plan.entity is not None
    assert plan.entity["custom_fields_values"] == [{"field_id": 570001, "values": [other, main]}]
    # amoCRM already shows the new order: nothing to send
    done = plan_update(p, remote_of(cf(PHONES, other, main)), "manual")
    assert (done.entity, done.merge.conflicts) == (None, ())
    # amoCRM reordered it the other way meanwhile (three values): a conflict, not "equal"
    third = {"value": "+7333"}
    both = pending({"custom_fields_values": [cf(PHONES, other, main, third)]},
                   {"custom_fields_values": [cf(PHONES, main, other, third)]})  # fmt: skip
    clash = plan_update(both, remote_of(cf(PHONES, third, main, other)), "manual")
    assert clash.merge.held == {"cf:570001"}
    # a multiselect is a set: amoCRM's order is no change, a local reorder is no edit
    a, b = {"value": "CRM", "enum_id": 840031}, {"value": "BI", "enum_id": 840032}
    sets = pending({"custom_fields_values": [cf(INTERESTS, b, a)]},
                   {"custom_fields_values": [cf(INTERESTS, a, b)]})  # fmt: skip
    same_set = plan_update(sets, remote_of(cf(INTERESTS, b, a)), "manual")
    assert (same_set.entity, same_set.merge.conflicts) == (None, ())
    assert plan_update(sets, remote_of(cf(INTERESTS, a, b)), "manual").entity is None
    # ... known as a set from the cached definitions when no array says its type
    bare = {"field_id": 570005}
    untyped = pending({"custom_fields_values": [cf(bare, b, a)]},
                      {"custom_fields_values": [cf(bare, a, b)]})  # fmt: skip
    known = KnownFields.of([FieldDef(570005, "Interests", None, "multiselect")])
    assert plan_update(untyped, remote_of(cf(bare, a, b)), "manual", None, known).entity is None
    assert plan_update(untyped, remote_of(cf(bare, a, b)), "manual").entity is not None


def test_create_and_update_name_a_field_code_alike() -> None:
    entry = {"field_code": "email", "values": [{"value": "a@b.c", "enum_code": "WORK"}]}
    created = to_create_payload(-1, {"name": "N", "custom_fields_values": [entry]})
    update = plan_update(
        pending({"custom_fields_values": [entry]}, {"custom_fields_values": None}),
        remote_of(at=T0),
        "manual",
    )
    assert update.entity is not None
    assert (
        created["custom_fields_values"]
        == update.entity["custom_fields_values"]
        == [{"field_code": "EMAIL", "values": [{"value": "a@b.c", "enum_code": "WORK"}]}]
    )
