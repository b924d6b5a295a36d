"""`status`' last runs: a `running` row whose lock nobody holds shows as `interrupted` (killed),
but a run that ends between status' reads of the rows and of the locks is shown as it ended,
not as killed (the locks are not transactional)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.config import Config, DatabaseConfig, WebhooksConfig
from sync.db import status as queries
from sync.db.hooks import record_health, record_last_hook
from sync.db.runs import pull_lock
from sync.status import gather, render


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


def test_the_webhooks_line_does_not_contradict_the_last_hook(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    """The leader judged "quiet (no hook received yet)" and stores a verdict only when its
    state changes; a hook recorded 50 s ago made status say both "no hook received yet" and
    "last hook 50 s ago". The age is the database's: the quiet reason follows it."""
    config = Config(database=db_config, webhooks=WebhooksConfig(enabled=True))
    now = time.time()
    verdict = {"state": "quiet", "reason": "no hook received yet", "since": int(now) - 120,
               "poll_interval_s": 60}  # fmt: skip
    with engine.begin() as conn:
        record_health(conn, verdict)
        record_last_hook(conn, now - 50)
    with engine.begin() as conn:
        data: dict[str, Any] = gather(conn, config)
    line = next(ln for ln in render(data).splitlines() if ln.lstrip().startswith("webhooks"))
    assert "no hook received yet" not in line, line
    assert re.search(r"quiet since \S+; last hook 5[0-2] s ago", line), line
    assert re.fullmatch(r"no hook for 5[0-2] s", data["webhooks"]["reason"])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM amocrm.sync_state WHERE key = 'webhooks.last_hook'"))
        data = gather(conn, config)
    assert "quiet since" in render(data)
    assert data["webhooks"]["reason"] == "no hook received yet"


def test_a_failed_run_is_named_while_the_next_one_runs(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    """amoCRM down: each pull retries and fails, the next starts at once. Status shows the
    running pull and the failure before it, with its time."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO amocrm.sync_runs (kind, status, started_at, finished_at, error) VALUES "
            "('pull', 'failed', now(), now(), 'cannot connect to amoCRM at 127.0.0.1:9')"
        ))  # fmt: skip
    _start_run(engine)
    with pull_lock(engine, "amocrm") as lock:
        assert lock is not None
        with engine.begin() as conn:
            data: dict[str, Any] = gather(conn, Config(database=db_config))
    assert data["last_runs"]["pull"]["status"] == "running"
    failed = data["last_failures"]["pull"]
    assert failed["error"] == "cannot connect to amoCRM at 127.0.0.1:9"
    line = next(line for line in render(data).splitlines() if "pull  running" in line)
    assert f"the pull before it failed at {failed['finished_at']}: cannot connect" in line


def test_no_failure_is_named_once_a_run_of_the_kind_succeeded(
    engine: Engine, db_config: DatabaseConfig
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO amocrm.sync_runs (kind, status, started_at, finished_at, error) VALUES "
            "('pull', 'failed', now(), now(), 'boom'), ('pull', 'succeeded', now(), now(), NULL)"
        ))  # fmt: skip
        data: dict[str, Any] = gather(conn, Config(database=db_config))
    assert data["last_failures"] == {}
    assert "boom" not in render(data)
