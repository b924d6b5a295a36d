"""capture triggers skip the sync's own writes in their WHEN clause; today's capture functions

Revision 0001 installed the change-capture triggers as `sync.db.capture` wrote them on its day:
every trigger called its function for every write, and each function returned early for the
sync's own writes (`amosync.origin = 'sync'`). The code changed soon after (commit 7fc3706)
without a revision, so databases created since then got the new triggers and older ones kept
the old: the same revision, two schemas. This revision brings any database to the definitions
the code has today:

- each trigger's WHEN clause skips the sync's own writes before its function is called, so bulk
  upserts by pull pay nothing for capture;
- the guards of the relation tables fire once per statement, not per row, and let a
  foreign-key cascade through (deleting a never-pushed contact deletes its rows there);
- the functions lose their early return for the sync's own writes (the WHEN clause does it).

Functions are replaced in place; triggers are dropped and created again. On a database that has
them already this changes nothing. Downgrade puts back 0001's definitions.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
    changed_new jsonb := '{}';
    changed_old jsonb := '{}';
    col text;
BEGIN
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

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_row jsonb := to_jsonb(NEW);
    col text;
BEGIN
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

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "{s}".sync_changes (contact_id, kind, new_values)
    SELECT NEW.id, 'create', jsonb_object_agg(key, value)
    FROM jsonb_each(to_jsonb(NEW))
    WHERE key = ANY (ARRAY['name', 'first_name', 'last_name', 'responsible_user_id', 'custom_fields_values']) AND value <> 'null'::jsonb;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF OLD.id < 0 THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'amosync: DELETE of contact % refused: the amoCRM API cannot delete contacts',
        OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Delete the contact in amoCRM; the next pull marks the row is_deleted.';
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: it mirrors amoCRM, which cannot delete '
                    'contacts', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
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

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "{s}".sync_changes (contact_id, kind, chat_link_id, new_values)
    VALUES (NEW.contact_id, 'chat_link', NEW.id, jsonb_build_object('chat_id', NEW.chat_id));
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_refuse_relation_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: % on % refused: the table mirrors amoCRM', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[0];
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_announce_request() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('amosync_{s}_requests', NEW.id::text);
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS amosync_capture_update ON "{s}".contacts;

CREATE TRIGGER amosync_capture_update BEFORE UPDATE ON "{s}".contacts FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_contact_before_update();

DROP TRIGGER IF EXISTS amosync_check_insert ON "{s}".contacts;

CREATE TRIGGER amosync_check_insert BEFORE INSERT ON "{s}".contacts FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_contact_before_insert();

DROP TRIGGER IF EXISTS amosync_capture_insert ON "{s}".contacts;

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contacts FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_contact_after_insert();

DROP TRIGGER IF EXISTS amosync_guard_delete ON "{s}".contacts;

CREATE TRIGGER amosync_guard_delete BEFORE DELETE ON "{s}".contacts FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_contact_before_delete();

DROP TRIGGER IF EXISTS amosync_guard_truncate ON "{s}".contacts;

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".contacts FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_refuse_truncate();

DROP TRIGGER IF EXISTS amosync_check_write ON "{s}".contact_chats;

CREATE TRIGGER amosync_check_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_chats FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_chat_before_write();

DROP TRIGGER IF EXISTS amosync_capture_insert ON "{s}".contact_chats;

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contact_chats FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_chat_after_insert();

DROP TRIGGER IF EXISTS amosync_announce ON "{s}".sync_requests;

CREATE TRIGGER amosync_announce AFTER INSERT ON "{s}".sync_requests FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_announce_request();

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_custom_field_values;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_custom_field_values FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('edit contacts.custom_fields_values instead');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_tags;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_tags FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('tags are read-only in this version of the sync');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_leads;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_leads FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to leads are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_customers;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_customers FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to customers are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_companies;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_companies FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to companies are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_catalog_elements;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_catalog_elements FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to catalog elements are managed in amoCRM');
"""

# 0001's definitions, as it installed them
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_update() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_insert() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_after_insert() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_delete() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_refuse_truncate() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_after_insert() RETURNS trigger
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

CREATE OR REPLACE FUNCTION "{s}".amosync_refuse_relation_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(current_setting('amosync.origin', true), '') = 'sync' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'amosync: % on % refused: the table mirrors amoCRM', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[0];
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_announce_request() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('amosync_{s}_requests', NEW.id::text);
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS amosync_capture_update ON "{s}".contacts;

CREATE TRIGGER amosync_capture_update BEFORE UPDATE ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_update();

DROP TRIGGER IF EXISTS amosync_check_insert ON "{s}".contacts;

CREATE TRIGGER amosync_check_insert BEFORE INSERT ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_insert();

DROP TRIGGER IF EXISTS amosync_capture_insert ON "{s}".contacts;

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_after_insert();

DROP TRIGGER IF EXISTS amosync_guard_delete ON "{s}".contacts;

CREATE TRIGGER amosync_guard_delete BEFORE DELETE ON "{s}".contacts FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_contact_before_delete();

DROP TRIGGER IF EXISTS amosync_guard_truncate ON "{s}".contacts;

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".contacts FOR EACH STATEMENT EXECUTE FUNCTION "{s}".amosync_refuse_truncate();

DROP TRIGGER IF EXISTS amosync_check_write ON "{s}".contact_chats;

CREATE TRIGGER amosync_check_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_chats FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_chat_before_write();

DROP TRIGGER IF EXISTS amosync_capture_insert ON "{s}".contact_chats;

CREATE TRIGGER amosync_capture_insert AFTER INSERT ON "{s}".contact_chats FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_chat_after_insert();

DROP TRIGGER IF EXISTS amosync_announce ON "{s}".sync_requests;

CREATE TRIGGER amosync_announce AFTER INSERT ON "{s}".sync_requests FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_announce_request();

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_custom_field_values;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_custom_field_values FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('edit contacts.custom_fields_values instead');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_tags;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_tags FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('tags are read-only in this version of the sync');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_leads;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_leads FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to leads are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_customers;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_customers FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to customers are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_companies;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_companies FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to companies are managed in amoCRM');

DROP TRIGGER IF EXISTS amosync_guard_write ON "{s}".contact_catalog_elements;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_catalog_elements FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to catalog elements are managed in amoCRM');
"""


def upgrade() -> None:
    _execute(UPGRADE)


def downgrade() -> None:
    _execute(DOWNGRADE)


def _execute(sql: str) -> None:
    """Each statement of `sql` (they end with `;` and a blank line) on the target schema."""
    schema = str(context.config.attributes["schema"])
    for statement in sql.strip().removesuffix(";").split(";\n\n"):
        if statement.strip():
            op.execute(statement.strip().replace("{s}", schema))
