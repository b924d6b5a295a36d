"""No jsonb column holds the JSON value `null`: "none" is SQL NULL, as the column comments say.

SQLAlchemy writes Python's None to a jsonb column as the JSON value null unless the column says
otherwise (`sync.db.metadata.JSON_OR_NULL`): `contact_custom_fields.enums` held it for every field
without choices, so `WHERE enums IS NULL` found nothing and `jsonb_array_elements(enums)` failed
for the whole table (audit). Conflicts over an empty field stored it as their base, local or
remote value the same way. Real PostgreSQL, the emulator over HTTP."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine

from sync.config import DatabaseConfig
from sync.db.engine import sync_origin
from sync.db.schema import metadata
from tests.integration.pull_helpers import WITH, emulated, make_config, pull
from tests.integration.push_env import push_env

_JSONB_COLUMNS = """
    SELECT table_name, column_name FROM information_schema.columns
    WHERE table_schema = 'amocrm' AND data_type = 'jsonb' ORDER BY 1, 2"""


def json_nulls(engine: Engine) -> dict[str, int]:
    """table.column → rows holding the JSON value null (top level), for every jsonb column."""
    found = {}
    with engine.connect() as conn:
        columns = conn.execute(sa.text(_JSONB_COLUMNS)).all()
        assert len(columns) >= 9, columns  # every jsonb column of the schema is looked at
        for table, column in columns:
            rows = conn.scalar(
                sa.text(f"SELECT count(*) FROM amocrm.{table} WHERE {column} = 'null'::jsonb")
            )
            if rows:
                found[f"{table}.{column}"] = int(rows)
    return found


def test_pull_stores_fields_without_choices_with_sql_null_enums(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with emulated(contacts=60, seed=4) as (emulator, url):
        config = make_config(db_config, url, emulator.long_lived_token, with_=WITH, chats=True)
        pull(config, engine, emulator, full=True)
        without = {f.id for f in emulator.account.fields.values() if not f.enums}
    with engine.connect() as conn:
        null_enums = set(
            conn.scalars(sa.text("SELECT id FROM amocrm.contact_custom_fields WHERE enums IS NULL"))
        )
        options = conn.scalar(  # the BI query of the audit: every option of every field
            sa.text(
                "SELECT count(*) FROM amocrm.contact_custom_fields f, "
                "jsonb_array_elements(f.enums) e"
            )
        )
    assert without, "the seed has fields without choices"
    assert null_enums == without
    assert options > 0
    assert json_nulls(engine) == {}


def test_conflicts_over_empty_values_store_sql_null(
    db_config: DatabaseConfig, engine: Engine
) -> None:
    with push_env(db_config, engine, contacts=6) as env:
        a, b = sorted(env.emulator.account.contacts)[:2]
        env.mirror()
        with engine.begin() as conn:  # as a pull of a contact without a last name stores it
            sync_origin(conn)
            conn.execute(sa.text("UPDATE amocrm.contacts SET last_name = NULL WHERE id = :id"),
                         {"id": a})  # fmt: skip
        env.sql("UPDATE contacts SET last_name = 'local' WHERE id = :id", id=a)
        env.sql("UPDATE contacts SET first_name = NULL WHERE id = :id", id=b)
        env.emulator.clock.advance(5)
        env.emulator.update_contacts(
            [{"id": a, "last_name": "remote"}, {"id": b, "first_name": "remote"}]
        )
        report = env.push(conflict_policy="manual")
        rows = env.sql(
            "SELECT contact_id, base_value IS NULL, local_value IS NULL, remote_value IS NULL "
            "FROM sync_conflicts ORDER BY contact_id"
        )
    assert report.conflicts == 2
    # a: empty before both edits; b: emptied locally
    assert [tuple(r) for r in rows] == [(a, True, False, False), (b, False, True, False)]
    assert json_nulls(engine) == {}


def test_every_nullable_jsonb_column_writes_none_as_sql_null() -> None:
    """A new jsonb column declared with plain JSONB would bring the JSON null back."""
    loose = [
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, JSONB) and column.nullable and not column.type.none_as_null
    ]
    assert loose == []
