"""The data layer's conventions on real PostgreSQL (issue 14 items 3 and 4): one clock for the
run rows of pull and push, driver errors of a push wrapped once like a pull's, and the token
refresh lock on the one key scheme."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.clock import SystemClock
from sync.config import DatabaseConfig
from sync.db.locks import key_parts, lock_key
from sync.db.runs import RunStore
from sync.db.tokens import TOKENS_KEY, TokenStore
from sync.errors import StoreError
from sync.push import run_push
from tests.integration.push_env import push_env

LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


class LongAgoClock(SystemClock):
    """A process clock far off the database's (a host without NTP)."""

    def now(self) -> datetime:
        return LONG_AGO


def test_a_push_run_row_has_the_database_clock_like_a_pull_run(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with engine.connect() as conn:
        before = conn.scalar(sa.select(sa.func.now()))
    with push_env(db_config, engine, contacts=2) as env:
        report = run_push(env.config, engine, env.client, clock=LongAgoClock())
    with engine.connect() as conn:
        after = conn.scalar(sa.select(sa.func.now()))
        row = conn.execute(
            sa.text("SELECT status, started_at, finished_at FROM amocrm.sync_runs WHERE id = :i"),
            {"i": report.run_id},
        ).one()
    assert row.status == "succeeded"
    assert before <= row.started_at <= row.finished_at <= after


def test_run_store_keeps_its_schema_whatever_the_engine_maps(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    unmapped = sa.create_engine(engine.url)  # no schema_translate_map: "public" by search_path
    try:
        with unmapped.begin() as conn:
            run_id = RunStore("amocrm").start_run(conn, "push")
            RunStore("amocrm").finish_run(conn, run_id, "succeeded", {"pushed": 3})
    finally:
        unmapped.dispose()
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT kind, status, pushed FROM amocrm.sync_runs WHERE id = :i"),
            {"i": run_id},
        ).one()
    assert tuple(row) == ("push", "succeeded", 3)


def test_a_driver_error_in_a_push_is_one_store_error_and_a_failed_run(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with engine.begin() as conn:  # the outbox cannot be consumed: every DELETE on it fails
        conn.execute(
            sa.text(
                "CREATE FUNCTION amocrm.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'outbox is read-only today'; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE DELETE ON amocrm.sync_changes "
                "FOR EACH ROW EXECUTE FUNCTION amocrm.refuse()"
            )
        )
    with push_env(db_config, engine, contacts=2) as env:
        [first, _] = env.mirror()
        env.sql("UPDATE contacts SET name = 'Renamed' WHERE id = :id", id=first)
        with pytest.raises(StoreError) as caught:
            env.push()
    error = caught.value
    assert str(error) == "PostgreSQL refused a statement: outbox is read-only today"
    assert not isinstance(error.__cause__, StoreError)  # wrapped once, at the use case's edge
    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, error FROM amocrm.sync_runs")).one()
    assert run.status == "failed"
    assert "outbox is read-only today" in run.error
    assert "\n" not in run.error


def test_a_token_refresh_holds_the_lock_of_the_one_key_scheme(engine: Engine) -> None:
    held = sa.text(  # in this database: a parallel test's database may hold the same key
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objsubid = 1 AND classid = :hi AND objid = :lo "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    parts = key_parts(lock_key("amocrm", TOKENS_KEY))
    with TokenStore(engine).locked() as tokens, engine.connect() as other:
        assert other.scalar(held, parts) == 1
        tokens.save({"access_token": "a", "refresh_token": "r"})
    with engine.connect() as other:
        assert other.scalar(held, parts) == 0
