"""What a DBA, a pooler or a failover does to the sync's lock sessions, for the lock tests."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.db.locks import key_parts


def terminate_lock_holder(engine: Engine, key: int) -> int:
    """Terminate the backend holding advisory lock `key` and wait until it is gone (the lock
    is free when this returns); the number of backends terminated."""
    with engine.connect() as conn:
        pids = conn.scalars(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 1 AND classid = :hi AND objid = :lo AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            key_parts(key),
        ).all()
        for pid in pids:
            assert conn.scalar(sa.text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})
        conn.commit()
    return len(pids)
