"""Staging tables for pull's page writes: a page's rows reach PostgreSQL by `COPY` into them.

    conn.execute(sa.text(PREPARE))                     # once per transaction (sets the origin)
                                                       # (PREPARE_ASYNC: its commit is asynchronous)
    copy_rows(conn, "contact_tags", RELATIONS["contact_tags"][0], rows)
    ... INSERT INTO "amocrm".contact_tags SELECT … FROM pg_temp.amosync_stage_contact_tags …

They are temporary tables of the session (`pg_temp.amosync_stage_<table>`, `ON COMMIT DELETE
ROWS`): private to the transaction's backend, never logged, emptied at every commit. `PREPARE`
creates them when the session has none (a pooler in transaction mode may hand a transaction a
backend that never saw them), so it runs in every transaction; it needs PostgreSQL's TEMPORARY
privilege on the database, which every role has unless it was revoked from PUBLIC.
`COPY` costs PostgreSQL about a third less than parsing the same rows out of a JSON document
(`jsonb_to_recordset`, used before), and this process no longer encodes them as JSON
(`bench/pull_store.py` measures both sides).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_dumps
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Connection

from sync.core.mapping import RELATION_COLUMNS
from sync.db.capture import ORIGIN_SETTING

# the SQL type of every relation column (the columns and their order are `RELATION_COLUMNS`)
COLUMN_TYPES = {
    "contact_id": "bigint",
    "field_id": "bigint",
    "position": "integer",
    "field_code": "text",
    "field_name": "text",
    "field_type": "text",
    "value": "text",
    "enum_id": "bigint",
    "enum_code": "text",
    "tag_id": "bigint",
    "tag_name": "text",
    "lead_id": "bigint",
    "customer_id": "bigint",
    "company_id": "bigint",
    "catalog_id": "bigint",
    "element_id": "bigint",
    "quantity": "numeric",
    "metadata": "jsonb",
}
# relation table → (columns with their types, the PageRows attribute holding its rows)
RELATIONS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    table: (tuple((c, COLUMN_TYPES[c]) for c in RELATION_COLUMNS[attr]), attr)
    for table, attr in (
        ("contact_custom_field_values", "custom_values"),
        ("contact_tags", "tags"),
        ("contact_leads", "leads"),
        ("contact_customers", "customers"),
        ("contact_companies", "companies"),
        ("contact_catalog_elements", "catalog_elements"),
    )
}
# the staged `contacts` columns, in the order `_contact_tuple` writes them (times: unix seconds)
CONTACT_COLUMNS = (
    ("id", "bigint"),
    ("name", "text"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("responsible_user_id", "bigint"),
    ("group_id", "bigint"),
    ("created_by", "bigint"),
    ("updated_by", "bigint"),
    ("created_at", "bigint"),
    ("updated_at", "bigint"),
    ("closest_task_at", "bigint"),
    ("account_id", "bigint"),
    ("custom_fields_values", "jsonb"),
    ("held", "text[]"),
)
# The relation tables of ids (and a tag's name) share one staging table, `REFS`, each behind a
# view of its own name that the statements read: one `COPY` (two round trips) and one table
# emptied at commit for the four instead of four of each (`ref_rows` tags their rows).
REFS = "refs"
REF_COLUMNS = (
    ("kind", "integer"), ("contact_id", "bigint"), ("ref_id", "bigint"), ("name", "text"),
)  # fmt: skip
REF_KINDS = {"contact_tags": 1, "contact_leads": 2, "contact_customers": 3, "contact_companies": 4}
STAGE_PREFIX = "amosync_stage_"
BINARY_TYPES = {"bigint": "int8", "integer": "int4"}  # psycopg's names of the SQL types
TYPED = frozenset({"bigint", "integer", "text"})  # what a typed text COPY takes (ints, strs)


# the SQL types above as SQLAlchemy's, for the staging tables as Core tables
CORE_TYPES: dict[str, Any] = {
    "bigint": sa.BigInteger,
    "integer": sa.Integer,
    "text": sa.Text,
    "numeric": sa.Numeric,
    "jsonb": JSONB,
    "text[]": ARRAY(sa.Text),
}


def stage_name(table: str) -> str:
    return f"pg_temp.{STAGE_PREFIX}{table}"


@cache
def stage_table(table: str) -> sa.TableClause:
    """The staging table of `table` ("contacts" or a relation table) as a Core table, for the
    statements that read it (`sync.db.page_sql`)."""
    columns = CONTACT_COLUMNS if table == "contacts" else RELATIONS[table][0]
    typed = (sa.column(name, CORE_TYPES[kind]) for name, kind in columns)
    return sa.table(f"{STAGE_PREFIX}{table}", *typed, schema="pg_temp")


def _prepare(*, async_commit: bool) -> str:
    """One statement that readies the transaction: marked as the sync's own (what
    `sync.db.engine.sync_origin` does: the guard triggers let its writes through uncaptured),
    JIT off, and the staging tables created where the session lacks them, else emptied
    (`ON COMMIT DELETE ROWS` empties them at every commit, but a caller may store two pages in
    one transaction). One round trip where the origin was one more for every page.
    `async_commit`: its COMMIT does not wait for the WAL flush (`synchronous_commit = off` for
    this transaction only): the pull's sink on connections it holds, `sync.pull.sink.Sink.drain`
    says why that is safe there and nowhere else."""
    commit = "\n    PERFORM set_config('synchronous_commit', 'off', true);" if async_commit else ""
    tables = {"contacts": CONTACT_COLUMNS, REFS: REF_COLUMNS} | {
        t: cols for t, (cols, _) in RELATIONS.items() if t not in REF_KINDS
    }
    creates = "".join(
        f"""
        CREATE TEMP TABLE {STAGE_PREFIX}{table} ({", ".join(f"{c} {k}" for c, k in columns)})
        ON COMMIT DELETE ROWS;"""
        for table, columns in tables.items()
    ) + "".join(_ref_view(table, kind) for table, kind in REF_KINDS.items())
    empties = "".join(
        f"""
        DELETE FROM {stage_name(table)};"""
        for table in tables
    )
    first = stage_name("contacts")
    # JIT compiles a plan whose cost estimate is high, and the estimates of a first resync's
    # tables (no statistics yet) are: 45 ms of compiling for a 5 ms statement, on every page.
    return f"""DO $stage$ BEGIN
    PERFORM set_config('{ORIGIN_SETTING}', 'sync', true);
    PERFORM set_config('jit', 'off', true);{commit}
    IF to_regclass('{first}') IS NULL THEN{creates}
    ELSE{empties}
    END IF;
END $stage$"""


def _ref_view(table: str, kind: int) -> str:
    """The view that shows `REFS`'s rows of `kind` as `table`'s staging table."""
    columns = RELATIONS[table][0]
    shared = REF_COLUMNS[1 : len(columns) + 1]
    assert [k for _, k in columns] == [k for _, k in shared], table  # same types, same order
    shown = ", ".join(f"{s} AS {c}" for (c, _), (s, _) in zip(columns, shared, strict=True))
    return f"""
        CREATE TEMP VIEW {STAGE_PREFIX}{table} AS
        SELECT {shown} FROM {stage_name(REFS)} WHERE kind = {kind};"""


def ref_rows(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`table`'s rows (one of `REF_KINDS`) as `REFS` rows: its kind, then the row, padded."""
    kind = REF_KINDS[table]
    if len(RELATIONS[table][0]) == 3:
        return [(kind, *row) for row in rows]
    return [(kind, *row, None) for row in rows]


PREPARE = _prepare(async_commit=False)
PREPARE_ASYNC = _prepare(async_commit=True)  # the same, its commit not waiting for the flush


def copy_rows(
    conn: Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: list[tuple[Any, ...]],
    *,
    binary: bool = False,
) -> None:
    """`COPY` rows (tuples in `columns` order) into the staging table of `table`, on the
    caller's transaction; `binary` sends PostgreSQL's binary format, with jsonb values encoded
    by orjson straight to UTF-8 (no str in between). Tables of bigint, integer and text columns
    only are sent as text with their types set: the driver then formats each value by the
    column's type instead of looking a formatter up by the value's Python type (about half the
    CPU for the ~1,800 custom field values of a page; `sync.core.mapping` makes those values
    ints and strs). A driver error, or a value the format cannot carry, comes out as
    SQLAlchemy's error, like every other statement's."""
    if not rows:
        return
    sql = f"COPY {stage_name(table)} ({', '.join(c for c, _ in columns)}) FROM STDIN"
    kinds = [kind for _, kind in columns]
    typed = binary or all(kind in TYPED for kind in kinds)
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor:
            if binary:
                set_json_dumps(orjson.dumps, cursor)
            with cursor.copy(sql + " (FORMAT BINARY)" if binary else sql) as copy:
                if typed:
                    copy.set_types([BINARY_TYPES.get(kind, kind) for kind in kinds])
                write = copy.write_row
                for row in rows:
                    write(row)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
    except (TypeError, ValueError, OverflowError) as exc:  # a value of another type
        shown = " or ".join(REF_KINDS) if table == REFS else table
        error = psycopg.DataError(f"a value amoCRM sent does not fit its column in {shown}")
        raise sa.exc.DBAPIError.instance(sql, None, error, psycopg.Error) from exc
