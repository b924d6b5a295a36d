"""Guards of the outbox (`sync_changes`), the waiting conflicts and the chat links against the
writes that would drop work silently: PostgreSQL functions and triggers (plain SQL).

  DELETE FROM sync_changes / TRUNCATE → refused: every row is a local edit not pushed yet (push
                                        consumes them); deleting one would lose the edit while
                                        its contact stayed `pending` for good. A TRUNCATE of an
                                        empty outbox is let through
  DELETE of a waiting sync_conflicts  → refused: its contact would stay `conflict` for good;
  row (resolved_at NULL)                the way is `amosync conflicts resolve`. A resolved one is
                                        history and may be deleted; TRUNCATE too once none waits
  TRUNCATE contact_chats              → refused, as a DELETE of a pushed link is (`sync.db.capture`)

A TRUNCATE fires no row trigger, so each of these tables has a statement-level BEFORE TRUNCATE
trigger beside its row guard. The sync's own sessions pass (`amosync.origin = 'sync'`), and so
does a foreign-key cascade (a never-pushed contact's DELETE removes its changes and conflicts).

Today's definitions; migration 0019 installed them and holds its own frozen copy.
"""

from __future__ import annotations

from sync.db.capture import local_trigger

_CHANGES_HINT = (
    "To undo a local edit, set the fields back with UPDATE contacts (push sends only what "
    "differs from amoCRM); a chat link not pushed yet is withdrawn with DELETE FROM "
    "contact_chats WHERE id = <its negative id>."
)
_CHANGES_WHY = "its rows are local edits not pushed yet (push consumes them)"
_CONFLICTS_WHY = "conflicts wait for a decision; their contacts stay in conflict until then"
_CONFLICTS_HINT = (
    "Settle each: amosync conflicts resolve ID --keep local|remote. Resolved ones "
    "(resolved_at set) may be deleted, and the table truncated once none waits."
)
_CHATS_WHY = "chat links are made and removed in amoCRM"
_CHATS_HINT = (
    "A link not pushed yet (negative id) may be deleted: DELETE FROM contact_chats WHERE id < 0."
)


def _functions(s: str) -> list[str]:
    return [
        f"""
CREATE FUNCTION "{s}".amosync_refuse_truncate_of() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- TG_ARGV: why, what to do instead
    RAISE EXCEPTION 'amosync: TRUNCATE of % refused: %', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'insufficient_privilege', HINT = TG_ARGV[1];
END
$fn$""",
        f"""
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
$fn$""",
        f"""
CREATE FUNCTION "{s}".amosync_change_before_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'amosync: DELETE of change % (contact %) refused: it is a local edit not '
                    'pushed yet, and deleting it would drop the edit silently', OLD.id,
                    OLD.contact_id
        USING ERRCODE = 'insufficient_privilege', HINT = '{_CHANGES_HINT}';
END
$fn$""",
        f"""
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
$fn$""",
    ]


def _triggers(s: str) -> list[str]:
    return [
        local_trigger(
            "amosync_guard_truncate",
            "BEFORE TRUNCATE",
            f'"{s}".contact_chats',
            f"\"{s}\".amosync_refuse_truncate_of('{_CHATS_WHY}', '{_CHATS_HINT}')",
            each="STATEMENT",
        ),
        local_trigger(
            "amosync_guard_delete",
            "BEFORE DELETE",
            f'"{s}".sync_changes',
            f'"{s}".amosync_change_before_delete()',
            # a never-pushed contact's DELETE removes its changes by cascade: allow it
            condition=" AND pg_trigger_depth() = 0",
        ),
        local_trigger(
            "amosync_guard_truncate",
            "BEFORE TRUNCATE",
            f'"{s}".sync_changes',
            f"\"{s}\".amosync_refuse_outbox_truncate('{_CHANGES_WHY}', '{_CHANGES_HINT}')",
            each="STATEMENT",
        ),
        local_trigger(
            "amosync_guard_delete",
            "BEFORE DELETE",
            f'"{s}".sync_conflicts',
            f'"{s}".amosync_conflict_before_delete()',
            condition=" AND pg_trigger_depth() = 0 AND OLD.resolved_at IS NULL",
        ),
        local_trigger(
            "amosync_guard_truncate",
            "BEFORE TRUNCATE",
            f'"{s}".sync_conflicts',
            f"\"{s}\".amosync_refuse_outbox_truncate('{_CONFLICTS_WHY}', '{_CONFLICTS_HINT}')",
            each="STATEMENT",
        ),
    ]


def create_statements(schema: str) -> list[str]:
    """SQL that installs the guards (tables must exist)."""
    return _functions(schema) + _triggers(schema)
