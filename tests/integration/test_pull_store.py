"""The page store on its own: versions, echoes and relation diffs, against real PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.db.contacts import ContactStore, PageResult
from sync.db.engine import sync_origin
from sync.mapping import to_rows

RELATIONS = ["custom_values", "tags", "companies", "leads"]


def contact(updated_at: int, tag: str, name: str = "Ann") -> dict[str, Any]:
    return {
        "id": 7,
        "name": name,
        "updated_at": updated_at,
        "custom_fields_values": None,
        "_embedded": {"tags": [{"id": hash(tag) % 1000, "name": tag}], "leads": [{"id": 3}]},
    }


def store(engine: Engine, item: dict[str, Any]) -> PageResult:
    with engine.begin() as conn:
        sync_origin(conn)
        rows = to_rows([item], {}, ("leads",))
        return ContactStore("amocrm").store_page(
            conn, rows, {}, with_relations=RELATIONS, chats=None
        )


def tags(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT tag_name FROM amocrm.contact_tags")))


def test_an_older_version_changes_nothing_not_even_relations(engine: Engine) -> None:
    assert store(engine, contact(200, "new")).upserted == 1
    result = store(engine, contact(100, "old", name="Old"))
    assert result.stale == [7]
    assert result.upserted == 0
    assert tags(engine) == ["new"]


def test_the_same_version_again_writes_nothing(engine: Engine) -> None:
    store(engine, contact(200, "a"))
    with engine.connect() as conn:
        before = conn.scalar(sa.text("SELECT xmin::text FROM amocrm.contact_tags"))
    assert store(engine, contact(200, "a")).upserted == 0
    with engine.connect() as conn:
        after = conn.scalar(sa.text("SELECT xmin::text FROM amocrm.contact_tags"))
    assert after == before  # the relation row was not rewritten


def test_a_newer_version_replaces_the_relations(engine: Engine) -> None:
    store(engine, contact(200, "a"))
    assert store(engine, contact(300, "b")).upserted == 1
    assert tags(engine) == ["b"]
