"""lean pull tables: no foreign keys on the six pull-only relation tables, no contact_remote_values

- The six relation tables only pull writes (`contact_custom_field_values`, `contact_tags`,
  `contact_leads`, `contact_customers`, `contact_companies`, `contact_catalog_elements`) lose
  their foreign key to `contacts`. Their guard triggers refuse every local write, pull writes a
  contact's row and its relation rows in one transaction, contacts are never deleted (only a
  never-pushed local contact, which has no such rows), and amoCRM ids never change, so the keys
  guarded nothing; their checks were about a quarter of what PostgreSQL spent storing a first
  full resync (one lookup and row lock in `contacts` per relation row). `contact_chats`,
  `sync_changes` and `sync_conflicts` keep theirs: people insert into them, and a created
  contact's id swap moves their rows by `ON UPDATE CASCADE`.
- `contact_remote_values` goes: pull wrote amoCRM's values of held-back contacts there on every
  page "for push's conflict detection", but push never read it (it reads amoCRM's current
  version right before it merges, on purpose: docs/push.md).

The SQL below is frozen: it is this revision's, and imports nothing from the product. The
downgrade puts both back as 0002 and 0001 made them (the remote values table empty: pull
refills it for held-back contacts as it reads them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 22:20:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PULL_ONLY = (
    "contact_custom_field_values",
    "contact_tags",
    "contact_leads",
    "contact_customers",
    "contact_companies",
    "contact_catalog_elements",
)
OLD_COMMENT = "The contact (contacts.id)."
NEW_COMMENT = (
    "The contact (contacts.id). Not a foreign key: only pull writes these rows, in the "
    "transaction that writes the contact, and contacts are never deleted."
)

UPGRADE_TABLE = r"""
ALTER TABLE "{s}".{t} DROP CONSTRAINT fk_{t}_contact_id;
COMMENT ON COLUMN "{s}".{t}.contact_id IS '{comment}';
"""

DOWNGRADE_TABLE = r"""
ALTER TABLE "{s}".{t} ADD CONSTRAINT fk_{t}_contact_id FOREIGN KEY (contact_id)
    REFERENCES "{s}".contacts (id) ON DELETE CASCADE ON UPDATE CASCADE;
COMMENT ON COLUMN "{s}".{t}.contact_id IS '{comment}';
"""

DROP_REMOTE_VALUES = r"""
DROP TABLE "{s}".contact_remote_values;
"""

CREATE_REMOTE_VALUES = r"""
CREATE TABLE "{s}".contact_remote_values (
    contact_id BIGINT NOT NULL,
    remote_values JSONB NOT NULL,
    remote_updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    pulled_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_contact_remote_values PRIMARY KEY (contact_id),
    CONSTRAINT fk_contact_remote_values_contact_id FOREIGN KEY (contact_id)
        REFERENCES "{s}".contacts (id) ON DELETE CASCADE ON UPDATE CASCADE
);
COMMENT ON TABLE "{s}".contact_remote_values IS 'What amoCRM says about contacts that have unpushed local changes (sync_status pending, conflict or error): pull keeps the local values in contacts and records amoCRM''s here, for push''s conflict detection. The row goes away when the contact is synced again.';
COMMENT ON COLUMN "{s}".contact_remote_values.contact_id IS 'The contact (contacts.id).';
COMMENT ON COLUMN "{s}".contact_remote_values.remote_values IS 'amoCRM''s values of the writable fields (name, first_name, last_name, responsible_user_id, custom_fields_values) in the last version pull read.';
COMMENT ON COLUMN "{s}".contact_remote_values.remote_updated_at IS 'amoCRM''s updated_at of that version.';
COMMENT ON COLUMN "{s}".contact_remote_values.pulled_at IS 'When pull read it.';
"""


def upgrade() -> None:
    s = _schema()
    for table in PULL_ONLY:
        op.execute(UPGRADE_TABLE.format(s=s, t=table, comment=NEW_COMMENT))
    op.execute(DROP_REMOTE_VALUES.format(s=s))


def downgrade() -> None:
    s = _schema()
    op.execute(CREATE_REMOTE_VALUES.format(s=s))
    for table in PULL_ONLY:
        op.execute(DOWNGRADE_TABLE.format(s=s, t=table, comment=OLD_COMMENT))


def _schema() -> str:
    return str(context.config.attributes["schema"])
