"""contacts, relations, outbox, operations tables, change capture

The first schema: every table of CONTRACT.md with comments, the negative-id sequences for
locally inserted rows, and the change-capture functions and triggers.

The SQL is frozen: it is what `sync.db.capture` produced on this revision's day (commit 6dfe209),
and the file imports nothing from the product. The triggers of that day call their function for
every write and the function returns early for the sync's own; the WHEN clause that skips them
before the call came later, with revision 0008.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 17:29:24.229454
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


LOCAL_ID_SEQUENCES = ("contacts_local_id_seq", "contact_chats_local_id_seq")

CAPTURE = r"""
CREATE FUNCTION "{s}".amosync_contact_before_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
    changed_new jsonb := '{}';
    changed_old jsonb := '{}';
    col text;
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN NEW;
    END IF;
    FOREACH col IN ARRAY ARRAY['id', 'group_id', 'created_by', 'updated_by', 'created_at', 'updated_at', 'closest_task_at', 'account_id', 'is_deleted', 'deleted_at', 'sync_status', 'sync_error', 'synced_at'] LOOP
        IF old_row -> col IS DISTINCT FROM new_row -> col THEN
            RAISE EXCEPTION 'amosync: contacts.% of contact % cannot be edited: it mirrors amoCRM',
                col, OLD.id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Writable columns: name, first_name, last_name, '
                             'responsible_user_id, custom_fields_values.';
        END IF;
    END LOOP;
    FOREACH col IN ARRAY ARRAY['name', 'first_name', 'last_name', 'responsible_user_id', 'custom_fields_values'] LOOP
        IF old_row -> col IS DISTINCT FROM new_row -> col THEN
            changed_new := changed_new || jsonb_build_object(col, new_row -> col);
            changed_old := changed_old || jsonb_build_object(col, old_row -> col);
        END IF;
    END LOOP;
    IF changed_new = '{}' THEN
        RETURN NEW;
    END IF;
    IF OLD.is_deleted THEN
        RAISE EXCEPTION 'amosync: contact % was deleted in amoCRM and cannot be edited', OLD.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Restore it in amoCRM first; the next pull brings it back.';
    END IF;
    INSERT INTO "{s}".sync_changes (contact_id, kind, new_values, base_values, base_updated_at)
    VALUES (OLD.id, CASE WHEN OLD.id < 0 THEN 'create' ELSE 'update' END,
            changed_new, changed_old, OLD.updated_at);
    NEW.sync_status := 'pending';
    NEW.sync_error := NULL;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION "{s}".amosync_contact_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_row jsonb := to_jsonb(NEW);
    col text;
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN NEW;
    END IF;
    IF NEW.id >= 0 THEN
        RAISE EXCEPTION 'amosync: contact ids are assigned by amoCRM; insert without an id'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The row gets a temporary negative id until push creates it in amoCRM.';
    END IF;
    FOREACH col IN ARRAY ARRAY['group_id', 'created_by', 'updated_by', 'created_at',
                               'updated_at', 'closest_task_at', 'account_id', 'deleted_at',
                               'sync_error', 'synced_at'] LOOP
        IF new_row -> col <> 'null'::jsonb THEN
            RAISE EXCEPTION 'amosync: contacts.% is set by amoCRM; leave it out of the INSERT', col
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    IF NEW.is_deleted THEN
        RAISE EXCEPTION 'amosync: a new contact cannot be inserted as deleted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.sync_status := 'pending';
    RETURN NEW;
END
$fn$;

CREATE FUNCTION "{s}".amosync_contact_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN NULL;
    END IF;
    INSERT INTO "{s}".sync_changes (contact_id, kind, new_values)
    SELECT NEW.id, 'create', jsonb_object_agg(key, value)
    FROM jsonb_each(to_jsonb(NEW))
    WHERE key = ANY (ARRAY['name', 'first_name', 'last_name', 'responsible_user_id', 'custom_fields_values']) AND value <> 'null'::jsonb;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION "{s}".amosync_contact_before_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' OR OLD.id < 0 THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'amosync: DELETE of contact % refused: the amoCRM API cannot delete contacts',
        OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Delete the contact in amoCRM; the next pull marks the row is_deleted.';
END
$fn$;

CREATE FUNCTION "{s}".amosync_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: it mirrors amoCRM, which cannot delete '
                    'contacts', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;

CREATE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.id < 0 THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND OLD.id < 0 THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'amosync: chat link ids are assigned by amoCRM; insert without an id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'amosync: % of chat link % refused: only new links can be made from the '
                    'database', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Change or remove chat links in amoCRM.';
END
$fn$;

CREATE FUNCTION "{s}".amosync_chat_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN NULL;
    END IF;
    INSERT INTO "{s}".sync_changes (contact_id, kind, chat_link_id, new_values)
    VALUES (NEW.contact_id, 'chat_link', NEW.id, jsonb_build_object('chat_id', NEW.chat_id));
    RETURN NULL;
END
$fn$;

CREATE FUNCTION "{s}".amosync_refuse_relation_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'amosync: % on % refused: the table mirrors amoCRM', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[0];
END
$fn$;

CREATE FUNCTION "{s}".amosync_announce_request() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('amosync_{s}_requests', NEW.id::text);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER amosync_capture_update BEFORE UPDATE ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_update();

CREATE TRIGGER amosync_check_insert BEFORE INSERT ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_insert();

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_after_insert();

CREATE TRIGGER amosync_guard_delete BEFORE DELETE ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_delete();

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".contacts FOR EACH STATEMENT EXECUTE FUNCTION "{s}".amosync_refuse_truncate();

CREATE TRIGGER amosync_check_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_chats FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_chat_before_write();

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contact_chats FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_chat_after_insert();

CREATE TRIGGER amosync_announce AFTER INSERT ON "{s}".sync_requests FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_announce_request();

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_custom_field_values FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('edit contacts.custom_fields_values instead');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_tags FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('tags are read-only in this version of the sync');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_leads FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to leads are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_customers FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to customers are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_companies FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to companies are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_catalog_elements FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to catalog elements are managed in amoCRM');
"""

DROP_CAPTURE = r"""
DROP FUNCTION IF EXISTS "{s}".amosync_contact_before_update() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_contact_before_insert() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_contact_after_insert() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_contact_before_delete() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_refuse_truncate() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_chat_before_write() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_chat_after_insert() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_refuse_relation_write() CASCADE;

DROP FUNCTION IF EXISTS "{s}".amosync_announce_request() CASCADE;
"""


def upgrade() -> None:
    for name in LOCAL_ID_SEQUENCES:
        op.execute(sa.schema.CreateSequence(sa.Sequence(name, start=-1, increment=-1, maxvalue=-1)))
    op.create_table(
        "contacts",
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text("nextval('contacts_local_id_seq')"),
            nullable=False,
            comment="amoCRM contact id; negative while a locally inserted contact awaits push.",
        ),
        sa.Column("name", sa.Text(), nullable=True, comment="Full name as shown in amoCRM."),
        sa.Column("first_name", sa.Text(), nullable=True, comment="First name."),
        sa.Column("last_name", sa.Text(), nullable=True, comment="Last name."),
        sa.Column(
            "responsible_user_id",
            sa.BigInteger(),
            nullable=True,
            comment="amoCRM user responsible for the contact.",
        ),
        sa.Column(
            "group_id",
            sa.BigInteger(),
            nullable=True,
            comment="Group of the responsible user (read-only).",
        ),
        sa.Column(
            "created_by",
            sa.BigInteger(),
            nullable=True,
            comment="amoCRM user who created the contact (read-only).",
        ),
        sa.Column(
            "updated_by",
            sa.BigInteger(),
            nullable=True,
            comment="amoCRM user who last updated it (read-only).",
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="Created in amoCRM (read-only).",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="Last updated in amoCRM, 1-second resolution (read-only).",
        ),
        sa.Column(
            "closest_task_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="Due time of the closest open task (read-only).",
        ),
        sa.Column(
            "account_id", sa.BigInteger(), nullable=True, comment="amoCRM account id (read-only)."
        ),
        sa.Column(
            "custom_fields_values",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="Custom field values in amoCRM's own JSON shape; NULL when none. One row per value in contact_custom_field_values.",
        ),
        sa.Column(
            "is_deleted",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="True once the contact was deleted in amoCRM (rows are never removed).",
        ),
        sa.Column(
            "deleted_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the sync saw the deletion in amoCRM.",
        ),
        sa.Column(
            "sync_status",
            sa.Text(),
            server_default=sa.text("'synced'"),
            nullable=False,
            comment="synced | pending (local change awaiting push) | conflict | error.",
        ),
        sa.Column(
            "sync_error",
            sa.Text(),
            nullable=True,
            comment="amoCRM's message when sync_status = 'error'.",
        ),
        sa.Column(
            "synced_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the row last matched amoCRM (pull or push).",
        ),
        sa.CheckConstraint(
            "sync_status IN ('synced', 'pending', 'conflict', 'error')",
            name=op.f("ck_contacts_sync_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        comment="One row per amoCRM contact. UPDATE name, first_name, last_name, responsible_user_id or custom_fields_values to change it in amoCRM; INSERT without an id to create one. DELETE is refused: the amoCRM API cannot delete contacts.",
    )
    op.create_index(
        "ix_contacts_responsible_user_id", "contacts", ["responsible_user_id"], unique=False
    )
    op.create_index(
        "ix_contacts_unsynced",
        "contacts",
        ["sync_status"],
        unique=False,
        postgresql_where=sa.text("sync_status <> 'synced'"),
    )
    op.create_index("ix_contacts_updated_at", "contacts", ["updated_at", "id"], unique=False)
    op.create_table(
        "sync_requests",
        sa.Column(
            "id", sa.BigInteger(), sa.Identity(always=False), nullable=False, comment="Request id."
        ),
        sa.Column(
            "kind",
            sa.Text(),
            server_default=sa.text("'full'"),
            nullable=False,
            comment="What is asked for: full (a full resync).",
        ),
        sa.Column(
            "requested_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When it was asked for.",
        ),
        sa.Column(
            "requested_by",
            sa.Text(),
            server_default=sa.text("current_user"),
            nullable=False,
            comment="Database role that asked.",
        ),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the sync started on it.",
        ),
        sa.Column(
            "finished_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When it was done.",
        ),
        sa.Column(
            "status",
            sa.Text(),
            server_default=sa.text("'pending'"),
            nullable=False,
            comment="pending | running | done | failed.",
        ),
        sa.Column(
            "run_id", sa.BigInteger(), nullable=True, comment="The sync_runs row that served it."
        ),
        sa.Column("error", sa.Text(), nullable=True, comment="Why it failed."),
        sa.CheckConstraint("kind IN ('full')", name=op.f("ck_sync_requests_kind")),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed')",
            name=op.f("ck_sync_requests_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_requests")),
        comment="INSERT INTO sync_requests (kind) VALUES ('full') asks the daemon for a full resync.",
    )
    op.create_index(
        "ix_sync_requests_pending",
        "sync_requests",
        ["requested_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "sync_runs",
        sa.Column(
            "id", sa.BigInteger(), sa.Identity(always=False), nullable=False, comment="Run id."
        ),
        sa.Column("kind", sa.Text(), nullable=False, comment="pull | full | push."),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the run started.",
        ),
        sa.Column(
            "finished_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When it ended; NULL while running or if it crashed.",
        ),
        sa.Column(
            "status",
            sa.Text(),
            server_default=sa.text("'running'"),
            nullable=False,
            comment="running | succeeded | failed.",
        ),
        sa.Column(
            "fetched",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Contacts read.",
        ),
        sa.Column(
            "upserted",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Rows written.",
        ),
        sa.Column(
            "deleted",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Tombstoned.",
        ),
        sa.Column(
            "pushed",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Sent to amoCRM.",
        ),
        sa.Column(
            "conflicts",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Conflicts.",
        ),
        sa.Column(
            "errors",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Rows rejected.",
        ),
        sa.Column(
            "requests",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="API calls.",
        ),
        sa.Column("error", sa.Text(), nullable=True, comment="Why the run failed."),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_sync_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        comment="One row per pull, full resync or push run.",
    )
    op.create_index(
        "ix_sync_runs_kind_started_at", "sync_runs", ["kind", "started_at"], unique=False
    )
    op.create_table(
        "sync_state",
        sa.Column(
            "key", sa.Text(), nullable=False, comment="State name: a cursor, the OAuth tokens, …"
        ),
        sa.Column(
            "value", postgresql.JSONB(astext_type=sa.Text()), nullable=False, comment="State value."
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the value was last written.",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sync_state")),
        comment="Cursors and tokens of the sync (keep this table private: it holds OAuth tokens).",
    )
    op.create_table(
        "contact_catalog_elements",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column(
            "catalog_id", sa.BigInteger(), nullable=False, comment="amoCRM catalog (list) id."
        ),
        sa.Column("element_id", sa.BigInteger(), nullable=False, comment="Catalog element id."),
        sa.Column(
            "quantity",
            sa.Numeric(),
            nullable=True,
            comment="Quantity of the element linked to the contact.",
        ),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="amoCRM's metadata object for the link, as sent.",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_catalog_elements_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "contact_id", "catalog_id", "element_id", name=op.f("pk_contact_catalog_elements")
        ),
        comment="Catalog (list) elements linked to contacts; replaced on every pull of the contact.",
    )
    op.create_index(
        "ix_contact_catalog_elements_element_id",
        "contact_catalog_elements",
        ["element_id"],
        unique=False,
    )
    op.create_table(
        "contact_chats",
        sa.Column(
            "id",
            sa.BigInteger(),
            server_default=sa.text("nextval('contact_chats_local_id_seq')"),
            nullable=False,
            comment="amoCRM chat link id; negative while a locally inserted link awaits push.",
        ),
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("chat_id", sa.Text(), nullable=False, comment="amoCRM chat UUID."),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_chats_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_chats")),
        sa.UniqueConstraint("chat_id", name=op.f("uq_contact_chats_chat_id")),
        comment="Chats linked to contacts (a chat belongs to one contact). INSERT (contact_id, chat_id) to link a chat in amoCRM.",
    )
    op.create_index("ix_contact_chats_contact_id", "contact_chats", ["contact_id"], unique=False)
    op.create_table(
        "contact_companies",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("company_id", sa.BigInteger(), nullable=False, comment="amoCRM company id."),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_companies_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "company_id", name=op.f("pk_contact_companies")),
        comment="Links from contacts to amoCRM companies; replaced on every pull of the contact.",
    )
    op.create_index(
        "ix_contact_companies_company_id", "contact_companies", ["company_id"], unique=False
    )
    op.create_table(
        "contact_custom_field_values",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("field_id", sa.BigInteger(), nullable=False, comment="amoCRM custom field id."),
        sa.Column(
            "field_code",
            sa.Text(),
            nullable=True,
            comment="Field code such as PHONE or EMAIL; NULL if none.",
        ),
        sa.Column(
            "field_name",
            sa.Text(),
            nullable=True,
            comment="Field name as shown in amoCRM (may be localised).",
        ),
        sa.Column(
            "field_type",
            sa.Text(),
            nullable=True,
            comment="Field type: text, numeric, select, multitext, date, …",
        ),
        sa.Column(
            "position",
            sa.Integer(),
            nullable=False,
            comment="Order of the value within the field, from 0.",
        ),
        sa.Column(
            "value",
            sa.Text(),
            nullable=True,
            comment="The value as text (dates as ISO 8601, checkboxes as true/false).",
        ),
        sa.Column(
            "enum_id",
            sa.BigInteger(),
            nullable=True,
            comment="Enum id for select/multiselect/multitext values.",
        ),
        sa.Column(
            "enum_code",
            sa.Text(),
            nullable=True,
            comment="Enum code (WORK, MOB, …) or label, where amoCRM has one.",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_custom_field_values_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "contact_id", "field_id", "position", name=op.f("pk_contact_custom_field_values")
        ),
        comment="One row per custom field value of a contact; replaced on every pull of the contact.",
    )
    op.create_index(
        "ix_contact_custom_field_values_field_code",
        "contact_custom_field_values",
        ["field_code"],
        unique=False,
    )
    op.create_index(
        "ix_contact_custom_field_values_field_id",
        "contact_custom_field_values",
        ["field_id"],
        unique=False,
    )
    op.create_table(
        "contact_customers",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("customer_id", sa.BigInteger(), nullable=False, comment="amoCRM customer id."),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_customers_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "customer_id", name=op.f("pk_contact_customers")),
        comment="Links from contacts to amoCRM customers; replaced on every pull of the contact.",
    )
    op.create_index(
        "ix_contact_customers_customer_id", "contact_customers", ["customer_id"], unique=False
    )
    op.create_table(
        "contact_leads",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("lead_id", sa.BigInteger(), nullable=False, comment="amoCRM lead id."),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_leads_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "lead_id", name=op.f("pk_contact_leads")),
        comment="Links from contacts to amoCRM leads; replaced on every pull of the contact.",
    )
    op.create_index("ix_contact_leads_lead_id", "contact_leads", ["lead_id"], unique=False)
    op.create_table(
        "contact_tags",
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("tag_id", sa.BigInteger(), nullable=False, comment="amoCRM tag id."),
        sa.Column("tag_name", sa.Text(), nullable=True, comment="Tag name."),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_tags_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "tag_id", name=op.f("pk_contact_tags")),
        comment="Tags of contacts; replaced on every pull of the contact.",
    )
    op.create_index("ix_contact_tags_tag_name", "contact_tags", ["tag_name"], unique=False)
    op.create_table(
        "sync_changes",
        sa.Column(
            "id",
            sa.BigInteger(),
            sa.Identity(always=False),
            nullable=False,
            comment="Capture order.",
        ),
        sa.Column(
            "contact_id",
            sa.BigInteger(),
            nullable=False,
            comment="The contact changed (negative for a contact not yet created in amoCRM).",
        ),
        sa.Column("kind", sa.Text(), nullable=False, comment="update | create | chat_link."),
        sa.Column(
            "new_values",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="Changed writable fields and their new local values.",
        ),
        sa.Column(
            "base_values",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The same fields' values before the edit: the base of the three-way merge.",
        ),
        sa.Column(
            "base_updated_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="contacts.updated_at (amoCRM's version) the edit was made against.",
        ),
        sa.Column(
            "chat_link_id",
            sa.BigInteger(),
            nullable=True,
            comment="contact_chats.id for a chat_link change.",
        ),
        sa.Column(
            "changed_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
            comment="When the local edit was made.",
        ),
        sa.CheckConstraint(
            "kind IN ('update', 'create', 'chat_link')", name=op.f("ck_sync_changes_kind")
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_sync_changes_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_changes")),
        comment="Outbox of local edits captured by triggers, consumed by push. The sync's own writes are never captured.",
    )
    op.create_index(
        "ix_sync_changes_contact_id", "sync_changes", ["contact_id", "id"], unique=False
    )
    op.create_table(
        "sync_conflicts",
        sa.Column(
            "id", sa.BigInteger(), sa.Identity(always=False), nullable=False, comment="Conflict id."
        ),
        sa.Column(
            "contact_id", sa.BigInteger(), nullable=False, comment="The contact (contacts.id)."
        ),
        sa.Column("field", sa.Text(), nullable=False, comment="The field changed on both sides."),
        sa.Column(
            "base_value",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The value both sides started from.",
        ),
        sa.Column(
            "local_value",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The value edited in PostgreSQL.",
        ),
        sa.Column(
            "remote_value",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The value edited in amoCRM.",
        ),
        sa.Column(
            "local_changed_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the local edit was made.",
        ),
        sa.Column(
            "remote_updated_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="amoCRM's updated_at of the remote edit.",
        ),
        sa.Column(
            "detected_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When push found the conflict.",
        ),
        sa.Column(
            "policy",
            sa.Text(),
            nullable=False,
            comment="Policy applied: newest_wins, remote_wins, …",
        ),
        sa.Column(
            "winner",
            sa.Text(),
            nullable=True,
            comment="local | remote; NULL while waiting for a person (policy manual). Set it by SQL to settle the conflict.",
        ),
        sa.Column(
            "resolved_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the winner was applied.",
        ),
        sa.CheckConstraint("winner IN ('local', 'remote')", name=op.f("ck_sync_conflicts_winner")),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_sync_conflicts_contact_id"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_conflicts")),
        comment="The same field changed locally and in amoCRM since the last sync.",
    )
    op.create_index(
        "ix_sync_conflicts_open",
        "sync_conflicts",
        ["contact_id"],
        unique=False,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    _execute(CAPTURE)


def downgrade() -> None:
    _execute(DROP_CAPTURE)
    op.drop_index(
        "ix_sync_conflicts_open",
        table_name="sync_conflicts",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_table("sync_conflicts")
    op.drop_index("ix_sync_changes_contact_id", table_name="sync_changes")
    op.drop_table("sync_changes")
    op.drop_index("ix_contact_tags_tag_name", table_name="contact_tags")
    op.drop_table("contact_tags")
    op.drop_index("ix_contact_leads_lead_id", table_name="contact_leads")
    op.drop_table("contact_leads")
    op.drop_index("ix_contact_customers_customer_id", table_name="contact_customers")
    op.drop_table("contact_customers")
    op.drop_index(
        "ix_contact_custom_field_values_field_id", table_name="contact_custom_field_values"
    )
    op.drop_index(
        "ix_contact_custom_field_values_field_code", table_name="contact_custom_field_values"
    )
    op.drop_table("contact_custom_field_values")
    op.drop_index("ix_contact_companies_company_id", table_name="contact_companies")
    op.drop_table("contact_companies")
    op.drop_index("ix_contact_chats_contact_id", table_name="contact_chats")
    op.drop_table("contact_chats")
    op.drop_index("ix_contact_catalog_elements_element_id", table_name="contact_catalog_elements")
    op.drop_table("contact_catalog_elements")
    op.drop_table("sync_state")
    op.drop_index("ix_sync_runs_kind_started_at", table_name="sync_runs")
    op.drop_table("sync_runs")
    op.drop_index(
        "ix_sync_requests_pending",
        table_name="sync_requests",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("sync_requests")
    op.drop_index("ix_contacts_updated_at", table_name="contacts")
    op.drop_index(
        "ix_contacts_unsynced",
        table_name="contacts",
        postgresql_where=sa.text("sync_status <> 'synced'"),
    )
    op.drop_index("ix_contacts_responsible_user_id", table_name="contacts")
    op.drop_table("contacts")
    for name in LOCAL_ID_SEQUENCES:
        op.execute(sa.schema.DropSequence(sa.Sequence(name)))


def _execute(sql: str) -> None:
    """Each statement of `sql` (they end with `;` and a blank line) on the target schema."""
    schema = str(context.config.attributes["schema"])
    for statement in sql.strip().removesuffix(";").split(";\n\n"):
        if statement.strip():
            op.execute(statement.strip().replace("{s}", schema))
