"""Conflicts as text for `amosync conflicts list`. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH = 40


def render_conflicts(rows: Sequence[Mapping[str, Any]], *, include_resolved: bool) -> str:
    if not rows:
        return "no conflicts" if include_resolved else "no conflicts waiting"
    lines = []
    for row in rows:
        state = row["winner"] or "waiting"
        if row["resolved_at"] is not None:
            # no winner yet closed: both sides came to hold the same value, nobody had to choose
            state = f"{row['winner']}, applied" if row["winner"] else "agreed, closed"
            state += f" {row['resolved_at']:%Y-%m-%d %H:%M:%S}"
        lines.append(
            f"#{row['id']} contact {row['contact_id']} {row['field']} [{row['policy']}: {state}]"
        )
        lines.append(f"    base   {_show(row['base_value'])}")
        local, remote = _show(row["local_value"]), _show(row["remote_value"])
        lines.append(f"    local  {local}  (edited {row['local_changed_at']})")
        lines.append(f"    remote {remote}  (amoCRM {row['remote_updated_at']})")
    if not include_resolved:
        lines.append("settle one with: amosync conflicts resolve ID --keep local|remote")
    return "\n".join(lines)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= WIDTH * 2 else text[: WIDTH * 2 - 3] + "..."
