"""pull: custom field definitions, remote values of held-back fields, full-resync scratch, BI views

- `contact_custom_fields`: the account's contact custom field definitions, cached by pull;
- `contact_remote_values`: amoCRM's values of the writable fields of contacts with unpushed local
  changes (pull keeps the local values in `contacts`; push reads these for conflict detection);
- `sync_full_seen` (unlogged): ids a running full resync has seen, to find the ones that are gone;
- views `contact_phones`, `contact_emails`, `contacts_flat` (see `sync.db.views`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from sync.db import views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = postgresql.TIMESTAMP(timezone=True)


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
    for statement in views.create_statements(context.config.attributes["schema"]):
        op.execute(statement)


def downgrade() -> None:
    for statement in views.drop_statements(context.config.attributes["schema"]):
        op.execute(statement)
    op.drop_table("sync_full_seen")
    op.drop_table("contact_remote_values")
    op.drop_table("contact_custom_fields")
