"""Migrations are frozen history that ends where the code is: a database upgraded revision by
revision from the first one equals, object by object, the schema the code builds from nothing
(`sync.db.definitions`: metadata, capture, the custom-field check, views) — tables, columns,
indexes, constraints, sequences, trigger definitions, function bodies, views and comments. So a
change to a trigger, function or view in the code without a new revision fails here, and so
does a revision that is edited to reach the new definition only on fresh installs.

Each step is also reversible: downgrading a revision gives back the schema before it."""

from __future__ import annotations

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from sync.config import DatabaseConfig
from sync.db import definitions
from sync.db.engine import create_engine
from sync.db.migrate import downgrade, script_location, upgrade
from tests.integration.schema_catalog import (
    Catalog,
    differences,
    schema_of,
)

SCHEMA = "amocrm"


def revisions_in_order() -> list[str]:
    config = AlembicConfig()
    config.set_main_option("script_location", script_location())
    scripts = ScriptDirectory.from_config(config)
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def built_from_the_code(db: DatabaseConfig) -> Catalog:
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            definitions.create_all(conn, db.schema)
    finally:
        engine.dispose()
    return schema_of(db)


def test_revisions_form_one_line_from_the_first() -> None:
    order = revisions_in_order()
    assert order[0] == "0001"
    assert order == sorted(order)  # numbered in the order they apply


@pytest.mark.slow
def test_upgrading_step_by_step_ends_at_the_schema_the_code_expects(
    blank_db_config: DatabaseConfig, other_blank_db_config: DatabaseConfig
) -> None:
    expected = built_from_the_code(other_blank_db_config)
    assert all(expected[kind] for kind in ("functions", "triggers", "views"))
    before = None
    for revision in revisions_in_order():
        assert upgrade(blank_db_config, revision) == (before, revision)
        before = revision
    diff = differences(schema_of(blank_db_config), expected)
    assert not diff, "upgraded database differs from the code's schema:\n" + diff


@pytest.mark.slow
def test_each_downgrade_gives_back_the_schema_before_its_revision(
    blank_db_config: DatabaseConfig,
) -> None:
    previous, schemas = "base", {"base": schema_of_empty(blank_db_config)}
    for revision in revisions_in_order():
        upgrade(blank_db_config, revision)
        schemas[revision] = schema_of(blank_db_config)
        downgrade(blank_db_config, previous)
        diff = differences(schema_of(blank_db_config), schemas[previous])
        assert not diff, f"downgrade of {revision} to {previous}:\n{diff}"
        upgrade(blank_db_config, revision)
        assert not differences(schema_of(blank_db_config), schemas[revision]), revision
        previous = revision


def schema_of_empty(db: DatabaseConfig) -> Catalog:
    return schema_of(db)  # the schema does not exist yet: every kind is empty
