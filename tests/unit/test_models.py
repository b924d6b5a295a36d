"""The domain's names in `sync.core.models` are the database's: every status enum has exactly the
values its table's CHECK constraint allows (they are the public contract), and the list of
writable contact columns exists once, in `sync.core.models`, not as copies that can drift."""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, Table

from sync.core.models import (
    SCALAR_FIELDS,
    WRITABLE_FIELDS,
    ChangeKind,
    ContactStatus,
    RequestKind,
    RequestStatus,
    RunStatus,
    Winner,
)
from sync.db import schema

ROOT = Path(__file__).resolve().parents[2]


def allowed(table: Table, column: str) -> set[str]:
    """The values the CHECK constraint `<column> IN (...)` of `table` allows."""
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint):
            text = str(constraint.sqltext)
            match = re.fullmatch(rf"{column} IN \((.*)\)", text)
            if match:
                return set(re.findall(r"'([^']*)'", match.group(1)))
    raise AssertionError(f"no CHECK ({column} IN ...) on {table.name}")


@pytest.mark.parametrize(
    ("table", "column", "enum"),
    [
        (schema.contacts, "sync_status", ContactStatus),
        (schema.sync_runs, "status", RunStatus),
        (schema.sync_requests, "status", RequestStatus),
        (schema.sync_requests, "kind", RequestKind),
        (schema.sync_changes, "kind", ChangeKind),
        (schema.sync_conflicts, "winner", Winner),
    ],
)
def test_each_status_enum_is_exactly_what_its_table_allows(
    table: Table, column: str, enum: type[StrEnum]
) -> None:
    assert {member.value for member in enum} == allowed(table, column)


def test_a_status_is_its_string() -> None:
    """What SQL parameters, JSON and comparisons with fetched rows rely on."""
    assert ContactStatus.PENDING == "pending"
    assert f"{RunStatus.FAILED}" == "failed"
    assert str(Winner.LOCAL) == "local"


def test_the_writable_columns_are_the_capture_triggers_columns() -> None:
    from sync.db import capture

    assert capture.WRITABLE_CONTACT_COLUMNS == WRITABLE_FIELDS
    assert set(WRITABLE_FIELDS) - set(SCALAR_FIELDS) == {"custom_fields_values"}


def copies_of_the_writable_list() -> list[str]:
    """Literal tuples/lists/sets of exactly the writable (or scalar writable) columns in `sync/`
    outside `sync/core/models.py`."""
    lists = {frozenset(WRITABLE_FIELDS), frozenset(SCALAR_FIELDS)}
    found = []
    for path in sorted((ROOT / "sync").rglob("*.py")):
        if path == ROOT / "sync" / "core" / "models.py" or "emulator" in path.parts:
            continue  # the emulator is amoCRM's stand-in: it keeps its own idea of amoCRM
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(values) == len(node.elts) and frozenset(values) in lists:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_writable_list_exists_once() -> None:
    assert copies_of_the_writable_list() == []
