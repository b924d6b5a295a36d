"""scrub run errors: no SQL statement, parameters or DETAIL line in stored errors

Before this revision a failed run could store SQLAlchemy's whole message in `sync_runs.error`
and `sync_requests.error`: the statement (`[SQL: …]`), its parameters (`[parameters: …]`, contact
e-mails and phones) and PostgreSQL's `DETAIL:` line with key values. The product now stores only
PostgreSQL's one-line message; this revision cuts the old rows down to their first line, before
any `[SQL:` on it. Downgrade has nothing to restore.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 20:30:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCRUB = r"""
UPDATE "{s}".{table}
SET error = rtrim(split_part(split_part(error, E'\n', 1), ' [SQL:', 1))
WHERE error LIKE E'%\n%' OR error LIKE '%[SQL:%' OR error LIKE '%[parameters:%'
"""


def upgrade() -> None:
    for table in ("sync_runs", "sync_requests"):
        op.execute(SCRUB.format(s=_schema(), table=table))


def downgrade() -> None:
    """The cut text is gone for good, and nothing needs it back."""


def _schema() -> str:
    return str(context.config.attributes["schema"])
