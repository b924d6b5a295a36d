"""Pull's page store in the data layer's convention (README, "The data layer's one style"): its
statements are Core on the schema-less tables, so the store's `schema_translate_map` puts every
table in the configured schema; only the session's staging tables live in `pg_temp`; raw SQL is
left where Core cannot say it (the staging `DO` block, `TRUNCATE`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Executable

from sync.db import page_sql, staging, tombstones

ROOT = Path(__file__).resolve().parents[2]
RELATIONS = tuple(staging.RELATIONS)
CTES = {"locked", "m", "written", "n", "old"}
# `FROM x`, `JOIN x`, `INTO x`, `UPDATE x`, `USING x`: what each statement reads or writes
# (not `IS [NOT] DISTINCT FROM`, `DO UPDATE SET`; a name followed by "(" is a function)
TARGET = re.compile(
    r"(?<!DISTINCT )(?<!DO )\b(?:FROM|JOIN|INTO|UPDATE|USING)\s+(?!LATERAL\b)([^\s(]+)(\()?"
)


def statements() -> dict[str, Executable]:
    found: dict[str, Executable] = {
        f"{module.__name__}.{name}": value
        for module in (page_sql, tombstones)
        for name, value in vars(module).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, Executable)
    }
    found["every_diff"] = page_sql.every_diff(RELATIONS)
    found["every_insert"] = page_sql.every_insert(RELATIONS, True)
    found["one_diff"] = page_sql.every_diff(RELATIONS[:1])
    return found


def rendered(statement: Any, schema: str) -> str:
    compiled = statement.compile(
        dialect=postgresql.psycopg.dialect(),  # type: ignore[no-untyped-call]
        schema_translate_map={None: schema},
        render_schema_translate=True,
    )
    return str(compiled)


@pytest.mark.parametrize(("name", "statement"), sorted(statements().items()))
def test_every_table_a_statement_touches_is_in_the_stores_schema(
    name: str, statement: Executable
) -> None:
    sql = rendered(statement, "acme")
    targets = [t for t, call in TARGET.findall(sql) if not call and t.strip('"') not in CTES]
    assert targets, (name, sql)
    for target in targets:
        schema = target.split(".")[0]
        assert schema in ("acme", "pg_temp"), (name, target, sql)
        if schema == "pg_temp":
            assert target.split(".")[1].startswith(staging.STAGE_PREFIX), (name, target)


def test_the_statements_follow_the_schema_they_are_run_with() -> None:
    assert "other.contacts" in rendered(page_sql.UPSERT, "other")
    assert "acme" not in rendered(page_sql.UPSERT, "other")


def test_raw_sql_only_where_core_cannot_say_it() -> None:
    """`sa.text` calls in the page store's modules: the staging DO block and TRUNCATE."""
    calls = {}
    for module in ("contacts", "tombstones", "page_sql"):
        tree = ast.parse((ROOT / "sync" / "db" / f"{module}.py").read_text())
        calls[module] = [
            ast.unparse(node.args[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "text"
        ]
    assert calls["page_sql"] == []
    assert calls["contacts"] == ["staging.PREPARE", "staging.PREPARE_ASYNC"]
    assert len(calls["tombstones"]) == 1
    assert "TRUNCATE" in calls["tombstones"][0]
