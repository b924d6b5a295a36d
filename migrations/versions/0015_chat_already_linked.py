"""contact_chats: a chat already linked is refused at INSERT with a clear line

Inserting a link of a chat that another contact (or the same one) already has was refused by
PostgreSQL's unique constraint on `chat_id` with its raw message (`duplicate key value violates
unique constraint "uq_contact_chats_chat_id"`, black-box audit of push). The INSERT branch of
`amosync_chat_before_write` now names the chat and the contact that has it, and says how to
move a chat (in amoCRM, where linking it elsewhere moves it); same SQLSTATE (unique_violation).

Functions are replaced in place. Downgrade puts back 0013's `amosync_chat_before_write`.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 20:05:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = r"""
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
$fn$;
"""

# 0013's definition, as it installed it
DOWNGRADE = r"""
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
        IF EXISTS (SELECT 1 FROM "{s}".contacts WHERE id = NEW.contact_id AND is_deleted) THEN
            RAISE EXCEPTION 'amosync: contact % was deleted in amoCRM; no chat link can be made '
                            'for it', NEW.contact_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Restore it in amoCRM first; the next pull brings it back.';
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


def upgrade() -> None:
    _execute(UPGRADE)


def downgrade() -> None:
    _execute(DOWNGRADE)


def _execute(sql: str) -> None:
    """`sql` (one statement) on the target schema."""
    schema = str(context.config.attributes["schema"])
    op.execute(sql.strip().removesuffix(";").replace('"{s}"', f'"{schema}"'))
