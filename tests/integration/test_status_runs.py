"""`status`' last runs: a `running` row whose lock nobody holds shows as `interrupted` (killed),
but a run that ends between status' reads of the rows and of the locks is shown as it ended,
not as killed (the locks are not transactional)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.config import Config, DatabaseConfig
from sync.db import status as queries
from sync.db.runs import pull_lock
from sync.status import gather


def _start_run(engine: Engine) -> int:
    sql = (
        "INSERT INTO amocrm.sync_runs (kind, status, started_at) VALUES ('pull', 'running', now())"
    )
    with engine.begin() as conn:
        return int(conn.scalar(sa.text(sql + " RETURNING id")))


def _pull_status(engine: Engine, db_config: DatabaseConfig) -> str:
    with engine.begin() as conn:
        data: dict[str, Any] = gather(conn, Config(database=db_config))
    return str(data["last_runs"]["pull"]["status"])


def test_a_running_row_without_its_lock_is_interrupted(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    _start_run(engine)
    assert _pull_status(engine, db_config) == "interrupted"


def test_a_running_row_with_its_lock_held_is_running(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    _start_run(engine)
    with pull_lock(engine, "amocrm") as lock:
        assert lock is not None
        assert _pull_status(engine, db_config) == "running"


def test_a_run_that_ends_between_the_reads_is_not_called_killed(
    engine: Engine, db_config: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run closes its row and lets go of its lock after status read the rows and before it
    read the locks: status must show it succeeded."""
    run_id = _start_run(engine)
    locks = queries.fetch_held_run_locks

    def run_ends_first(conn: Connection, schema: str) -> set[str]:
        close = (
            "UPDATE amocrm.sync_runs SET status = 'succeeded', finished_at = now() WHERE id = :id"
        )
        with engine.begin() as other:
            other.execute(sa.text(close), {"id": run_id})
        return locks(conn, schema)

    monkeypatch.setattr(queries, "fetch_held_run_locks", run_ends_first)
    assert _pull_status(engine, db_config) == "succeeded"
