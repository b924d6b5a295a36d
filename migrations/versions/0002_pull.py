"""pull: custom field definitions, remote values of held-back fields, full-resync scratch, BI views

- `contact_custom_fields`: the account's contact custom field definitions, cached by pull;
- `contact_remote_values`: amoCRM's values of the writable fields of contacts with unpushed local
  changes (pull keeps the local values in `contacts`; push reads these for conflict detection);
- `sync_full_seen` (unlogged): ids a running full resync has seen, to find the ones that are gone;
- views `contact_phones`, `contact_emails`, `contacts_flat` (see `sync.db.views`).

The SQL of the views is frozen: it is what `sync.db.views` produced on this revision's day
(commit 2a9110a), and the file imports nothing from the product.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = postgresql.TIMESTAMP(timezone=True)

VIEWS = r"""
CREATE VIEW "{s}".contact_phones AS
SELECT v.contact_id, v.field_id, v.position, v.value AS phone, v.enum_id, v.enum_code
FROM "{s}".contact_custom_field_values v
WHERE v.field_code = 'PHONE';

CREATE VIEW "{s}".contact_emails AS
SELECT v.contact_id, v.field_id, v.position, v.value AS email, v.enum_id, v.enum_code
FROM "{s}".contact_custom_field_values v
WHERE v.field_code = 'EMAIL';

CREATE VIEW "{s}".contacts_flat AS
SELECT c.id, c.name, c.first_name, c.last_name, c.responsible_user_id, c.group_id,
       c.created_by, c.updated_by, c.created_at, c.updated_at, c.closest_task_at, c.account_id,
       p.phone, p.enum_code AS phone_enum_code,
       e.email, e.enum_code AS email_enum_code,
       t.tags, co.company_id,
       c.is_deleted, c.deleted_at, c.sync_status, c.synced_at
FROM "{s}".contacts c
LEFT JOIN LATERAL (
    SELECT ph.phone, ph.enum_code FROM "{s}".contact_phones ph
    WHERE ph.contact_id = c.id ORDER BY ph.field_id, ph.position LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT em.email, em.enum_code FROM "{s}".contact_emails em
    WHERE em.contact_id = c.id ORDER BY em.field_id, em.position LIMIT 1
) e ON true
LEFT JOIN LATERAL (
    SELECT array_agg(tg.tag_name ORDER BY tg.tag_name) AS tags FROM "{s}".contact_tags tg
    WHERE tg.contact_id = c.id
) t ON true
LEFT JOIN LATERAL (
    SELECT min(cc.company_id) AS company_id FROM "{s}".contact_companies cc
    WHERE cc.contact_id = c.id
) co ON true;

COMMENT ON VIEW "{s}".contact_phones IS 'One row per phone number of a contact (the PHONE field).';

COMMENT ON COLUMN "{s}".contact_phones.contact_id IS 'The contact (contacts.id).';

COMMENT ON COLUMN "{s}".contact_phones.field_id IS 'amoCRM id of the PHONE field.';

COMMENT ON COLUMN "{s}".contact_phones.position IS 'Order of the number within the field, from 0.';

COMMENT ON COLUMN "{s}".contact_phones.phone IS 'The phone number as entered in amoCRM.';

COMMENT ON COLUMN "{s}".contact_phones.enum_id IS 'amoCRM enum id of the number''s kind.';

COMMENT ON COLUMN "{s}".contact_phones.enum_code IS 'Kind of number: WORK, WORKDD, MOB, FAX, HOME, OTHER.';

COMMENT ON VIEW "{s}".contact_emails IS 'One row per e-mail address of a contact (the EMAIL field).';

COMMENT ON COLUMN "{s}".contact_emails.contact_id IS 'The contact (contacts.id).';

COMMENT ON COLUMN "{s}".contact_emails.field_id IS 'amoCRM id of the EMAIL field.';

COMMENT ON COLUMN "{s}".contact_emails.position IS 'Order of the address within the field, from 0.';

COMMENT ON COLUMN "{s}".contact_emails.email IS 'The e-mail address as entered in amoCRM.';

COMMENT ON COLUMN "{s}".contact_emails.enum_id IS 'amoCRM enum id of the address''s kind.';

COMMENT ON COLUMN "{s}".contact_emails.enum_code IS 'Kind of address: WORK, PRIV, OTHER.';

COMMENT ON VIEW "{s}".contacts_flat IS 'One row per contact with its primary phone and e-mail as columns, for BI tools.';

COMMENT ON COLUMN "{s}".contacts_flat.phone IS 'Primary phone: the first value of the PHONE field.';

COMMENT ON COLUMN "{s}".contacts_flat.phone_enum_code IS 'Kind of the primary phone (WORK, MOB, …).';

COMMENT ON COLUMN "{s}".contacts_flat.email IS 'Primary e-mail: the first value of the EMAIL field.';

COMMENT ON COLUMN "{s}".contacts_flat.email_enum_code IS 'Kind of the primary e-mail (WORK, PRIV, …).';

COMMENT ON COLUMN "{s}".contacts_flat.tags IS 'Tag names, sorted; NULL when the contact has none.';

COMMENT ON COLUMN "{s}".contacts_flat.company_id IS 'The contact''s company (amoCRM allows at most one).';
"""

DROP_VIEWS = r"""
DROP VIEW IF EXISTS "{s}".contacts_flat;

DROP VIEW IF EXISTS "{s}".contact_emails;

DROP VIEW IF EXISTS "{s}".contact_phones;
"""


def upgrade() -> None:
    op.create_table(
        "contact_custom_fields",
        sa.Column("id", sa.BigInteger(), nullable=False, comment="amoCRM custom field id."),
        sa.Column(
            "name",
            sa.Text(),
            nullable=True,
            comment="Field name as shown in amoCRM (may be localised).",
        ),
        sa.Column(
            "code",
            sa.Text(),
            nullable=True,
            comment="Field code such as PHONE or EMAIL; NULL if none.",
        ),
        sa.Column(
            "type",
            sa.Text(),
            nullable=True,
            comment="Field type: text, numeric, select, multitext, date, …",
        ),
        sa.Column("sort", sa.Integer(), nullable=True, comment="Display order in amoCRM."),
        sa.Column(
            "is_api_only",
            sa.Boolean(),
            nullable=True,
            comment="True if the field is only visible through the API.",
        ),
        sa.Column(
            "enums",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The field's choices as amoCRM sends them: [{id, value, sort}], NULL if none.",
        ),
        sa.Column(
            "fetched_at",
            TZ,
            server_default=sa.text("now()"),
            nullable=False,
            comment="When pull last read this definition from amoCRM.",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_custom_fields")),
        comment="Definitions of the account's contact custom fields (GET "
        "/api/v4/contacts/custom_fields), cached by pull and refreshed when an unknown field or "
        "enum appears.",
    )
    op.create_table(
        "contact_remote_values",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column(
            "remote_values",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="amoCRM's values of the writable fields (name, first_name, last_name, "
            "responsible_user_id, custom_fields_values) in the last version pull read.",
        ),
        sa.Column(
            "remote_updated_at",
            TZ,
            nullable=False,
            comment="amoCRM's updated_at of that version.",
        ),
        sa.Column(
            "pulled_at",
            TZ,
            server_default=sa.text("now()"),
            nullable=False,
            comment="When pull read it.",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_remote_values_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contact_remote_values")),
        comment="What amoCRM says about contacts that have unpushed local changes (sync_status "
        "pending, conflict or error): pull keeps the local values in contacts and records "
        "amoCRM's here, for push's conflict detection. The row goes away when the contact is "
        "synced again.",
    )
    op.create_table(
        "sync_full_seen",
        sa.Column(
            "run_id", sa.BigInteger(), nullable=False, comment="The full resync (sync_runs.id)."
        ),
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="A contact amoCRM listed."
        ),
        sa.PrimaryKeyConstraint("run_id", "contact_id", name=op.f("pk_sync_full_seen")),
        prefixes=["UNLOGGED"],
        comment="Scratch list of the contact ids a running full resync has seen in amoCRM, to "
        "find the ones that are gone; emptied when the run ends (unlogged: not crash-safe by "
        "design).",
    )
    _execute(VIEWS)


def downgrade() -> None:
    _execute(DROP_VIEWS)
    op.drop_table("sync_full_seen")
    op.drop_table("contact_remote_values")
    op.drop_table("contact_custom_fields")


def _execute(sql: str) -> None:
    """Each statement of `sql` (they end with `;` and a blank line) on the target schema."""
    schema = str(context.config.attributes["schema"])
    for statement in sql.strip().removesuffix(";").split(";\n\n"):
        if statement.strip():
            op.execute(statement.strip().replace("{s}", schema))
