"""Migrations against a real PostgreSQL: head equals the metadata, idempotent, reversible."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sync.config import DatabaseConfig
from sync.db.engine import create_engine, database_url, sync_origin
from sync.db.migrate import downgrade, head_revision, upgrade
from sync.db.schema import metadata

HEAD = head_revision()  # the newest migration; tests follow it as revisions are added

SCHEMA = "amocrm"

SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = :s ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s ORDER BY 1",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s ORDER BY 1, 2""",
    "triggers": """
        SELECT event_object_table, trigger_name, event_manipulation, action_statement
        FROM information_schema.triggers WHERE trigger_schema = :s ORDER BY 1, 2, 3""",
    "functions": """
        SELECT p.proname, md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = :s ORDER BY 1""",
    "sequences": "SELECT sequence_name, start_value, increment FROM information_schema.sequences "
    "WHERE sequence_schema = :s ORDER BY 1",
    "comments": """
        SELECT c.relname, a.attname, d.description FROM pg_description d
        JOIN pg_class c ON c.oid = d.objoid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
        WHERE n.nspname = :s ORDER BY 1, 2""",
}


def snapshot(db: DatabaseConfig) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return {
                name: [tuple(row) for row in conn.execute(sa.text(sql), {"s": SCHEMA})]
                for name, sql in SNAPSHOT_QUERIES.items()
            }
    finally:
        engine.dispose()


def test_upgrade_head_produces_exactly_the_metadata(blank_db_config: DatabaseConfig) -> None:
    upgrade(blank_db_config)
    # a plain engine: schema translation would qualify the reflected sequence defaults
    engine = sa.create_engine(database_url(blank_db_config))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'SET search_path TO "{SCHEMA}"'))
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": lambda name, type_, _parent: name != "alembic_version",
                },
            )
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_upgrade_twice_changes_nothing(blank_db_config: DatabaseConfig) -> None:
    first = upgrade(blank_db_config)
    before = snapshot(blank_db_config)
    second = upgrade(blank_db_config)
    assert first == (None, HEAD)
    assert second == (HEAD, HEAD)
    assert snapshot(blank_db_config) == before


def test_downgrade_removes_everything_and_upgrade_restores_it(
    blank_db_config: DatabaseConfig,
) -> None:
    upgrade(blank_db_config)
    migrated = snapshot(blank_db_config)
    assert downgrade(blank_db_config, "base") == (HEAD, None)
    empty = snapshot(blank_db_config)
    assert [row[0] for row in empty["columns"]] == ["alembic_version"]
    assert empty["functions"] == empty["triggers"] == empty["sequences"] == []
    upgrade(blank_db_config)
    assert snapshot(blank_db_config) == migrated


# every table and view of the schema (alembic's version table aside), and every column of
# each, that has no comment
UNCOMMENTED = """
    SELECT c.relname, a.attname FROM pg_class c
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind IN ('r', 'v', 'm', 'p')
      AND c.relname <> 'alembic_version'
      AND (obj_description(c.oid, 'pg_class') IS NULL OR col_description(c.oid, a.attnum) IS NULL)
    ORDER BY 1, a.attnum"""


def test_every_table_view_and_column_has_a_comment(db_config: DatabaseConfig) -> None:
    """BI tools show the comments as the data dictionary: the views (contacts_flat is "for BI
    tools") need them as much as the tables (16 of its 22 columns had none: audit)."""
    commented = {(table, column) for table, column, _ in snapshot(db_config)["comments"]}
    for table in metadata.tables.values():
        assert (table.name, None) in commented, f"table {table.name} has no comment"
        for column in table.columns:
            assert (table.name, column.name) in commented, f"{table.name}.{column.name}"
    engine = create_engine(db_config)
    try:
        with engine.connect() as conn:
            views = conn.scalar(
                sa.text("SELECT count(*) FROM pg_views WHERE schemaname = :s"), {"s": SCHEMA}
            )
            missing = conn.execute(sa.text(UNCOMMENTED), {"s": SCHEMA}).all()
    finally:
        engine.dispose()
    assert views == 3
    assert [f"{table}.{column}" for table, column in missing] == []


def test_schema_name_comes_from_config(blank_db_config: DatabaseConfig) -> None:
    other = DatabaseConfig(url=blank_db_config.url, schema="crm_mirror")
    upgrade(other)
    engine = create_engine(other)
    try:
        with engine.connect() as conn:
            tables = set(
                conn.scalars(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'crm_mirror'")
                )
            )
    finally:
        engine.dispose()
    assert {"contacts", "sync_changes", "sync_state", "alembic_version"} <= tables


def test_0004_cuts_sql_parameters_and_detail_out_of_old_run_errors(
    blank_db_config: DatabaseConfig,
) -> None:
    upgrade(blank_db_config, "0003")
    old = (
        "(psycopg.errors.CheckViolation) new row violates check constraint\n"
        "DETAIL:  Failing row contains (ann@example.com, +79990001122).\n"
        "[SQL: UPDATE amocrm.contacts SET name=%(name)s]\n"
        "[parameters: {'name': 'ann@example.com'}]"
    )
    engine = create_engine(blank_db_config)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO amocrm.sync_runs (kind, status, error) "
                    "VALUES ('pull', 'failed', :e), ('push', 'failed', 'amoCRM answered 502')"
                ),
                {"e": old},
            )
        upgrade(blank_db_config)
        with engine.connect() as conn:
            errors = conn.scalars(sa.text("SELECT error FROM amocrm.sync_runs ORDER BY id")).all()
    finally:
        engine.dispose()
    assert errors == [
        "(psycopg.errors.CheckViolation) new row violates check constraint",
        "amoCRM answered 502",
    ]


# (field id, code, type, enums) as pull cached them
DEFINITIONS_0005 = [
    (1, "PHONE", "multitext", [{"id": 11, "value": "WORK"}, {"id": 12, "value": "MOB"}]),
    (2, None, "select", [{"id": 21, "value": "Реклама"}, {"id": 22, "value": "Новое имя"}]),
    (3, None, "multiselect", [{"id": 31, "value": "CRM"}, {"id": 32, "value": "Обучение"}]),
    (4, None, "radiobutton", [{"id": 41, "value": "Звонок"}]),
    (5, None, "text", None),
]
# (contact, field, position, type, value, enum_id, enum_code before, enum_code after 0005)
ROWS_0005 = [
    (1, 1, 0, "multitext", "+7 1", 11, "WORK", "WORK"),  # amoCRM's code
    (1, 1, 1, "multitext", "+7 2", 12, "MOB", "MOB"),  # a code is its option's label: kept
    (1, 2, 0, "select", "Реклама", 21, "Реклама", None),  # the label copied by the old pull
    (1, 3, 0, "multiselect", "CRM", 31, "CRM", None),
    (1, 3, 1, "multiselect", "Обучение", 32, "Обучение", None),
    (1, 4, 0, "radiobutton", "Звонок", 41, "Звонок", None),
    (1, 5, 0, "text", "x", None, None, None),
    (2, 2, 0, "select", "Старое имя", 22, "Старое имя", None),  # option renamed since
    (3, 2, 0, "select", None, 21, "Реклама", None),  # a held local `{"enum_id": 21}`
    (4, 2, 0, "select", "Реклама", 21, "VIP", "VIP"),  # not a label: not the copy, kept
    (4, 2, 1, "select", "Реклама", None, "Реклама", "Реклама"),  # no enum_id: never copied
]


def test_0005_clears_only_the_labels_the_old_pull_copied_into_enum_code(
    blank_db_config: DatabaseConfig,
) -> None:
    upgrade(blank_db_config, "0004")
    engine = create_engine(blank_db_config)
    try:
        with engine.begin() as conn:
            sync_origin(conn)
            _insert_0005_rows(conn)
        upgrade(blank_db_config)
        with engine.connect() as conn:
            codes = conn.execute(
                sa.text(
                    "SELECT contact_id, field_id, position, enum_code "
                    "FROM amocrm.contact_custom_field_values ORDER BY 1, 2, 3"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in codes] == [(c, f, p, after) for c, f, p, *_, after in ROWS_0005]


def _insert_0005_rows(conn: sa.Connection) -> None:
    conn.execute(
        sa.text("INSERT INTO amocrm.contacts (id, name) SELECT g, 'c' FROM generate_series(1, 4) g")
    )
    for field_id, code, kind, enums in DEFINITIONS_0005:
        options = None if enums is None else json.dumps(enums)
        conn.execute(
            sa.text(
                "INSERT INTO amocrm.contact_custom_fields (id, code, type, enums) "
                "VALUES (:i, :c, :t, CAST(:e AS jsonb))"
            ),
            {"i": field_id, "c": code, "t": kind, "e": options},
        )
    for cid, field_id, pos, kind, value, enum_id, before, _ in ROWS_0005:
        conn.execute(
            sa.text(
                "INSERT INTO amocrm.contact_custom_field_values (contact_id, field_id, position, "
                "field_type, value, enum_id, enum_code) VALUES (:c, :f, :p, :t, :v, :i, :e)"
            ),
            {"c": cid, "f": field_id, "p": pos, "t": kind, "v": value, "i": enum_id, "e": before},
        )


def test_0005_downgrade_gives_back_0004s_schema(blank_db_config: DatabaseConfig) -> None:
    upgrade(blank_db_config, "0004")
    before = snapshot(blank_db_config)
    upgrade(blank_db_config, "0005")
    assert snapshot(blank_db_config)["comments"] != before["comments"]
    assert downgrade(blank_db_config, "0004") == ("0005", "0004")
    assert snapshot(blank_db_config) == before


PULL_ONLY = (
    "contact_custom_field_values",
    "contact_tags",
    "contact_leads",
    "contact_customers",
    "contact_companies",
    "contact_catalog_elements",
)


def test_0007_drops_the_pull_only_foreign_keys_and_the_remote_values(
    blank_db_config: DatabaseConfig,
) -> None:
    upgrade(blank_db_config, "0006")
    before = snapshot(blank_db_config)
    upgrade(blank_db_config, "0007")
    after = snapshot(blank_db_config)
    keys = {(table, name) for table, name, sql in after["constraints"] if "FOREIGN KEY" in sql}
    assert keys == {
        ("contact_chats", "fk_contact_chats_contact_id"),
        ("sync_changes", "fk_sync_changes_contact_id"),
        ("sync_conflicts", "fk_sync_conflicts_contact_id"),
    }
    tables = {table for table, *_ in after["columns"]}
    assert "contact_remote_values" not in tables
    assert PULL_ONLY[0] in tables
    assert downgrade(blank_db_config, "0006") == ("0007", "0006")
    assert snapshot(blank_db_config) == before


def test_0016_turns_every_stored_json_null_into_sql_null_as_the_sync(
    blank_db_config: DatabaseConfig,
) -> None:
    """Rows written by the old code: a field without choices, a conflict over an empty field
    (settled: its guard refuses local updates), amoCRM's empty custom fields written back, a
    catalog link, an outbox row. After 0016 each holds SQL NULL, nothing was captured as a
    local edit and no status moved."""
    upgrade(blank_db_config, "0015")
    engine = create_engine(blank_db_config)
    null = "'null'::jsonb"
    try:
        with engine.begin() as conn:
            sync_origin(conn)
            for statement in (
                "INSERT INTO amocrm.contacts (id, name, custom_fields_values) "
                f"VALUES (1, 'a', {null})",
                "INSERT INTO amocrm.contact_custom_fields (id, type, enums) "
                f"VALUES (7, 'text', {null})",
                "INSERT INTO amocrm.contact_catalog_elements (contact_id, catalog_id, element_id, "
                f"metadata) VALUES (1, 2, 3, {null})",
                "INSERT INTO amocrm.sync_changes (contact_id, kind, new_values, base_values) "
                f"VALUES (1, 'update', {null}, {null})",
                "INSERT INTO amocrm.sync_conflicts (contact_id, field, base_value, local_value, "
                f"remote_value, policy, winner, resolved_at) VALUES (1, 'last_name', {null}, "
                f"{null}, {null}, 'local_wins', 'local', now())",
            ):
                conn.execute(sa.text(statement))
        upgrade(blank_db_config)
        with engine.connect() as conn:
            # IS NULL: Python reads the JSON value null as None too
            values = conn.execute(
                sa.text(
                    "SELECT c.sync_status, c.custom_fields_values IS NULL, f.enums IS NULL, "
                    "e.metadata IS NULL, s.new_values IS NULL, s.base_values IS NULL, "
                    "k.base_value IS NULL, k.local_value IS NULL, k.remote_value IS NULL "
                    "FROM amocrm.contacts c, amocrm.contact_custom_fields f, "
                    "amocrm.contact_catalog_elements e, amocrm.sync_changes s, "
                    "amocrm.sync_conflicts k"
                )
            ).one()
            changes = conn.scalar(sa.text("SELECT count(*) FROM amocrm.sync_changes"))
    finally:
        engine.dispose()
    assert tuple(values) == ("synced", *[True] * 8)
    assert changes == 1  # the old row only: nothing captured


def test_0016_downgrade_gives_back_0015s_schema(blank_db_config: DatabaseConfig) -> None:
    upgrade(blank_db_config, "0015")
    before = snapshot(blank_db_config)
    upgrade(blank_db_config, "0016")
    assert snapshot(blank_db_config)["comments"] != before["comments"]
    assert downgrade(blank_db_config, "0015") == ("0016", "0015")
    assert snapshot(blank_db_config) == before


# (id, status, error, outbox kinds) as the old code left them; the status 0017 leaves
ROWS_0017 = [
    (1, "pending", None, (), "synced"),  # its only item, a chat link, went out
    (2, "pending", None, ("chat_link",), "synced"),  # a link still to send: not an edit
    (3, "pending", None, ("update",), "pending"),  # a real edit waiting
    (4, "pending", None, ("update", "chat_link"), "pending"),
    (5, "error", "the contact was not found in amoCRM", (), "error"),
    (6, "conflict", None, ("update",), "conflict"),
    (7, "synced", None, (), "synced"),
    (-1, "pending", "sent, not confirmed yet", ("create",), "pending"),  # a create waiting
]


def test_0017_settles_contacts_the_old_code_left_pending_with_only_a_chat_link(
    blank_db_config: DatabaseConfig,
) -> None:
    """Older code left a contact `pending` for good once its only unsent item, a chat link,
    was pushed or withdrawn. 0017 gives such rows what `settle_after_links` gives them now:
    `synced` when no field edit waits; real edits, errors, conflicts and creates keep theirs."""
    upgrade(blank_db_config, "0016")
    engine = create_engine(blank_db_config)
    try:
        with engine.begin() as conn:
            sync_origin(conn)
            for cid, status, error, kinds, _ in ROWS_0017:
                conn.execute(
                    sa.text(
                        "INSERT INTO amocrm.contacts (id, name, sync_status, sync_error, "
                        "synced_at) VALUES (:c, 'n', :s, :e, '2026-01-01Z')"
                    ),
                    {"c": cid, "s": status, "e": error},
                )
                for kind in kinds:
                    link = -abs(cid) if kind == "chat_link" else None
                    if link is not None:
                        conn.execute(
                            sa.text("INSERT INTO amocrm.contact_chats VALUES (:l, :c, :g)"),
                            {"l": link, "c": cid, "g": f"chat-{cid}"},
                        )
                    conn.execute(
                        sa.text(
                            "INSERT INTO amocrm.sync_changes (contact_id, kind, chat_link_id, "
                            'new_values) VALUES (:c, :k, :l, \'{"name": "x"}\')'
                        ),
                        {"c": cid, "k": kind, "l": link},
                    )
        upgrade(blank_db_config)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT id, sync_status, sync_error, synced_at > '2026-01-01Z' "
                    "FROM amocrm.contacts ORDER BY id"
                )
            ).all()
            outbox = conn.scalar(sa.text("SELECT count(*) FROM amocrm.sync_changes"))
    finally:
        engine.dispose()
    settled = {cid for cid, status, *_, after in ROWS_0017 if status != after}
    assert settled == {1, 2}
    assert [tuple(r) for r in rows] == [
        (cid, after, None if cid in settled else error, cid in settled)
        for cid, _, error, _, after in sorted(ROWS_0017)
    ]
    assert outbox == sum(len(kinds) for *_, kinds, _ in ROWS_0017)  # the link still goes out
