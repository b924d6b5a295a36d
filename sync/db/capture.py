"""Change capture and write guards, as PostgreSQL functions and triggers (plain SQL).

What a person or program does to the tables, and what happens:
  UPDATE contacts (writable columns)  → a `sync_changes` row (new and base values), row `pending`
  UPDATE contacts (any other column)  → refused: those columns mirror amoCRM
  INSERT INTO contacts (no id)        → temporary negative id, `pending`, a `create` change
                                        (an id given, even a negative one, is refused)
  DELETE FROM contacts / TRUNCATE     → refused (the API cannot delete contacts); a contact that
                                        was never pushed (negative id) may be deleted
  INSERT INTO contact_chats           → temporary negative id, a `chat_link` change (a blank
                                        chat_id, or a contact deleted in amoCRM, refused); a
                                        link not pushed yet may be deleted, never updated
                                        (delete it, insert the right one)
  writes to the other relation tables → refused, TRUNCATE too: they mirror amoCRM (pull)
  TRUNCATE contact_chats, outbox rows → refused: `sync.db.outbox_guard`
  a captured change, a settled conflict → NOTIFY on `changes_channel` once per transaction
  UPDATE of a conflict already applied → refused (`resolved_at` set: it is history)

The sync marks its own transactions with `SET LOCAL amosync.origin = 'sync'` (see
`sync.db.engine.sync_origin`); the triggers let those writes through uncaptured.

A TRUNCATE fires no row trigger: each guarded table has a BEFORE TRUNCATE trigger too (plain
`TRUNCATE contacts` meets PostgreSQL's foreign-key check first, which runs before any trigger).
These are today's definitions. Migrations hold their own frozen copies (0001, 0006, 0008, 0010,
0011, 0012, 0013, 0019): a change here ships as a new revision that recreates what changed
(tests/integration/test_migrations_frozen.py fails until it does).
"""

from __future__ import annotations

from sync.core.models import WRITABLE_FIELDS

ORIGIN_SETTING = "amosync.origin"
WRITABLE_CONTACT_COLUMNS = WRITABLE_FIELDS  # the triggers' name for the one list
READ_ONLY_CONTACT_COLUMNS = (
    "id",
    "group_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "closest_task_at",
    "account_id",
    "is_deleted",
    "deleted_at",
    "sync_status",
    "sync_error",
    "synced_at",
)
# Tables that mirror amoCRM and cannot be written locally, with what to do instead.
READ_ONLY_RELATIONS = {
    "contact_custom_field_values": "edit contacts.custom_fields_values instead",
    "contact_tags": "tags are read-only in this version of the sync",
    "contact_leads": "links to leads are managed in amoCRM",
    "contact_customers": "links to customers are managed in amoCRM",
    "contact_companies": "links to companies are managed in amoCRM",
    "contact_catalog_elements": "links to catalog elements are managed in amoCRM",
}


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which new sync_requests are announced."""
    return f"amosync_{schema}_requests"


def changes_channel(schema: str) -> str:
    """The channel on which local writes announce captured changes (migration 0006: a statement
    trigger on `sync_changes`, one notification per transaction). `amosync_` + a schema of at
    most 46 characters + `_changes` fits PostgreSQL's 63 bytes."""
    return f"amosync_{schema}_changes"


def _array(names: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{name}'" for name in names) + "]"


# True inside the sync's own transactions (see `sync.db.engine.sync_origin`).
IS_SYNC = f"coalesce(current_setting('{ORIGIN_SETTING}', true), '') = 'sync'"


def _drawn(s: str, table: str) -> str:
    """SQL: the temporary id this session last drew from `table`'s sequence (its column's
    default draws it just before the row's BEFORE INSERT trigger), NULL if none."""
    return f'"{s}".amosync_drawn_id(\'"{s}".{table}_local_id_seq\')'


def _functions(s: str) -> list[str]:
    writable, read_only = _array(WRITABLE_CONTACT_COLUMNS), _array(READ_ONLY_CONTACT_COLUMNS)
    return [
        # An INSERT's id must be the one its default drew: an id of the integrator's own, even a
        # negative one, would collide with a temporary id the sequence hands out later.
        f"""
CREATE FUNCTION "{s}".amosync_drawn_id(seq regclass) RETURNS bigint
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN currval(seq);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RETURN NULL;  -- this session drew no id from it
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_contact_before_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
    changed_new jsonb := '{{}}';
    changed_old jsonb := '{{}}';
    col text;
BEGIN
    FOREACH col IN ARRAY {read_only} LOOP
        IF old_row -> col IS DISTINCT FROM new_row -> col THEN
            RAISE EXCEPTION 'amosync: contacts.% of contact % cannot be edited: it mirrors amoCRM',
                col, OLD.id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Writable columns: name, first_name, last_name, '
                             'responsible_user_id, custom_fields_values.';
        END IF;
    END LOOP;
    FOREACH col IN ARRAY {writable} LOOP
        IF old_row -> col IS DISTINCT FROM new_row -> col THEN
            changed_new := changed_new || jsonb_build_object(col, new_row -> col);
            changed_old := changed_old || jsonb_build_object(col, old_row -> col);
        END IF;
    END LOOP;
    IF changed_new = '{{}}' THEN
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
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_contact_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_row jsonb := to_jsonb(NEW);
    col text;
BEGIN
    IF NEW.id IS DISTINCT FROM {_drawn(s, "contacts")} THEN
        RAISE EXCEPTION 'amosync: contact ids are assigned by amoCRM; insert without an id '
                        '(got %)', NEW.id
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
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_contact_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "{s}".sync_changes (contact_id, kind, new_values)
    SELECT NEW.id, 'create', jsonb_object_agg(key, value)
    FROM jsonb_each(to_jsonb(NEW))
    WHERE key = ANY ({writable}) AND value <> 'null'::jsonb;
    RETURN NULL;
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_contact_before_delete() RETURNS trigger
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
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: it mirrors amoCRM, which cannot delete '
                    'contacts', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.id IS DISTINCT FROM {_drawn(s, "contact_chats")} THEN
            RAISE EXCEPTION 'amosync: chat link ids are assigned by amoCRM; insert without an '
                            'id (got %)', NEW.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.chat_id IS NULL OR btrim(NEW.chat_id) = '' THEN
            RAISE EXCEPTION 'amosync: new chat link of contact %: chat_id must be an amoCRM chat '
                            'id, got %', NEW.contact_id,
                            coalesce(quote_literal(NEW.chat_id), 'NULL')
                USING ERRCODE = 'check_violation',
                      HINT = 'chat_id is the UUID of a chat (amoCRM''s Chats API), e.g. '
                             '6cbab3d5-c4c1-46ff-b710-ad59ad10805f.';
        END IF;
        IF EXISTS (SELECT 1 FROM "{s}".contacts WHERE id = NEW.contact_id AND is_deleted) THEN
            RAISE EXCEPTION 'amosync: contact % was deleted in amoCRM; no chat link can be made '
                            'for it', NEW.contact_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Restore it in amoCRM first; the next pull brings it back.';
        END IF;
        IF EXISTS (SELECT 1 FROM "{s}".contact_chats WHERE chat_id = NEW.chat_id) THEN
            RAISE EXCEPTION 'amosync: chat % is already linked to contact %; a chat belongs to '
                            'one contact', NEW.chat_id, (SELECT min(contact_id) FROM
                            "{s}".contact_chats WHERE chat_id = NEW.chat_id)
                USING ERRCODE = 'unique_violation',
                      HINT = 'To move it, link it to the other contact in amoCRM (a link not '
                             'pushed yet, with a negative id, can be deleted and made again).';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND OLD.id < 0 THEN
        RETURN OLD;
    END IF;
    IF OLD.id < 0 THEN
        RAISE EXCEPTION 'amosync: UPDATE of chat link % refused: a link is made, never edited',
            OLD.id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('To correct a link not pushed yet, delete it (DELETE FROM '
                                'contact_chats WHERE id = %s) and insert the right one.', OLD.id);
    END IF;
    RAISE EXCEPTION 'amosync: % of chat link % refused: only new links can be made from the '
                    'database', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Change or remove chat links in amoCRM.';
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_chat_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO "{s}".sync_changes (contact_id, kind, chat_link_id, new_values)
    VALUES (NEW.contact_id, 'chat_link', NEW.id, jsonb_build_object('chat_id', NEW.chat_id));
    RETURN NULL;
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_refuse_relation_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: % on % refused: the table mirrors amoCRM', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[0];
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_announce_request() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{notify_channel(s)}', NEW.id::text);
    RETURN NULL;
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_announce_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{changes_channel(s)}', '');
    RETURN NULL;
END
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_conflict_settled() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: conflict % was already resolved at % (winner %); it cannot be '
                    'changed', OLD.id, OLD.resolved_at, OLD.winner
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only a waiting conflict (resolved_at IS NULL) takes a winner. To change '
                     'the contact now, update the contacts row.';
END
$fn$""",
    ]


def local_trigger(
    name: str, when: str, table: str, call: str, *, each: str = "ROW", condition: str = ""
) -> str:
    """A trigger that fires only for local writes.

    The WHEN clause skips the sync's own writes before any function is called, so bulk
    upserts by pull pay nothing for capture; relation guards fire once per statement.
    """
    return (
        f"CREATE TRIGGER {name} {when} ON {table} FOR EACH {each} "
        f"WHEN (NOT {IS_SYNC}{condition}) EXECUTE FUNCTION {call}"
    )


def _triggers(s: str) -> list[str]:
    contacts, chats = f'"{s}".contacts', f'"{s}".contact_chats'
    statements = [
        local_trigger(
            "amosync_capture_update",
            "BEFORE UPDATE",
            contacts,
            f'"{s}".amosync_contact_before_update()',
        ),
        local_trigger(
            "amosync_check_insert",
            "BEFORE INSERT",
            contacts,
            f'"{s}".amosync_contact_before_insert()',
        ),
        local_trigger(
            "amosync_capture_insert",
            "AFTER INSERT",
            contacts,
            f'"{s}".amosync_contact_after_insert()',
        ),
        local_trigger(
            "amosync_guard_delete",
            "BEFORE DELETE",
            contacts,
            f'"{s}".amosync_contact_before_delete()',
        ),
        local_trigger(
            "amosync_guard_truncate",
            "BEFORE TRUNCATE",
            contacts,
            f'"{s}".amosync_refuse_truncate()',
            each="STATEMENT",
        ),
        local_trigger(
            "amosync_check_write",
            "BEFORE INSERT OR UPDATE OR DELETE",
            chats,
            f'"{s}".amosync_chat_before_write()',
        ),
        local_trigger(
            "amosync_capture_insert",
            "AFTER INSERT",
            chats,
            f'"{s}".amosync_chat_after_insert()',
        ),
        f'CREATE TRIGGER amosync_announce AFTER INSERT ON "{s}".sync_requests '
        f'FOR EACH ROW EXECUTE FUNCTION "{s}".amosync_announce_request()',
        # only the capture triggers insert into sync_changes, so this fires for local edits
        # only; a statement trigger with a constant payload: one NOTIFY per transaction
        f'CREATE TRIGGER amosync_announce_change AFTER INSERT ON "{s}".sync_changes '
        f'FOR EACH STATEMENT EXECUTE FUNCTION "{s}".amosync_announce_change()',
        local_trigger(
            "amosync_announce_settled",
            "AFTER UPDATE OF winner",
            f'"{s}".sync_conflicts',
            f'"{s}".amosync_announce_change()',
            each="STATEMENT",
        ),
        local_trigger(  # a settled conflict is history (its winner was applied)
            "amosync_conflict_settled",
            "BEFORE UPDATE",
            f'"{s}".sync_conflicts',
            f'"{s}".amosync_conflict_settled()',
            condition=" AND OLD.resolved_at IS NOT NULL",
        ),
    ]
    for table, hint in READ_ONLY_RELATIONS.items():
        statements.append(
            local_trigger(
                "amosync_guard_write",
                "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE",
                f'"{s}".{table}',
                f"\"{s}\".amosync_refuse_relation_write('{hint}')",
                each="STATEMENT",
                # a foreign-key cascade (deleting a never-pushed contact) runs nested: allow it
                condition=" AND pg_trigger_depth() = 0",
            )
        )
    return statements


def create_statements(schema: str) -> list[str]:
    """SQL that installs the capture functions and triggers (tables must exist)."""
    return _functions(schema) + _triggers(schema)
