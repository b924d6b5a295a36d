"""The daemon's halt, told to the other commands: a `sync_state` row (`HALTED_KEY`).

After a 403 IP block the leader stops every amoCRM job until it is restarted (api fact sheet
§1). Only that process knows it; `amosync resync` would otherwise promise a start that never
comes. So the leader writes the row when it halts (who: its leader lock's application name, why,
since when) and removes it when it begins to lead unhalted. A reader trusts the row only while
the process named in it still holds the leader lock: a halted daemon killed and replaced by a
new one leaves a row that no longer describes the leader.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sync.db.diag import error_line
from sync.db.locks import holder_name
from sync.db.schema import sync_state
from sync.logs import get_logger

log = get_logger("sync.daemon")

HALTED_KEY = "daemon.halted"


def record_halt(engine: Engine, reason: str) -> None:
    """This process, the leader, halted for `reason`: tell the other commands (best effort: a
    database that fails now leaves `amosync resync` promising a start, as before)."""
    try:
        with engine.begin() as conn:
            mark_halted(conn, holder_name(), reason, datetime.now(UTC))
    except SQLAlchemyError as exc:
        log.warning("halt_unrecorded", error=error_line(exc))


def mark_halted(conn: Connection, holder: str, reason: str, since: datetime) -> None:
    value = {"holder": holder, "reason": reason, "since": since.isoformat()}
    statement = insert(sync_state).values(key=HALTED_KEY, value=value)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[sync_state.c.key],
        set_={"value": statement.excluded.value, "updated_at": sa.func.now()},
    ))  # fmt: skip


def clear_halted(conn: Connection) -> None:
    conn.execute(sa.delete(sync_state).where(sync_state.c.key == HALTED_KEY))


def fetch_halted(conn: Connection, leader: str | None) -> dict[str, Any] | None:
    """The halt of the daemon `leader` (the leader lock holder's application name), if any."""
    if leader is None:
        return None
    value = conn.scalar(sa.select(sync_state.c.value).where(sync_state.c.key == HALTED_KEY))
    if not isinstance(value, dict) or value.get("holder") != leader:
        return None
    return value
