"""The SQL of amoCRM webhooks: which announced versions are stored, the hook rows of `sync_state`,
and the NOTIFY that carries a standby's hooks to the leader.

`sync_state` rows (JSON values):
  webhooks.last_hook   {"received_at": unix_s}: when a hook last reached any daemon of the schema
                       (written at most about once a second; read by `amosync webhooks status`)
  webhooks.health      {"state", "reason", "since", "poll_interval_s"}: the leader's verdict
                       (`sync.daemon.webhooks.watch`), written on each change; read by
                       `amosync status`

Channel `amosync_<schema>_hooks`: a standby's hints for the leader (payloads:
`sync.daemon.webhooks.hints.encode_hint`). `amosync_` + a schema of at most 46 characters +
`_hooks` fits 63 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from sync.db.runs import write_state
from sync.db.schema import contacts, sync_state

LAST_HOOK_KEY = "webhooks.last_hook"
HEALTH_KEY = "webhooks.health"
CHECK_TIMEOUT_MS = 2000  # the coverage check runs between a hook and its pull: never long


def hooks_channel(schema: str) -> str:
    """The channel on which a standby forwards the hooks it received to the leader."""
    return f"amosync_{schema}_hooks"


def fetch_versions(conn: Connection, ids: Sequence[int]) -> dict[int, int]:
    """{contact id: stored updated_at (unix s)} of those of `ids` that are stored."""
    if not ids:
        return {}
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {CHECK_TIMEOUT_MS}")
    seconds = sa.cast(sa.func.floor(sa.extract("epoch", contacts.c.updated_at)), sa.BigInteger)
    query = sa.select(contacts.c.id, seconds).where(
        contacts.c.id.in_(list(ids)), contacts.c.updated_at.is_not(None)
    )
    return {int(row[0]): int(row[1]) for row in conn.execute(query)}


def notify_hints(conn: Connection, schema: str, payloads: Sequence[str]) -> None:
    """Send `payloads` to the leader (delivered when the transaction commits)."""
    for payload in payloads:
        conn.execute(
            sa.select(sa.func.pg_notify(hooks_channel(schema), payload))
        )  # fmt: skip


def record_last_hook(conn: Connection, received_at: float) -> None:
    """Store when a hook last arrived (never moving it back)."""
    value = {"received_at": int(received_at)}
    statement = insert(sync_state).values(key=LAST_HOOK_KEY, value=value)
    newer = sa.cast(statement.excluded.value["received_at"].astext, sa.BigInteger) >= sa.cast(
        sync_state.c.value["received_at"].astext, sa.BigInteger
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[sync_state.c.key],
            set_={"value": statement.excluded.value, "updated_at": sa.func.now()},
            where=sa.or_(sync_state.c.value["received_at"].is_(None), newer),
        )
    )


def record_health(conn: Connection, value: Mapping[str, Any]) -> None:
    write_state(conn, HEALTH_KEY, value)


def fetch_hook_rows(conn: Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(webhooks.last_hook, webhooks.health) values, None where absent."""
    rows = conn.execute(
        sa.select(sync_state.c.key, sync_state.c.value).where(
            sync_state.c.key.in_((LAST_HOOK_KEY, HEALTH_KEY))
        )
    )
    found: dict[str, Any] = {str(row[0]): row[1] for row in rows}
    return found.get(LAST_HOOK_KEY), found.get(HEALTH_KEY)
