"""TRUNCATE refused where a row DELETE is; the outbox and waiting conflicts guarded; dates kept

A TRUNCATE fires no row trigger, so it went past the guards (integrator audit): `TRUNCATE` of
contact_tags, contact_custom_field_values and the other mirrored relation tables emptied them
until the next full resync, and `TRUNCATE contact_chats` or `sync_changes` dropped pending chat
links and edits silently, their contacts `pending` for good while `status` counted 0 changes.
Each mirrored relation table's statement guard now fires on TRUNCATE too (its one-line
refusal, `TRUNCATE on contact_tags refused: the table mirrors amoCRM`), and contact_chats gets a
BEFORE TRUNCATE trigger of its own.

A local `DELETE FROM sync_changes` dropped an edit the same way (every row of the outbox is one
not pushed yet: push consumes them), and a DELETE of a waiting `sync_conflicts` row left its
contact in `conflict` for good. Both are refused now with a line naming the supported way
(set the fields back; `amosync conflicts resolve ID --keep local|remote`); a resolved conflict
is history and may be deleted, and either table may be truncated when that loses nothing
(an empty outbox; no conflict waiting). The sync's own sessions pass, as through every guard,
and so does a foreign-key cascade (deleting a never-pushed contact).

The comment of contact_custom_field_values.value says how a date no ISO date can show is kept
(amoCRM's number as text: a pull no longer fails on one).

Downgrade drops the new triggers and functions and puts back 0018's guards and comment.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 01:10:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION "{s}".amosync_refuse_truncate_of() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- TG_ARGV: why, what to do instead
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: %', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[1];
END
$fn$;

CREATE FUNCTION "{s}".amosync_refuse_outbox_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- an empty outbox, or only settled conflicts, loses nothing
    IF TG_TABLE_NAME = 'sync_changes'
       AND NOT EXISTS (SELECT 1 FROM "{s}".sync_changes) THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'sync_conflicts'
       AND NOT EXISTS (SELECT 1 FROM "{s}".sync_conflicts WHERE resolved_at IS NULL) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: %', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[1];
END
$fn$;

CREATE FUNCTION "{s}".amosync_change_before_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: DELETE of change % (contact %) refused: it is a local edit not '
                    'pushed yet, and deleting it would drop the edit silently', OLD.id,
                    OLD.contact_id
        USING ERRCODE = 'insufficient_privilege', HINT = 'To undo a local edit, set the fields back with UPDATE contacts (push sends only what differs from amoCRM); a chat link not pushed yet is withdrawn with DELETE FROM contact_chats WHERE id = <its negative id>.';
END
$fn$;

CREATE FUNCTION "{s}".amosync_conflict_before_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: DELETE of conflict % refused: it waits for a decision, and '
                    'contact % stays in conflict until it has one', OLD.id, OLD.contact_id
        USING ERRCODE = 'insufficient_privilege',
              HINT = format('Settle it: amosync conflicts resolve %s --keep local|remote '
                            '(or UPDATE sync_conflicts SET winner = ''local'' or ''remote'' '
                            'WHERE id = %s). A resolved conflict may be deleted.', OLD.id, OLD.id);
END
$fn$;

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".contact_chats FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_refuse_truncate_of('chat links are made and removed in amoCRM', 'A link not pushed yet (negative id) may be deleted: DELETE FROM contact_chats WHERE id < 0.');

CREATE TRIGGER amosync_guard_delete BEFORE DELETE ON "{s}".sync_changes FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_change_before_delete();

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".sync_changes FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_refuse_outbox_truncate('its rows are local edits not pushed yet (push consumes them)', 'To undo a local edit, set the fields back with UPDATE contacts (push sends only what differs from amoCRM); a chat link not pushed yet is withdrawn with DELETE FROM contact_chats WHERE id = <its negative id>.');

CREATE TRIGGER amosync_guard_delete BEFORE DELETE ON "{s}".sync_conflicts FOR EACH ROW WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0 AND OLD.resolved_at IS NULL) EXECUTE FUNCTION "{s}".amosync_conflict_before_delete();

CREATE TRIGGER amosync_guard_truncate BEFORE TRUNCATE ON "{s}".sync_conflicts FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync') EXECUTE FUNCTION "{s}".amosync_refuse_outbox_truncate('conflicts wait for a decision; their contacts stay in conflict until then', 'Settle each: amosync conflicts resolve ID --keep local|remote. Resolved ones (resolved_at set) may be deleted, and the table truncated once none waits.');

DROP TRIGGER amosync_guard_write ON "{s}".contact_custom_field_values;

DROP TRIGGER amosync_guard_write ON "{s}".contact_tags;

DROP TRIGGER amosync_guard_write ON "{s}".contact_leads;

DROP TRIGGER amosync_guard_write ON "{s}".contact_customers;

DROP TRIGGER amosync_guard_write ON "{s}".contact_companies;

DROP TRIGGER amosync_guard_write ON "{s}".contact_catalog_elements;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_custom_field_values FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('edit contacts.custom_fields_values instead');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_tags FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('tags are read-only in this version of the sync');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_leads FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to leads are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_customers FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to customers are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_companies FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to companies are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON "{s}".contact_catalog_elements FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to catalog elements are managed in amoCRM');

COMMENT ON COLUMN "{s}".contact_custom_field_values.value IS 'The value as text: dates as ISO 8601 (UTC), or amoCRM''s number when no ISO date (years 1-9999) can show it (e.g. milliseconds); checkboxes as true/false, the option''s label for select, multiselect and radiobutton.';
"""

DOWNGRADE = r"""
DROP TRIGGER amosync_guard_truncate ON "{s}".contact_chats;

DROP TRIGGER amosync_guard_delete ON "{s}".sync_changes;

DROP TRIGGER amosync_guard_truncate ON "{s}".sync_changes;

DROP TRIGGER amosync_guard_delete ON "{s}".sync_conflicts;

DROP TRIGGER amosync_guard_truncate ON "{s}".sync_conflicts;

DROP FUNCTION "{s}".amosync_refuse_truncate_of();

DROP FUNCTION "{s}".amosync_refuse_outbox_truncate();

DROP FUNCTION "{s}".amosync_change_before_delete();

DROP FUNCTION "{s}".amosync_conflict_before_delete();

DROP TRIGGER amosync_guard_write ON "{s}".contact_custom_field_values;

DROP TRIGGER amosync_guard_write ON "{s}".contact_tags;

DROP TRIGGER amosync_guard_write ON "{s}".contact_leads;

DROP TRIGGER amosync_guard_write ON "{s}".contact_customers;

DROP TRIGGER amosync_guard_write ON "{s}".contact_companies;

DROP TRIGGER amosync_guard_write ON "{s}".contact_catalog_elements;

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_custom_field_values FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('edit contacts.custom_fields_values instead');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_tags FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('tags are read-only in this version of the sync');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_leads FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to leads are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_customers FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to customers are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_companies FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to companies are managed in amoCRM');

CREATE TRIGGER amosync_guard_write BEFORE INSERT OR UPDATE OR DELETE ON "{s}".contact_catalog_elements FOR EACH STATEMENT WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync' AND pg_trigger_depth() = 0) EXECUTE FUNCTION "{s}".amosync_refuse_relation_write('links to catalog elements are managed in amoCRM');

COMMENT ON COLUMN "{s}".contact_custom_field_values.value IS 'The value as text: dates as ISO 8601, checkboxes as true/false, the option''s label for select, multiselect and radiobutton.';
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
            op.execute(statement.strip().replace('"{s}"', f'"{schema}"'))
