"""`amosync conflicts list`: what happened to each conflict, in words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync.push.conflict_view import render_conflicts

AT = datetime(2026, 12, 7, 12, 0, 5, tzinfo=UTC)


def _row(winner: str | None, resolved_at: datetime | None) -> dict[str, Any]:
    return {"id": 1, "contact_id": 7, "field": "name", "policy": "manual", "winner": winner,
            "resolved_at": resolved_at, "base_value": "a", "local_value": "b",
            "remote_value": "b", "local_changed_at": AT, "remote_updated_at": AT}  # fmt: skip


def test_states_of_a_conflict() -> None:
    def head(row: dict[str, Any]) -> str:
        return render_conflicts([row], include_resolved=True).splitlines()[0]

    assert head(_row(None, None)) == "#1 contact 7 name [manual: waiting]"
    assert (
        head(_row("local", AT)) == "#1 contact 7 name [manual: local, applied 2026-12-07 12:00:05]"
    )
    # closed with no winner: the two sides came to agree, nobody chose
    assert head(_row(None, AT)) == "#1 contact 7 name [manual: agreed, closed 2026-12-07 12:00:05]"
