"""Migration 0003's check of contacts.custom_fields_values at SQL time, against real PostgreSQL:
every hostile shape is refused in an UPDATE and an INSERT with the path and a hint; amoCRM's own
read shape and the documented ways to clear are accepted; unknown fields and choices and values
that cannot fit the field's type are not the trigger's to refuse (since migration 0009): they
are captured, whatever the cached definitions say, and amoCRM judges them on push."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sync.db.engine import sync_origin
from tests.unit.test_cf_shape import ACCEPTED, READ_SHAPE, REFUSED

ORIGINAL = [{"field_id": 570003, "values": [{"value": "Manager"}]}]
DEFINITIONS = [  # as pull caches them from GET /api/v4/contacts/custom_fields
    (570001, "PHONE", "multitext", [{"id": 840001, "value": "WORK", "sort": 2}]),
    (570003, "POSITION", "text", None),
    (570004, None, "select", [{"id": 840021, "value": "Сайт", "sort": 2}]),
    (570006, None, "date", None),
    (570007, None, "checkbox", None),
    (570008, None, "numeric", None),
    (570011, None, "birthday", None),
]


def run(engine: Engine, sql: str, *, origin: bool = False, **params: Any) -> list[Any]:
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL search_path TO amocrm"))
        if origin:
            sync_origin(conn)
        result = conn.execute(sa.text(sql), params)
        return list(result) if result.returns_rows else []


@pytest.fixture
def contact(engine: Engine) -> int:
    run(
        engine,
        "INSERT INTO contacts (id, name, custom_fields_values) "
        "VALUES (42, 'Ann', CAST(:cf AS jsonb))",
        origin=True,
        cf=json.dumps(ORIGINAL),
    )
    return 42


@pytest.fixture
def definitions(engine: Engine) -> None:
    for field_id, code, kind, enums in DEFINITIONS:
        run(
            engine,
            "INSERT INTO contact_custom_fields (id, code, type, enums) "
            "VALUES (:i, :c, :t, CAST(:e AS jsonb))",
            i=field_id,
            c=code,
            t=kind,
            e=None if enums is None else json.dumps(enums),
        )


def update(engine: Engine, column: Any) -> None:
    run(
        engine,
        "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = 42",
        cf=json.dumps(column),
    )


def insert(engine: Engine, column: Any) -> int:
    rows = run(
        engine,
        "INSERT INTO contacts (name, custom_fields_values) VALUES ('New', CAST(:cf AS jsonb)) "
        "RETURNING id",
        cf=json.dumps(column),
    )
    return int(rows[0][0])


def refusal(write: Any) -> psycopg.Error:
    with pytest.raises(sa.exc.IntegrityError) as raised:
        write()
    error = raised.value.orig
    assert isinstance(error, psycopg.errors.CheckViolation)
    return error


def outbox(engine: Engine) -> int:
    return int(run(engine, "SELECT count(*) FROM sync_changes")[0][0])


@pytest.mark.parametrize(("column", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_a_hostile_update_is_refused_with_the_path(
    engine: Engine, contact: int, column: Any, message: str
) -> None:
    error = refusal(lambda: update(engine, column))
    assert error.diag.message_primary == f"amosync: contact {contact}: {message}"
    assert "field_id" in (error.diag.message_hint or "")
    row = run(engine, "SELECT custom_fields_values, sync_status FROM contacts WHERE id = 42")[0]
    assert (row.custom_fields_values, row.sync_status) == (ORIGINAL, "synced")
    assert outbox(engine) == 0


@pytest.mark.parametrize(("column", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_a_hostile_insert_is_refused_with_the_path(
    engine: Engine, column: Any, message: str
) -> None:
    error = refusal(lambda: insert(engine, column))
    assert re.fullmatch(r"amosync: new contact -\d+: (.*)", error.diag.message_primary or "")
    assert (error.diag.message_primary or "").endswith(f": {message}")
    assert run(engine, "SELECT count(*) FROM contacts")[0][0] == 0
    assert outbox(engine) == 0


@pytest.mark.parametrize("column", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_shapes_are_captured(engine: Engine, contact: int, column: Any) -> None:
    update(engine, column)
    temp_id = insert(engine, column)
    assert temp_id < 0
    assert outbox(engine) == 2


def test_sync_writes_and_other_columns_are_not_checked(engine: Engine, contact: int) -> None:
    run(engine, "UPDATE contacts SET custom_fields_values = '42' WHERE id = 42", origin=True)
    run(engine, "UPDATE contacts SET name = 'Anna' WHERE id = 42")  # the column is not written
    assert outbox(engine) == 1
    refusal(lambda: update(engine, {"field_id": 1}))


# What amoCRM answers with a 400 validation-errors (fact sheet §13.7): the trigger leaves it to
# amoCRM (the cached definitions may be stale); push records amoCRM's message on the row.
AMOCRM_JUDGES = {
    "unknown field_id": {"field_id": 999999, "values": [{"value": "x"}]},
    "unknown field_code": {"field_code": "NOPE", "values": [{"value": "x"}]},
    "numeric given text": {"field_id": 570008, "values": [{"value": "a lot"}]},
    "checkbox given text": {"field_id": 570007, "values": [{"value": "yes"}]},
    "date given ISO text": {"field_id": 570006, "values": [{"value": "2024-01-01"}]},
    "birthday given a fraction": {"field_id": 570011, "values": [{"value": 1.5}]},
    "unknown enum_id": {"field_id": 570004, "values": [{"enum_id": 840026}]},
}


@pytest.mark.usefixtures("definitions")
@pytest.mark.parametrize("entry", AMOCRM_JUDGES.values(), ids=AMOCRM_JUDGES.keys())
def test_with_definitions_unknown_fields_choices_and_wrong_types_are_captured(
    engine: Engine, contact: int, entry: dict[str, Any]
) -> None:
    run(
        engine,
        "UPDATE contacts SET custom_fields_values = custom_fields_values || CAST(:cf AS jsonb) "
        "WHERE id = 42",
        cf=json.dumps([entry]),
    )
    row = run(engine, "SELECT custom_fields_values, sync_status FROM contacts WHERE id = 42")[0]
    assert (row.custom_fields_values, row.sync_status) == ([*ORIGINAL, entry], "pending")
    assert insert(engine, [entry]) < 0
    assert outbox(engine) == 2


@pytest.mark.usefixtures("definitions")
def test_with_definitions_a_field_twice_is_still_refused(engine: Engine, contact: int) -> None:
    column = [
        {"field_code": "PHONE", "values": [{"value": "+7", "enum_code": "WORK"}]},
        {"field_id": 570001, "values": None},
    ]
    error = refusal(lambda: update(engine, column))
    assert error.diag.message_primary == (
        f"amosync: contact {contact}: custom_fields_values[1]: field 570001 appears twice "
        "(also at [0])"
    )
    assert outbox(engine) == 0


@pytest.mark.usefixtures("definitions")
def test_with_definitions_good_typed_values_and_the_read_shape_are_accepted(
    engine: Engine, contact: int
) -> None:
    update(engine, [*READ_SHAPE[:1], {"field_id": 570007, "values": [{"value": True}]}])
    update(
        engine,
        [
            {"field_code": "phone", "values": [{"value": "+7", "enum_code": "MOB"}]},
            {"field_id": 570003, "values": [{"value": "CTO"}]},
            {"field_id": 570004, "values": [{"enum_id": 840021}]},
            {"field_id": 570006, "values": [{"value": 1767225600}]},
            {"field_id": 570007, "values": [{"value": False}]},
            {"field_id": 570008, "values": [{"value": "5000"}, {"value": 5.5}]},
            {"field_id": 570011, "values": [{"value": "1767225600"}]},
        ],
    )
    insert(engine, [{"field_id": 570008, "values": [{"value": -2.5e3}]}])
    assert outbox(engine) == 3


LEGAL = {
    "field_id": 570099,
    "field_name": "Legal entity",
    "field_type": "legal_entity",
    "values": [{"value": {"name": "OOO Romashka", "vat_id": "7700000000"}}],
}
ADDRESS = {"field_id": 570098, "values": [{"value": "Moscow", "subtype": "city"}]}


@pytest.mark.usefixtures("definitions")
def test_values_amocrm_gave_do_not_block_edits_of_other_fields(
    engine: Engine, contact: int
) -> None:
    for field_id, kind in ((570099, "legal_entity"), (570098, "smart_address")):
        run(engine, "INSERT INTO contact_custom_fields (id, type) VALUES (:i, :t)",
            origin=True, i=field_id, t=kind)  # fmt: skip
    as_pulled = [*ORIGINAL, LEGAL, ADDRESS]
    run(engine, "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = 42",
        origin=True, cf=json.dumps(as_pulled))  # fmt: skip
    stripped = [{"field_id": e["field_id"], "values": e["values"]} for e in as_pulled[1:]]
    update(engine, [{"field_id": 570003, "values": [{"value": "CTO"}]}, *stripped])
    assert outbox(engine) == 1
    changed = {**LEGAL, "values": [{"value": {"name": "OOO Lutik"}}]}
    update(engine, [*ORIGINAL, changed, ADDRESS])  # amoCRM's own shape: amoCRM judges it
    assert outbox(engine) == 2
    listed = {**LEGAL, "values": [{"value": [{"name": "OOO Lutik"}]}]}
    error = refusal(lambda: update(engine, [*ORIGINAL, listed, ADDRESS]))
    assert "values[0].value: must be a string, number, boolean or object" in str(error)
    assert outbox(engine) == 2


def test_numbers_no_reader_can_take_are_refused_as_typed_in_sql(
    engine: Engine, contact: int
) -> None:
    """jsonb prints 1e5000 as 5001 digits, which Python's json refuses: such a row stopped every
    push and pull. Typed as SQL text (the review's reproduction), it is refused; 1e30 and a
    19-digit id within bigint are taken."""
    sql = "UPDATE contacts SET custom_fields_values = CAST(:cf AS jsonb) WHERE id = 42"
    for cf, path in (
        ('[{"field_id": 1e5000, "values": [{"value": "x"}]}]', "[0].field_id: must be at most"),
        ('[{"field_id": 1, "values": [{"value": 1e5000}]}]', "[0].values[0].value: must be a num"),
        ('[{"field_id": 1, "values": [{"value": -1e300}]}]', "[0].values[0].value: must be a num"),
        ('[{"field_id": 1, "field_name": 1e5000, "values": null}]', "[0]: holds a number"),
    ):
        error = refusal(lambda cf=cf: run(engine, sql, cf=cf))
        assert f"amosync: contact 42: custom_fields_values{path}" in str(error)
    assert outbox(engine) == 0
    run(engine, sql, cf='[{"field_id": 9223372036854775807, "values": [{"value": 1e30}]}]')
    assert outbox(engine) == 1
