"""Migration 0019: TRUNCATE refused where a row DELETE is, the outbox's and waiting conflicts'
row guards; downgrade gives back 0018's schema, where a TRUNCATE went past every guard."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync.config import DatabaseConfig
from sync.db.engine import create_engine
from sync.db.migrate import downgrade, upgrade
from tests.integration.test_migrations import snapshot

LOCAL_STATEMENTS = [
    "TRUNCATE amocrm.contact_tags",
    "TRUNCATE amocrm.contact_chats",
    "TRUNCATE amocrm.sync_changes",
    "DELETE FROM amocrm.sync_changes",
]


def _refused(db: DatabaseConfig) -> list[str]:
    """Which of LOCAL_STATEMENTS PostgreSQL refuses as amosync, on a contact with a pending
    edit and a tag (each statement in a transaction rolled back)."""
    engine = create_engine(db)
    refused = []
    try:
        for statement in LOCAL_STATEMENTS:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT set_config('amosync.origin', 'sync', true)"))
                conn.execute(sa.text("INSERT INTO amocrm.contacts (id, name) VALUES (1, 'a')"))
                conn.execute(sa.text("INSERT INTO amocrm.contact_tags VALUES (1, 2, 't')"))
                conn.execute(sa.text("SELECT set_config('amosync.origin', '', true)"))
                conn.execute(sa.text("UPDATE amocrm.contacts SET name = 'b' WHERE id = 1"))
                try:
                    with conn.begin_nested():
                        conn.execute(sa.text(statement))
                except sa.exc.DBAPIError as error:
                    if "amosync: " in str(error.orig):  # another error fails the test below
                        refused.append(statement)
                    else:
                        refused.append(f"{statement}: {error.orig}")
                conn.rollback()
    finally:
        engine.dispose()
    return refused


@pytest.mark.slow
def test_0019_upgrade_refuses_and_downgrade_gives_back_0018(
    blank_db_config: DatabaseConfig,
) -> None:
    upgrade(blank_db_config, "0018")
    before = snapshot(blank_db_config)
    assert _refused(blank_db_config) == []
    assert upgrade(blank_db_config, "0019") == ("0018", "0019")
    assert _refused(blank_db_config) == LOCAL_STATEMENTS
    assert downgrade(blank_db_config, "0018") == ("0019", "0018")
    assert snapshot(blank_db_config) == before
    assert _refused(blank_db_config) == []
