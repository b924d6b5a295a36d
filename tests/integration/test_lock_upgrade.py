"""A rolling upgrade: a process of a release before the one lock-key scheme still holds its
locks by their released keys; a new process must wait for it (or refuse) exactly as it would
for a new one, or two pushes, two token refreshes or two migrations would run at once."""

from __future__ import annotations

import zlib

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.locks import key_parts, lock_key, released_keys
from sync.db.tokens import TOKENS_KEY, TokenStore
from sync.errors import SyncError
from tests.integration.push_env import push_env

# in this database only: another database's session (a parallel test) may hold the same key
HELD = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND objsubid = 1 AND classid = :hi AND objid = :lo "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def test_a_push_refuses_while_an_old_release_pushes(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    released = zlib.crc32(b"amosync:amocrm:push")  # what releases up to 07f8c48 took
    assert released_keys("amocrm", "push") == (released,)
    with engine.connect() as old, push_env(db_config, engine, contacts=1) as env:
        assert old.scalar(sa.select(sa.func.pg_try_advisory_lock(released)))
        with pytest.raises(SyncError, match="another push is running"):
            env.push()
        old.execute(sa.select(sa.func.pg_advisory_unlock(released)))
        old.commit()
        assert env.push().pushed == 0  # free again: it runs


def test_a_token_refresh_holds_the_released_key_too(engine: Engine) -> None:
    """An old process refreshing at the same moment queues behind this one (and the reverse)."""
    name = f"amosync:amocrm:{TOKENS_KEY}"
    high, low = zlib.crc32(name.encode()), zlib.crc32(name[::-1].encode())
    released = (high << 32) | low
    released = released - (1 << 64) if released >= 1 << 63 else released
    with TokenStore(engine).locked(), engine.connect() as other:
        assert other.scalar(HELD, key_parts(lock_key("amocrm", TOKENS_KEY))) == 1
        assert other.scalar(HELD, key_parts(released)) == 1


def test_db_upgrade_holds_the_released_hashtext_key_too(engine: Engine) -> None:
    from sync.db.locks import advisory_lock

    with engine.begin() as conn, engine.connect() as other:
        advisory_lock(conn, "amocrm", "migrate")
        released = other.scalar(sa.select(sa.func.hashtext("amosync-migrate:amocrm")))
        assert other.scalar(HELD, key_parts(int(released))) == 1
        assert other.scalar(HELD, key_parts(lock_key("amocrm", "migrate"))) == 1
