"""Building the long-lived parts from the configuration: the database engine and the amoCRM
client (used by the CLI commands, and by the daemon later). Every CLI command that needs the
sync's tables gets its engine from `migrated_engine`, the one place that checks the schema (and
migrates a fresh one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.amo.observe import Transport
from sync.config import Config
from sync.db.budget import BudgetRow
from sync.db.engine import (
    create_engine,
    embedded_exists,
    embedded_missing,
    embedded_pgdata,
    import_embedded,
    store_errors,
)
from sync.db.migrate import prepare_schema
from sync.db.tokens import TokenStore
from sync.errors import ConfigProblem, EmbeddedDatabaseError
from sync.logs import get_logger

log = get_logger("sync.wiring")


def database_engine(config: Config) -> Engine:
    """An engine on the configured database and schema, pooled for the pull's threads."""
    workers = config.sync.pull_workers
    return create_engine(config.database, pool_size=max(5, workers), max_overflow=workers)


def migrated_engine(config: Config) -> Engine:
    """`database_engine` for a command that needs the sync's tables. A schema with nothing of
    the sync in it (the first command of a fresh install) is migrated first, as `amosync db
    upgrade` would, with one info line saying so; one at another revision makes one line say
    what to do (`SchemaMissingError`: run `amosync db upgrade`, or upgrade amosync) before any
    statement could fail on a missing table. The daemon, `db upgrade` and `demo` migrate
    whatever the revision."""
    engine = database_engine(config)
    try:
        migrated = prepare_schema(engine, config.database)
    except BaseException:
        engine.dispose()
        raise
    if migrated is not None:
        log.info("database_migrated", schema=config.database.schema, before=None, after=migrated,
                 note="a fresh schema: migrated as `amosync db upgrade` would")  # fmt: skip
    return engine


def amo_client(config: Config, engine: Engine, *, transport: Transport | None = None) -> AmoClient:
    """The amoCRM client, authenticated the configured way, with the pull's thread pool and the
    account's rate budget shared through the database with every other amosync process."""
    return AmoClient.connect(
        config.amocrm,
        token_storage=TokenStore(engine),
        budget=BudgetRow(engine),
        workers=config.sync.pull_workers,
        transport=transport,
    )


@contextmanager
def connected(config: Config) -> Iterator[tuple[Engine, AmoClient]]:
    """The engine and an authenticated client for one command; both are closed afterwards. A
    driver error from the block becomes a one-line `StoreError` (no SQL, no parameters)."""
    config.require_amocrm_auth()
    engine = migrated_engine(config)
    try:
        with store_errors(config.database), amo_client(config, engine) as client:
            _warm_budget(client)
            yield engine, client
    finally:
        engine.dispose()


def _warm_budget(client: AmoClient) -> None:
    """Connect the shared rate budget's row in the background while the command prepares its
    run (lock, run row): the first request then waits for one claim, not for a connect too."""
    store = client.session.limiter.store
    if isinstance(store, BudgetRow):
        threading.Thread(target=store.warm, name="amosync-budget-warm", daemon=True).start()


def _looked(config: Config) -> str:
    return "no config file" if config.source == "defaults" else f"not in {config.source}"


def embedded_problems(config: Config) -> list[ConfigProblem]:
    """With `database.url` unset, the embedded PostgreSQL must be installed: else a problem of
    the configuration (set database.url), listed with the others before any work starts."""
    if not config.database.embedded or import_embedded() is not None:
        return []
    reason, remedy = embedded_missing()
    return [ConfigProblem("database.url", f"{_looked(config)}, no AMOSYNC_DATABASE__URL",
        f"not set, and the embedded PostgreSQL it would fall back to is missing ({reason}): "
        f"set it (a service reads it from its EnvironmentFile){remedy}")]  # fmt: skip


def embedded_notice(config: Config, *, may_create: bool) -> str:
    """With `database.url` unset, the one line that says where the data lives (the embedded
    PostgreSQL's directory; `embedded_problems` found it installed). Raises instead when the
    directory holds no cluster and the command (`may_create` False: anything but `db upgrade`,
    `run` and `demo`) would only create a new, empty one (`EmbeddedDatabaseError`)."""
    db = config.database
    where = embedded_pgdata(db).parent
    looked = _looked(config)
    if not may_create and not embedded_exists(db):
        raise EmbeddedDatabaseError(
            f"database.url is not set and there is no embedded PostgreSQL in {where}: set "
            "database.url, run where .amosync is, or create one with `amosync db upgrade`"
        )
    return (
        f"database.url is not set ({looked}): the data lives in the embedded PostgreSQL in {where}"
    )
