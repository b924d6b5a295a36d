"""Everything PostgreSQL knows about one schema, read from its catalogs, for comparing two
databases object by object: tables, columns, indexes, constraints, sequences, trigger
definitions, function bodies, views and every comment. alembic's own version table is left out
(a schema built from the code has none)."""

from __future__ import annotations

import difflib
import pprint

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from sync.config import DatabaseConfig
from sync.db.migrate import upgrade

Catalog = dict[str, list[tuple[object, ...]]]

_IN_SCHEMA = "c.relnamespace = to_regnamespace(:s) AND c.relname <> 'alembic_version'"

QUERIES = {
    "relations": f"""
        SELECT c.relname, c.relkind, c.relpersistence, obj_description(c.oid, 'pg_class')
        FROM pg_class c WHERE {_IN_SCHEMA} AND c.relkind IN ('r', 'v', 'm', 'p')""",
    "columns": f"""
        SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid),
               col_description(c.oid, a.attnum)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE {_IN_SCHEMA} AND c.relkind IN ('r', 'v', 'm', 'p')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": f"""
        SELECT i.relname, pg_get_indexdef(i.oid)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class c ON c.oid = x.indrelid
        WHERE {_IN_SCHEMA}""",
    "constraints": f"""
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE {_IN_SCHEMA}""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by,
               cycle
        FROM pg_sequences WHERE schemaname = :s""",
    "triggers": f"""
        SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE {_IN_SCHEMA} AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p WHERE p.pronamespace = to_regnamespace(:s)""",
    "views": f"""
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
        WHERE {_IN_SCHEMA} AND c.relkind IN ('v', 'm')""",
}


def catalog(engine: Engine, schema: str) -> Catalog:
    """The schema's objects, each kind sorted, so equal schemas give equal catalogs."""
    with engine.connect() as conn:
        return {
            kind: sorted(
                (tuple(row) for row in conn.execute(sa.text(sql), {"s": f'"{schema}"'})), key=repr
            )
            for kind, sql in QUERIES.items()
        }


def differences(actual: Catalog, expected: Catalog) -> str:
    """A readable diff of two catalogs, kind by kind ('' when they are equal)."""
    parts = []
    for kind in QUERIES:
        if actual[kind] != expected[kind]:
            lines = difflib.unified_diff(
                pprint.pformat(expected[kind], width=200).splitlines(),
                pprint.pformat(actual[kind], width=200).splitlines(),
                "expected",
                "actual",
                lineterm="",
                n=1,
            )
            parts.append(f"{kind}:\n" + "\n".join(lines))
    return "\n\n".join(parts)


def schema_of(db: DatabaseConfig) -> Catalog:
    """The catalog of the configured schema."""
    engine = sa.create_engine(make_url(db.url.reveal()))
    try:
        return catalog(engine, db.schema)
    finally:
        engine.dispose()


def fresh_install(db: DatabaseConfig) -> Catalog:
    """The catalog of `db` after this code's `db upgrade` from nothing."""
    upgrade(db)
    return schema_of(db)
