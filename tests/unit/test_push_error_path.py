"""amoCRM's error paths told in the user's terms: `custom_fields_values.N` of the PATCH (which
also carries the fields being cleared) becomes the entry's index in the local column, or the
field itself when the edit cleared it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync.core.items import Change, PendingUpdate
from sync.push.plan import KnownFields, plan_update

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLEARED = {"field_id": 1, "values": [{"value": "a"}]}
KEPT = {"field_id": 3, "values": [{"value": "c"}]}


def _plan(column: list[dict[str, Any]]) -> Any:
    pending = PendingUpdate(42)
    base = {"custom_fields_values": [CLEARED, KEPT]}
    pending.add(Change(1, 42, "update", {"custom_fields_values": column}, base, T0, T0))
    remote = {"id": 42, "updated_at": int(T0.timestamp()), **base}
    return plan_update(pending, remote, "local_wins", fields=KnownFields({"COLOR": 2}))


def _path(plan: Any, path: str) -> str:
    (error,) = plan.user_errors([{"path": path, "detail": "no"}])
    return str(error["path"])


def test_a_patch_index_becomes_the_entrys_index_in_the_column() -> None:
    plan = _plan([{"field_code": "color", "values": [{"enum_id": 7}]}, KEPT])
    sent = [e.get("field_id") for e in plan.entity["custom_fields_values"]]
    assert sent == [1, 2]  # the cleared field first, then the one set by its code
    assert _path(plan, "custom_fields_values.1.values.0.enum_id") == (
        "custom_fields_values.0.values.0.enum_id"
    )
    assert _path(plan, "custom_fields_values.0.values") == "custom_fields_values[field_id=1].values"
    assert _path(plan, "custom_fields_values.0") == "custom_fields_values[field_id=1]"


def test_other_paths_are_left_as_amocrm_gave_them() -> None:
    plan = _plan([KEPT, {"field_id": 2, "values": [{"enum_id": 7}]}])
    for path in ("name", "", "custom_fields_values", "custom_fields_values.9.values", "x.0"):
        assert _path(plan, path) == path
