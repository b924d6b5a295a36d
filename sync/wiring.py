"""Building the long-lived parts from the configuration: the database engine and the amoCRM
client (used by the CLI commands, and by the daemon later)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy.engine import Engine

from sync.amo.client import AmoClient
from sync.config import Config
from sync.db.budget import BudgetRow
from sync.db.engine import create_engine, store_errors
from sync.db.tokens import TokenStore


def database_engine(config: Config) -> Engine:
    """An engine on the configured database and schema, pooled for the pull's threads."""
    workers = config.sync.pull_workers
    return create_engine(config.database, pool_size=max(5, workers), max_overflow=workers)


def amo_client(
    config: Config, engine: Engine, *, transport: httpx.BaseTransport | None = None
) -> AmoClient:
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
    engine = database_engine(config)
    try:
        with store_errors(config.database), amo_client(config, engine) as client:
            yield engine, client
    finally:
        engine.dispose()
