"""contacts left `pending` with no field edit waiting (only a chat link, or nothing) are `synced`

Older code made a contact `pending` when a pull found it again after push had left it "not
found" in amoCRM, even when the only thing it had to send was a chat link; pushing that link (or
a person withdrawing it) then consumed the link's outbox row without working the contact's
status out again. Nothing moved such a contact off `pending` afterwards: `amosync status`
counted it as unsent work for good. The code now settles it (`sync.db.inflight.
settle_after_links`, `sync.db.tombstones.FOUND_AGAIN`) on one rule: a contact is `pending` only
while a field edit of it waits in the outbox (a `sync_changes` row of another kind than
`chat_link`); a pending chat link does not make its contact pending. Rows the old code left
behind stay as they were, so this revision applies the same rule to them once: a `pending`
contact amoCRM knows (positive id) with no such row becomes `synced`, `sync_error` NULL,
`synced_at` now, as the link step would have left it. A chat link of it still to send stays in
the outbox and goes out with the next push (the link step does not look at the contact's
status, only that it is not `error`).

Nothing else is touched: a contact with a field edit waiting stays `pending`, `error` and
`conflict` are about other things, and a new contact (negative id) waits for its create. The
update runs as the sync (`amosync.origin`), only for its own statement: `sync_status` mirrors the
sync and the guard of `contacts` refuses it to anyone else.

Downgrade changes nothing: the old state was a stale status, never data.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

AS_SYNC = "SELECT set_config('amosync.origin', 'sync', true)"
AS_BEFORE = "SELECT set_config('amosync.origin', '', true)"
SETTLE = """
UPDATE "{s}".contacts c
SET sync_status = 'synced', sync_error = NULL, synced_at = now()
WHERE c.sync_status = 'pending'
  AND c.id > 0
  AND NOT EXISTS (
      SELECT 1 FROM "{s}".sync_changes s
      WHERE s.contact_id = c.id AND s.kind <> 'chat_link')
"""


def upgrade() -> None:
    op.execute(AS_SYNC)
    op.execute(SETTLE.format(s=_schema()))
    op.execute(AS_BEFORE)


def downgrade() -> None:
    """Nothing to undo: the statuses this revision settled were stale, not data."""


def _schema() -> str:
    return str(context.config.attributes["schema"])
