"""OAuth token storage: one `sync_state` row, read and rotated under a PostgreSQL advisory lock.

`TokenStore.locked()` opens a transaction, takes a transaction-level advisory lock (so every
thread and process refreshing the same account's tokens queues behind one refresher), reads the
stored pair and, when the block ends without an error, commits what `save` wrote (what `keep`
wrote is committed even when the block then raises: a refused refresh token's record). The lock is
released by the commit, after the new pair is durable. The row key and lock are per schema: the
lock is `sync.db.locks.advisory_lock(schema, <row key>)`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from sync.db.engine import engine_schema, store_errors
from sync.db.locks import advisory_lock
from sync.db.schema import sync_state

TOKENS_KEY = "amocrm_oauth_tokens"


class LockedTokens:
    """The stored value as read under the lock; `save` writes within the same transaction."""

    def __init__(self, connection: Connection, key: str, value: Mapping[str, Any] | None) -> None:
        self._connection = connection
        self._key = key
        self.value = value
        self.kept = False  # `keep` wrote: commit whatever the block then does

    def __repr__(self) -> str:
        return f"LockedTokens(key={self._key!r}, stored={self.value is not None})"

    def save(self, value: Mapping[str, Any]) -> None:
        statement = insert(sync_state).values(key=self._key, value=dict(value))
        statement = statement.on_conflict_do_update(
            index_elements=[sync_state.c.key],
            set_={"value": statement.excluded.value, "updated_at": sa.func.now()},
        )
        self._connection.execute(statement)
        self.value = dict(value)

    def keep(self, value: Mapping[str, Any]) -> None:
        """`save`, committed even when the block then ends with an error."""
        self.save(value)
        self.kept = True

    def now(self) -> datetime:
        """The database's clock (the one every run and record of the sync uses)."""
        moment = self._connection.scalar(sa.select(sa.func.clock_timestamp()))
        assert isinstance(moment, datetime)
        return moment


class TokenStore:
    """Where rotated OAuth tokens live (implements `sync.amo.auth.TokenStorage`)."""

    def __init__(self, engine: Engine, key: str = TOKENS_KEY) -> None:
        self._engine = engine
        self._key = key
        self._schema = str(engine_schema(engine))

    def __repr__(self) -> str:
        return f"TokenStore(key={self._key!r})"

    def load(self) -> Mapping[str, Any] | None:
        """The stored pair without locking (a quick read on start-up)."""
        with store_errors(self._engine), self._engine.connect() as connection:
            return self._read(connection)

    @contextmanager
    def locked(self) -> Iterator[LockedTokens]:
        """Hold the refresh lock for the block; commit what was saved when the block ends."""
        with store_errors(self._engine), self._engine.connect() as connection:
            transaction = connection.begin()
            advisory_lock(connection, self._schema, self._key)  # a refresher: one HTTP exchange
            row = LockedTokens(connection, self._key, self._read(connection))
            try:
                yield row
            except BaseException:
                if row.kept:
                    transaction.commit()
                raise  # (not kept: leaving the connection rolls the transaction back)
            transaction.commit()

    def _read(self, connection: Connection) -> Mapping[str, Any] | None:
        value = connection.execute(
            sa.select(sync_state.c.value).where(sync_state.c.key == self._key)
        ).scalar_one_or_none()
        return value if isinstance(value, Mapping) else None
