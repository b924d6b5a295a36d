"""Shared fixtures: a real PostgreSQL for every test that needs one, never a silent skip.

Which server: `$AMOSYNC_TEST_DATABASE_URL` if set; else the server on 127.0.0.1:5432 if it answers
(development and CI machines run PostgreSQL 15 there, trust auth, user postgres); else an
embedded PostgreSQL started for the session. If none can be had, the tests that need it fail.

Fixtures:
  pg_admin_url     URL of the server's maintenance database (session)
  db_config        DatabaseConfig of a fresh database migrated to head, schema "amocrm" (per test,
                   cloned from a template migrated once per session)
  blank_db_config  DatabaseConfig of a fresh empty database (per test), for migration tests
  other_blank_db_config  a second one, to compare the first with
  engine           SQLAlchemy engine on `db_config` (schema-translated)
  reader_role      a unique BI reader role name, dropped afterwards
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from sync.config import DatabaseConfig, Secret
from sync.db.engine import create_engine, server_url, start_embedded_server
from sync.db.migrate import upgrade

SCHEMA = "amocrm"
LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_DB_PREFIX = "amosync_t_"


def _answers(url: URL) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextlib.contextmanager
def _server() -> Iterator[URL]:
    configured = os.environ.get("AMOSYNC_TEST_DATABASE_URL")
    if configured:
        url = make_url(configured)
        yield url.set(drivername="postgresql+psycopg") if url.drivername == "postgresql" else url
        return
    local = make_url(LOCAL_SERVER)
    if _answers(local):
        yield local
        return
    with _embedded_server() as url:
        yield url


@contextlib.contextmanager
def _embedded_server() -> Iterator[URL]:
    """No server answers: start the embedded one for this session, and stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="amosync-test-") as tmp:
        server = start_embedded_server(Path(tmp) / "pgdata")
        try:
            yield server_url(server)
        finally:
            server.cleanup()  # before the directory goes


def _admin(url: URL) -> Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def _drop_orphans(admin: Engine) -> None:
    """Drop test databases left by runs that were killed (their pid no longer exists)."""
    with admin.connect() as conn:
        names = conn.scalars(
            sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": _DB_PREFIX + "%"},
        ).all()
        for name in names:
            match = re.match(rf"{_DB_PREFIX}(\d+)_", name)
            if match and not _pid_alive(int(match.group(1))):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Databases:
    """Creates uniquely named databases on the server and drops them afterwards."""

    def __init__(self, server: URL) -> None:
        self.server = server
        self.admin = _admin(server)
        self.count = 0

    def create(self, template: str | None = None) -> URL:
        self.count += 1
        name = f"{_DB_PREFIX}{os.getpid()}_{self.count}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
        return self.server.set(database=name)

    def drop(self, url: URL) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


def _config(url: URL) -> DatabaseConfig:
    return DatabaseConfig(url=Secret(url.render_as_string(hide_password=False)), schema=SCHEMA)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[URL]:
    with _server() as url:
        admin = _admin(url)
        _drop_orphans(admin)
        admin.dispose()
        yield url


@pytest.fixture(scope="session")
def _databases(pg_admin_url: URL) -> Iterator[_Databases]:
    databases = _Databases(pg_admin_url)
    yield databases
    databases.admin.dispose()


@pytest.fixture(scope="session")
def _template(_databases: _Databases) -> Iterator[str]:
    url = _databases.create()
    upgrade(_config(url))
    yield str(url.database)
    _databases.drop(url)


@pytest.fixture
def db_config(_databases: _Databases, _template: str) -> Iterator[DatabaseConfig]:
    url = _databases.create(template=_template)
    yield _config(url)
    _databases.drop(url)


@pytest.fixture
def blank_db_config(_databases: _Databases) -> Iterator[DatabaseConfig]:
    url = _databases.create()
    yield _config(url)
    _databases.drop(url)


@pytest.fixture
def other_blank_db_config(_databases: _Databases) -> Iterator[DatabaseConfig]:
    url = _databases.create()
    yield _config(url)
    _databases.drop(url)


@pytest.fixture
def engine(db_config: DatabaseConfig) -> Iterator[Engine]:
    engine = create_engine(db_config)
    yield engine
    with contextlib.suppress(Exception):
        engine.dispose()


@pytest.fixture
def reader_role(engine: Engine) -> Iterator[str]:
    """A unique name for a BI reader role, dropped (with its grants) afterwards."""
    role = f"amosync_reader_{uuid.uuid4().hex[:8]}"
    yield role
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))


@pytest.fixture(autouse=True)
def _no_list_lag_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process pulls run against an emulator whose lists do not lag (unless a test turns
    `list_lag_s` on for the push, which re-reads by id): their final pass need not wait
    `LIST_LAG_S` (2 s) after the run's start, a wait that cost the suite minutes. The wait is
    tested where it matters, through the real CLI in its own process against lagging lists
    (tests/e2e/test_cli_pull_contract.py), which this does not reach."""
    monkeypatch.setattr("sync.pull.pipeline.LIST_LAG_S", 0.0)
