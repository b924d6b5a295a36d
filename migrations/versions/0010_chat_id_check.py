"""contact_chats: a new link's chat_id must not be blank; a pending link's UPDATE says how to fix it

A chat link inserted with an empty `chat_id` was captured and sent, and amoCRM's rejection then
marked the contact `error` ("chat link : ..."). `amosync_chat_before_write` now refuses, at
INSERT, a blank `chat_id`, with a `check_violation` naming the contact and the value. Its form is
not checked: amoCRM's Chats API makes UUIDs, but what a chat id looks like is amoCRM's to judge
(its rejection names the row), as for custom-field values (0009). An UPDATE of a link not pushed yet (negative
id) stays refused (a link is made, never edited), now with a HINT that says how to correct it:
delete the row and insert the right one.

The function is replaced in place. Downgrade puts back 0008's definition.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = r"""
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
"""

# 0008's definition, as it installed it
DOWNGRADE = r"""
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
