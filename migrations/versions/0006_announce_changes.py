"""announce local changes: a NOTIFY whenever a local write captures a change into sync_changes

Only the capture triggers insert into `sync_changes` (a local UPDATE or INSERT of `contacts`, an
INSERT into `contact_chats`; the sync's own writes are never captured), so an AFTER INSERT trigger
on it fires exactly for local edits. It is a statement trigger with a constant, empty payload:
PostgreSQL folds identical notifications of one transaction into one, so a bulk UPDATE of 10,000
contacts announces itself once, at commit (a rolled-back edit announces nothing). A conflict
settled by a person (`UPDATE sync_conflicts SET winner = …`, `amosync conflicts resolve`) is
announced the same way; push's own writes to that table run as the sync and are not. The daemon's
leader LISTENs on `amosync_<schema>_changes` and pushes after a short debounce; the channel name
fits PostgreSQL's 63 bytes because schema names are capped at 46 characters.

The DDL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION "{s}".amosync_announce_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('amosync_{s}_changes', '');
    RETURN NULL;
END
$fn$;

CREATE TRIGGER amosync_announce_change AFTER INSERT ON "{s}".sync_changes
FOR EACH STATEMENT EXECUTE FUNCTION "{s}".amosync_announce_change();

CREATE TRIGGER amosync_announce_settled AFTER UPDATE OF winner ON "{s}".sync_conflicts
FOR EACH STATEMENT
WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync')
EXECUTE FUNCTION "{s}".amosync_announce_change();
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS "{s}".amosync_announce_change() CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE.format(s=_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.format(s=_schema()))


def _schema() -> str:
    return str(context.config.attributes["schema"])
