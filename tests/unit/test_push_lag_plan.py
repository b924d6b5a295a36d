"""Pure parts of push under amoCRM's lag (issue 11, item 4): a value the outbox chain itself had
is not a remote change (`sync.push.conflicts`), and which plans must be re-read where amoCRM cannot
lag (`sync.push.plan`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from sync.core.items import Change, PendingUpdate
from sync.push.conflicts import FieldEdit, Resolution, resolve
from sync.push.plan import plan_update

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=30)


def _unix(at: datetime) -> int:
    return int(at.timestamp())


def chain(column: str, *values: Any, base_at: datetime = T0) -> PendingUpdate:
    """An outbox chain: the column went values[0] → values[1] → … (one sync_changes row each)."""
    p = PendingUpdate(42)
    for n, (before, after) in enumerate(pairwise(values), 1):
        p.add(Change(n, 42, "update", {column: after}, {column: before}, base_at, T0))
    return p


def phone(number: str) -> list[dict[str, Any]]:
    return [{"field_id": 1, "field_code": "PHONE", "values": [{"value": number}]}]


# --- resolve: own values -------------------------------------------------------------------


def test_an_earlier_local_value_in_amocrm_is_ours_not_a_remote_change() -> None:
    edit = FieldEdit("name", "A", "C", T0, own=("B",))
    merge = resolve([edit], {"name": "B"}, T1, "manual")
    assert (merge.send, merge.conflicts, merge.held) == ({"name": "C"}, (), frozenset())


def test_own_values_do_not_blind_conflict_detection() -> None:
    edit = FieldEdit("name", "A", "C", T0, own=("B",))
    merge = resolve([edit], {"name": "R"}, T1, "manual")
    assert merge.held == {"name"}
    assert merge.conflicts[0].remote == "R"


def test_own_values_do_not_override_a_conflict_on_record() -> None:
    edit = FieldEdit("name", "A", "C", T0, own=("B",))
    merge = resolve([edit], {"name": "B"}, T1, "manual", on_record={"name": Resolution(7, None)})
    assert merge.held == {"name"}


# --- plan_update: chains ---------------------------------------------------------------------


def test_pending_update_keeps_every_value_of_the_chain() -> None:
    p = chain("name", "A", "B", "C")
    assert (p.base, p.local, p.values) == ({"name": "A"}, {"name": "C"}, {"name": ["B", "C"]})
    assert p.earlier_values("name") == ["B"]


def test_plan_sends_the_latest_value_over_our_own_write_in_flight() -> None:
    remote = {"id": 42, "name": "B", "updated_at": _unix(T1)}
    plan = plan_update(chain("name", "A", "B", "C"), remote, "manual")
    assert plan.entity == {"id": 42, "request_id": "42", "name": "C"}
    assert plan.merge.conflicts == ()
    assert not plan.doubtful


def test_plan_treats_an_earlier_custom_field_value_as_ours() -> None:
    p = chain("custom_fields_values", phone("+1"), phone("+2"), phone("+3"))
    remote = {"id": 42, "updated_at": _unix(T1), "custom_fields_values": phone("+2")}
    plan = plan_update(p, remote, "manual")
    assert plan.entity == {
        "id": 42,
        "request_id": "42",
        "custom_fields_values": [{"field_id": 1, "values": [{"value": "+3"}]}],
    }
    assert plan.merge.conflicts == ()


# --- plan_update: which reads are doubtful ------------------------------------------------------


def test_a_version_older_than_the_base_is_stale_and_merges_nothing() -> None:
    p = chain("name", "A", "B", base_at=T1)
    plan = plan_update(p, {"id": 42, "name": "old", "updated_at": _unix(T0)}, "manual")
    assert plan.stale
    assert plan.doubtful
    assert (plan.entity, plan.merge.conflicts) == (None, ())


def test_a_version_older_than_the_row_s_updated_at_is_stale() -> None:
    p = chain("name", "A", "B")
    p.known_updated_at = T1  # e.g. our last PATCH's answer after a merge, or a pull's
    plan = plan_update(p, {"id": 42, "name": "A", "updated_at": _unix(T0)}, "manual")
    assert plan.stale


def test_the_same_second_as_the_base_is_not_stale() -> None:
    plan = plan_update(chain("name", "A", "B"), {"id": 42, "name": "A", "updated_at": _unix(T0)},
                       "manual")  # fmt: skip
    assert not plan.stale
    assert not plan.doubtful
    assert plan.entity == {"id": 42, "request_id": "42", "name": "B"}


def test_a_new_conflict_or_a_missing_contact_is_doubtful_a_recorded_one_is_not() -> None:
    p = chain("name", "A", "B")
    remote = {"id": 42, "name": "R", "updated_at": _unix(T1)}
    assert plan_update(p, remote, "newest_wins").doubtful
    assert plan_update(p, None, "manual").doubtful
    p.open_conflicts["name"] = (7, None)
    assert not plan_update(p, remote, "manual").doubtful


# --- a chain set back to its base (A → B → A) -----------------------------------------------


def test_a_round_trip_undoes_our_own_write_in_flight() -> None:
    remote = {"id": 42, "name": "B", "updated_at": _unix(T1)}
    plan = plan_update(chain("name", "A", "B", "A"), remote, "manual")
    assert plan.entity == {"id": 42, "request_id": "42", "name": "A"}
    assert plan.merge.conflicts == ()


@pytest.mark.parametrize("theirs", ["A", "R"])
def test_a_round_trip_sends_nothing_otherwise(theirs: str) -> None:
    remote = {"id": 42, "name": theirs, "updated_at": _unix(T1)}
    plan = plan_update(chain("name", "A", "B", "A"), remote, "manual")
    assert (plan.entity, plan.merge.conflicts, plan.merge.held) == (None, (), frozenset())
    assert plan.outcome().done_columns == {"name"}


def test_a_custom_field_round_trip_undoes_our_own_write_in_flight() -> None:
    p = chain("custom_fields_values", phone("+1"), phone("+2"), phone("+1"))
    remote = {"id": 42, "updated_at": _unix(T1), "custom_fields_values": phone("+2")}
    plan = plan_update(p, remote, "manual")
    assert plan.entity == {
        "id": 42,
        "request_id": "42",
        "custom_fields_values": [{"field_id": 1, "values": [{"value": "+1"}]}],
    }
