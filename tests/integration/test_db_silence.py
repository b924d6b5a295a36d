"""What the silence bound (`sync.db.silence`) must not cut: a migration's long statement (it
runs with no statement_timeout), and a long wait that starts right after another wait of the
engine was cut for a silent spell (the engine's next waits are checked early, not cut early)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from sync.config import DatabaseConfig, Secret
from sync.db import silence
from sync.db.engine import create_engine
from sync.db.migrate import prepare_schema
from sync.errors import StoreError
from tests.pg_proxy import FreezeProxy


@pytest.fixture
def proxy(db_config: DatabaseConfig) -> Iterator[FreezeProxy]:
    url = make_url(db_config.url.reveal())
    frozen = FreezeProxy((url.host or "127.0.0.1", url.port or 5432))
    yield frozen
    frozen.thaw()
    frozen.close()


def _through(
    proxy: FreezeProxy, db_config: DatabaseConfig, statement_timeout_s: float
) -> DatabaseConfig:
    url = proxy.url(make_url(db_config.url.reveal()))
    return dataclasses.replace(
        db_config,
        url=Secret(url.render_as_string(hide_password=False)),
        statement_timeout_s=statement_timeout_s,
    )


def _raw(conn: sa.Connection) -> object:
    return conn.connection.dbapi_connection


def test_a_migration_statement_longer_than_the_bound_is_not_cut(
    db_config: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration on a big table takes as long as it takes: at the bound the server is asked
    on a second connection, says the statement runs, and the wait goes on (several times)."""
    monkeypatch.setattr(silence, "GRACE_S", 0.5)
    config = dataclasses.replace(db_config, statement_timeout_s=0.5)  # checked every 1 s
    engine = create_engine(config, statement_timeout=False)
    try:
        with engine.connect() as conn:
            assert isinstance(_raw(conn), silence.AnsweringConnection)
            assert conn.scalar(sa.text("SHOW statement_timeout")) == "0"
            assert conn.scalar(sa.text("SELECT 7 FROM pg_sleep(3.5)")) == 7
    finally:
        engine.dispose()


def test_a_long_wait_right_after_a_cut_keeps_its_whole_bound(
    db_config: DatabaseConfig, proxy: FreezeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a cut the engine's next waits are checked after GRACE_S, not cut then: a legitimate
    wait (say behind another process's token refresh) that the server is working on keeps the
    whole bound of statement_timeout_s + GRACE_S."""
    monkeypatch.setattr(silence, "GRACE_S", 1.0)
    engine = create_engine(_through(proxy, db_config, statement_timeout_s=4))  # bound 5 s
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            proxy.freeze()
            with pytest.raises(OperationalError, match="no answer for 5 s"):
                conn.execute(sa.text("SELECT 2"))
        proxy.thaw()
        with engine.connect() as conn:  # a new connection: its first wait is after the cut
            assert conn.scalar(sa.text("SELECT 7 FROM pg_sleep(2.5)")) == 7
            assert conn.scalar(sa.text("SELECT 3")) == 3
    finally:
        proxy.thaw()
        engine.dispose()


def test_after_a_cut_a_still_silent_server_fails_the_next_wait_early(
    db_config: DatabaseConfig, proxy: FreezeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side: the server is still silent, the early check gets no answer on its second
    connection either, and the next wait is cut without waiting the whole bound again."""
    monkeypatch.setattr(silence, "GRACE_S", 1.0)
    engine = create_engine(_through(proxy, db_config, statement_timeout_s=60))  # bound 61 s
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            type(_raw(conn)).silent.since = 1.0  # as after a cut (the whole bound is 61 s)
            proxy.freeze()
            with pytest.raises(OperationalError, match="nor to a second connection"):
                conn.execute(sa.text("SELECT 2"))
    finally:
        proxy.thaw()
        engine.dispose()


def test_a_fresh_schemas_first_migration_by_a_command_fails_on_a_silent_server(
    blank_db_config: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command finds the schema fresh (its checks answered) and migrates it, as `db upgrade`
    would; the server then answers nothing: the migration's wait is checked, the second
    connection gets no answer either, and the command fails with one line (it hung for good)."""
    monkeypatch.setattr(silence, "GRACE_S", 1.0)
    url = make_url(blank_db_config.url.reveal())
    held = FreezeProxy((url.host or "127.0.0.1", url.port or 5432))
    held.hold_queries()  # the migration's session starts, its first query is never answered
    through = dataclasses.replace(
        _through(held, blank_db_config, statement_timeout_s=1),
        url=Secret(
            held.url(url).set(query={"sslmode": "disable"}).render_as_string(hide_password=False)
        ),
    )
    engine = create_engine(blank_db_config)  # the command's own checks: answered
    failure: list[BaseException] = []

    def command() -> None:
        try:
            prepare_schema(engine, through)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failure.append(exc)

    worker = threading.Thread(target=command, daemon=True)
    try:
        worker.start()
        worker.join(60)  # far beyond the bound (1 + 1 s, then the check's 1 s): it hung
        assert not worker.is_alive(), "the migration still waits for the silent server"
        assert len(failure) == 1
        assert isinstance(failure[0], StoreError)
        assert "nor to a second connection" in str(failure[0])
        assert "\n" not in str(failure[0])
    finally:
        held.close()
        engine.dispose()
