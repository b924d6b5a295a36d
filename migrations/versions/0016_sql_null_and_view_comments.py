"""jsonb "none" is SQL NULL, not the JSON value null; every column of contacts_flat has a comment

Pull wrote `contact_custom_fields.enums` of a field without choices as the JSON value null
(SQLAlchemy's default for Python's None in a jsonb column), though the column's comment says
"NULL if none": `WHERE enums IS NULL` found nothing, and `jsonb_array_elements(f.enums)` failed
for the whole table (black-box audit). Push stored a conflict's empty base, local or remote value,
and amoCRM's empty `custom_fields_values` it wrote back, the same way. The code now writes SQL
NULL; this revision turns the JSON nulls already stored into SQL NULL, in every nullable jsonb
column of the schema (`sync_state.value` is NOT NULL and holds objects only). Python reads both
as None, so nothing the sync does changes. The updates run as the sync (`amosync.origin`), only
for their own statements: they are no local edit to capture, and the guards of the pull-only
tables and of settled conflicts let them through.

The view `contacts_flat` ("for BI tools") had 16 of its 22 columns without a comment: the columns
it takes from `contacts` now carry the same comments as there. The conflicts' value columns and
`contact_catalog_elements.metadata` say what their NULL means.

Downgrade puts back 0014's comments (the contacts_flat columns without one). The JSON nulls are
not put back: they were never data, and the code writes SQL NULL anyway.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 20:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

AS_SYNC = "SELECT set_config('amosync.origin', 'sync', true)"
AS_BEFORE = "SELECT set_config('amosync.origin', '', true)"

# every nullable jsonb column, as of this revision
JSONB_COLUMNS = (
    ("contacts", "custom_fields_values"),
    ("contact_catalog_elements", "metadata"),
    ("contact_custom_fields", "enums"),
    ("sync_changes", "new_values"),
    ("sync_changes", "base_values"),
    ("sync_conflicts", "base_value"),
    ("sync_conflicts", "local_value"),
    ("sync_conflicts", "remote_value"),
)

# (table or view, column, comment after this revision, comment before it: None = none)
COMMENTS = (
    ("contacts_flat", "id",
     "amoCRM contact id; negative while a locally inserted contact awaits push.", None),
    ("contacts_flat", "name", "Full name as shown in amoCRM.", None),
    ("contacts_flat", "first_name", "First name.", None),
    ("contacts_flat", "last_name", "Last name.", None),
    ("contacts_flat", "responsible_user_id", "amoCRM user responsible for the contact.", None),
    ("contacts_flat", "group_id", "Group of the responsible user (read-only).", None),
    ("contacts_flat", "created_by", "amoCRM user who created the contact (read-only).", None),
    ("contacts_flat", "updated_by", "amoCRM user who last updated it (read-only).", None),
    ("contacts_flat", "created_at", "Created in amoCRM (read-only).", None),
    ("contacts_flat", "updated_at",
     "Last updated in amoCRM, 1-second resolution (read-only).", None),
    ("contacts_flat", "closest_task_at", "Due time of the closest open task (read-only).", None),
    ("contacts_flat", "account_id", "amoCRM account id (read-only).", None),
    ("contacts_flat", "is_deleted",
     "True once the contact was deleted in amoCRM (rows are never removed).", None),
    ("contacts_flat", "deleted_at", "When the sync saw the deletion in amoCRM.", None),
    ("contacts_flat", "sync_status",
     "synced | pending (local change awaiting push) | conflict | error.", None),
    ("contacts_flat", "synced_at", "When the row last matched amoCRM (pull or push).", None),
    ("sync_conflicts", "base_value",
     "The value both sides started from; NULL when the field was empty.",
     "The value both sides started from."),
    ("sync_conflicts", "local_value",
     "The value edited in PostgreSQL; NULL when it was emptied there.",
     "The value edited in PostgreSQL."),
    ("sync_conflicts", "remote_value",
     "The value edited in amoCRM; NULL when it was emptied there.",
     "The value edited in amoCRM."),
    ("contact_catalog_elements", "metadata",
     "amoCRM's metadata object for the link, as sent; NULL when it sent none.",
     "amoCRM's metadata object for the link, as sent."),
)  # fmt: skip


def upgrade() -> None:
    schema = _schema()
    op.execute(AS_SYNC)
    for table, column in JSONB_COLUMNS:
        op.execute(
            f"UPDATE \"{schema}\".{table} SET {column} = NULL WHERE {column} = 'null'::jsonb"
        )
    op.execute(AS_BEFORE)
    _comment(0)


def downgrade() -> None:
    _comment(1)


def _comment(which: int) -> None:
    schema = _schema()
    for table, column, *texts in COMMENTS:
        text = texts[which]
        value = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
        op.execute(f'COMMENT ON COLUMN "{schema}".{table}.{column} IS {value}')


def _schema() -> str:
    return str(context.config.attributes["schema"])
