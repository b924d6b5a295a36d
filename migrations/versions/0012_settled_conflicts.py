"""sync_conflicts: a settled conflict is history; a person's UPDATE of it is refused

Setting `winner` by SQL settles a *waiting* conflict (`resolved_at` NULL): push applies it and
stamps `resolved_at`. Changing the winner of one already applied was accepted and did nothing:
the row then claimed a winner that was never sent. `amosync conflicts resolve` refuses it
("already resolved"); the table now does too. A BEFORE UPDATE row trigger refuses any change to
a row whose `resolved_at` is set, unless the write is the sync's own (`amosync.origin` = sync,
as in 0006). Deleting old conflicts stays allowed (pruning history is the operator's call).

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:45:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION "{s}".amosync_conflict_settled() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: conflict % was already resolved at % (winner %); it cannot be '
                    'changed', OLD.id, OLD.resolved_at, OLD.winner
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only a waiting conflict (resolved_at IS NULL) takes a winner. To change '
                     'the contact now, update the contacts row.';
END
$fn$;

CREATE TRIGGER amosync_conflict_settled BEFORE UPDATE ON "{s}".sync_conflicts
FOR EACH ROW
WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync'
      AND OLD.resolved_at IS NOT NULL)
EXECUTE FUNCTION "{s}".amosync_conflict_settled();
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS "{s}".amosync_conflict_settled() CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))


def _schema() -> str:
    return str(context.config.attributes["schema"])
