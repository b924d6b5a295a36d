"""contacts and contact_chats: an INSERT's id must be the temporary one its default drew

`amosync_contact_before_insert` refused an INSERT that gave a contact id of 0 or more, but let a
negative one through: the row was captured as a create, and the id collided later with the
temporary id the sequence `contacts_local_id_seq` hands out (someone else's INSERT failed with a
duplicate key), or with one already in flight. An INSERT must now leave the id to the column's
default: the BEFORE INSERT trigger compares NEW.id with `currval` of the sequence (the default
draws it just before the row's trigger; a session that drew none has no `currval`) and refuses
any other id, negative, zero or positive, with `insufficient_privilege` and the id it got.
`amosync_chat_before_write` does the same for a new chat link's id (`contact_chats_local_id_seq`).
The new helper `amosync_drawn_id(regclass)` returns the session's `currval`, or NULL.

Functions are replaced in place. Downgrade puts back 0008's `amosync_contact_before_insert` and
0010's `amosync_chat_before_write`, and drops the helper.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 16:30:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION "{s}".amosync_drawn_id(seq regclass) RETURNS bigint
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN currval(seq);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RETURN NULL;  -- this session drew no id from it
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_contact_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    new_row jsonb := to_jsonb(NEW);
    col text;
BEGIN
    IF NEW.id IS DISTINCT FROM "{s}".amosync_drawn_id('"{s}".contacts_local_id_seq') THEN
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
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.id IS DISTINCT FROM "{s}".amosync_drawn_id('"{s}".contact_chats_local_id_seq') THEN
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
$fn$;
"""

# 0008's and 0010's definitions, as they installed them
DOWNGRADE = r"""
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

CREATE OR REPLACE FUNCTION "{s}".amosync_chat_before_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.id < 0 THEN
        IF NEW.chat_id IS NULL OR btrim(NEW.chat_id) = '' THEN
            RAISE EXCEPTION 'amosync: new chat link of contact %: chat_id must be an amoCRM chat '
                            'id, got %', NEW.contact_id,
                            coalesce(quote_literal(NEW.chat_id), 'NULL')
                USING ERRCODE = 'check_violation',
                      HINT = 'chat_id is the UUID of a chat (amoCRM''s Chats API), e.g. '
                             '6cbab3d5-c4c1-46ff-b710-ad59ad10805f.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND OLD.id < 0 THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'amosync: chat link ids are assigned by amoCRM; insert without an id'
            USING ERRCODE = 'insufficient_privilege';
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
$fn$;

DROP FUNCTION "{s}".amosync_drawn_id(regclass);
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
