"""contact_chats: a new chat link of a contact deleted in amoCRM is refused at INSERT

An UPDATE of a deleted contact (`is_deleted`) was refused at once ("deleted in amoCRM and cannot
be edited"), but a chat link for it was accepted: the next push failed with amoCRM's "Contact not
found" and put the deleted contact's row in `error` (black-box audit). The INSERT branch of
`amosync_chat_before_write` now refuses it the same way, with the same hint.

Functions are replaced in place. Downgrade puts back 0011's `amosync_chat_before_write`.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 17:15:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0013"
down_revision = "0012"
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

# 0011's definition, as it installed it
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
