"""The operations tables of the sync: the outbox (`sync_changes`), `sync_conflicts`, `sync_runs`,
`sync_state`, `sync_requests`, and a full resync's scratch list (`sync_full_seen`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from sync.db.metadata import JSON_OR_NULL, TZ, contact_fk, metadata

sync_changes = Table(
    "sync_changes",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="Capture order."),
    contact_fk("The contact changed (negative for a contact not yet created in amoCRM)."),
    Column("kind", Text, nullable=False, comment="update | create | chat_link."),
    Column(
        "new_values", JSON_OR_NULL, comment="Changed writable fields and their new local values."
    ),
    Column(
        "base_values",
        JSON_OR_NULL,
        comment="The same fields' values before the edit: the base of the three-way merge.",
    ),
    Column(
        "base_updated_at",
        TZ,
        comment="contacts.updated_at (amoCRM's version) the edit was made against.",
    ),
    Column("chat_link_id", BigInteger, comment="contact_chats.id for a chat_link change."),
    Column(
        "changed_at",
        TZ,
        nullable=False,
        server_default=text("clock_timestamp()"),
        comment="When the local edit was made.",
    ),
    CheckConstraint("kind IN ('update', 'create', 'chat_link')", name="kind"),
    comment="Outbox of local edits captured by triggers, consumed by push. The sync's own "
    "writes are never captured.",
)
Index("ix_sync_changes_contact_id", sync_changes.c.contact_id, sync_changes.c.id)

sync_conflicts = Table(
    "sync_conflicts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="Conflict id."),
    contact_fk(),
    Column("field", Text, nullable=False, comment="The field changed on both sides."),
    Column(
        "base_value",
        JSON_OR_NULL,
        comment="The value both sides started from; NULL when the field was empty.",
    ),
    Column(
        "local_value",
        JSON_OR_NULL,
        comment="The value edited in PostgreSQL; NULL when it was emptied there.",
    ),
    Column(
        "remote_value",
        JSON_OR_NULL,
        comment="The value edited in amoCRM; NULL when it was emptied there.",
    ),
    Column("local_changed_at", TZ, comment="When the local edit was made."),
    Column("remote_updated_at", TZ, comment="amoCRM's updated_at of the remote edit."),
    Column(
        "detected_at",
        TZ,
        nullable=False,
        server_default=text("now()"),
        comment="When push found the conflict.",
    ),
    Column("policy", Text, nullable=False, comment="Policy applied: newest_wins, remote_wins, …"),
    Column(
        "winner",
        Text,
        comment="local | remote; NULL while waiting for a person (policy manual). "
        "Set it by SQL to settle the conflict.",
    ),
    Column("resolved_at", TZ, comment="When the winner was applied."),
    CheckConstraint("winner IN ('local', 'remote')", name="winner"),
    comment="The same field changed locally and in amoCRM since the last sync.",
)
Index(
    "ix_sync_conflicts_open",
    sync_conflicts.c.contact_id,
    postgresql_where=text("resolved_at IS NULL"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="Run id."),
    Column("kind", Text, nullable=False, comment="pull | full | push."),
    Column(
        "started_at",
        TZ,
        nullable=False,
        server_default=text("now()"),
        comment="When the run started.",
    ),
    Column("finished_at", TZ, comment="When it ended; NULL while running or if it crashed."),
    Column(
        "status",
        Text,
        nullable=False,
        server_default=text("'running'"),
        comment="running | succeeded | failed.",
    ),
    Column("fetched", Integer, nullable=False, server_default=text("0"), comment="Contacts read."),
    Column("upserted", Integer, nullable=False, server_default=text("0"), comment="Rows written."),
    Column("deleted", Integer, nullable=False, server_default=text("0"), comment="Tombstoned."),
    Column("pushed", Integer, nullable=False, server_default=text("0"), comment="Sent to amoCRM."),
    Column("conflicts", Integer, nullable=False, server_default=text("0"), comment="Conflicts."),
    Column("errors", Integer, nullable=False, server_default=text("0"), comment="Rows rejected."),
    Column("requests", Integer, nullable=False, server_default=text("0"), comment="API calls."),
    Column("error", Text, comment="Why the run failed."),
    CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
    comment="One row per pull, full resync or push run.",
)
Index("ix_sync_runs_kind_started_at", sync_runs.c.kind, sync_runs.c.started_at)

sync_state = Table(
    "sync_state",
    metadata,
    Column("key", Text, primary_key=True, comment="State name: a cursor, the OAuth tokens, …"),
    Column("value", JSONB, nullable=False, comment="State value."),
    Column(
        "updated_at",
        TZ,
        nullable=False,
        server_default=text("now()"),
        comment="When the value was last written.",
    ),
    comment="Cursors and tokens of the sync (keep this table private: it holds OAuth tokens).",
)

sync_requests = Table(
    "sync_requests",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="Request id."),
    Column(
        "kind",
        Text,
        nullable=False,
        server_default=text("'full'"),
        comment="What is asked for: full (a full resync).",
    ),
    Column(
        "requested_at",
        TZ,
        nullable=False,
        server_default=text("now()"),
        comment="When it was asked for.",
    ),
    Column(
        "requested_by",
        Text,
        nullable=False,
        server_default=text("current_user"),
        comment="Database role that asked.",
    ),
    Column("started_at", TZ, comment="When the sync started on it."),
    Column("finished_at", TZ, comment="When it was done."),
    Column(
        "status",
        Text,
        nullable=False,
        server_default=text("'pending'"),
        comment="pending | running | done | failed.",
    ),
    Column("run_id", BigInteger, comment="The sync_runs row that served it."),
    Column("error", Text, comment="Why it failed."),
    CheckConstraint("kind IN ('full')", name="kind"),
    CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name="status"),
    comment="INSERT INTO sync_requests (kind) VALUES ('full') asks the daemon for a full resync.",
)
Index(
    "ix_sync_requests_pending",
    sync_requests.c.requested_at,
    postgresql_where=text("status = 'pending'"),
)

sync_full_seen = Table(
    "sync_full_seen",
    metadata,
    Column("run_id", BigInteger, nullable=False, comment="The full resync (sync_runs.id)."),
    Column("contact_id", BigInteger, nullable=False, comment="A contact amoCRM listed."),
    PrimaryKeyConstraint("run_id", "contact_id"),
    prefixes=["UNLOGGED"],
    comment="Scratch list of the contact ids a running full resync has seen in amoCRM, to find "
    "the ones that are gone; emptied when the run ends (unlogged: not crash-safe by design).",
)
