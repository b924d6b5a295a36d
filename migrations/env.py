"""Alembic environment: run by `sync.db.migrate` on a connection it opened and locked.

The target schema comes from `config.attributes["schema"]`; objects are created in it through
`search_path`, and alembic's version table lives in it too, so several accounts can share one
database with one schema each.

Like every revision, this file imports nothing from the product (alembic and SQLAlchemy only):
a migration is frozen history and must not change when the code does. Autogenerate compares
against the metadata a caller passes as `config.attributes["target_metadata"]`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

config = context.config
connection = config.attributes["connection"]
schema = config.attributes["schema"]

connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    version_table_schema=schema,
    compare_type=True,
    # alembic's own table lives in the target schema; autogenerate must not see it as drift
    include_name=lambda name, type_, _parent: not (type_ == "table" and name == "alembic_version"),
)
with context.begin_transaction():
    context.run_migrations()
