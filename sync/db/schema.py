"""The database contract as SQLAlchemy metadata (see CONTRACT.md, "Database").

Tables are declared without a schema; the engine maps them to the configured schema with
`schema_translate_map`, and migrations create them with `search_path` set to it. Every table and
column carries a comment, which the migrations turn into `COMMENT ON` so BI tools show a data
dictionary. Change-capture triggers and functions live in `sync.db.capture` (plain SQL).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from sync.core.models import ContactStatus

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

TZ = TIMESTAMP(timezone=True)
SYNC_STATUSES = tuple(ContactStatus)

# Locally inserted contacts (and chat links) get ids from these descending sequences, so a
# temporary id is always negative and never collides with amoCRM's positive ids.
local_contact_id = Sequence(
    "contacts_local_id_seq", start=-1, increment=-1, maxvalue=-1, metadata=metadata
)
local_chat_link_id = Sequence(
    "contact_chats_local_id_seq", start=-1, increment=-1, maxvalue=-1, metadata=metadata
)


def _contact_fk(comment: str = "The contact (contacts.id).") -> Column[int]:
    return Column(
        "contact_id",
        BigInteger,
        ForeignKey("contacts.id", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
        comment=comment,
    )


def _pulled_contact_id() -> Column[int]:
    """`contact_id` of a table only pull writes: no foreign key (migration 0007). The guard
    triggers refuse local writes, pull writes the contact and these rows in one transaction,
    and contacts are never deleted, so the key guarded nothing while its check (a lookup and a
    row lock in `contacts` per row) was a quarter of PostgreSQL's work in a first full resync."""
    return Column(
        "contact_id",
        BigInteger,
        nullable=False,
        comment="The contact (contacts.id). Not a foreign key: only pull writes these rows, in "
        "the transaction that writes the contact, and contacts are never deleted.",
    )


contacts = Table(
    "contacts",
    metadata,
    Column(
        "id",
        BigInteger,
        local_contact_id,
        server_default=text("nextval('contacts_local_id_seq')"),
        primary_key=True,
        comment="amoCRM contact id; negative while a locally inserted contact awaits push.",
    ),
    Column("name", Text, comment="Full name as shown in amoCRM."),
    Column("first_name", Text, comment="First name."),
    Column("last_name", Text, comment="Last name."),
    Column("responsible_user_id", BigInteger, comment="amoCRM user responsible for the contact."),
    Column("group_id", BigInteger, comment="Group of the responsible user (read-only)."),
    Column("created_by", BigInteger, comment="amoCRM user who created the contact (read-only)."),
    Column("updated_by", BigInteger, comment="amoCRM user who last updated it (read-only)."),
    Column("created_at", TZ, comment="Created in amoCRM (read-only)."),
    Column("updated_at", TZ, comment="Last updated in amoCRM, 1-second resolution (read-only)."),
    Column("closest_task_at", TZ, comment="Due time of the closest open task (read-only)."),
    Column("account_id", BigInteger, comment="amoCRM account id (read-only)."),
    Column(
        "custom_fields_values",
        JSONB,
        comment="Custom field values in amoCRM's own JSON shape; NULL when none. "
        "One row per value in contact_custom_field_values.",
    ),
    Column(
        "is_deleted",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="True once the contact was deleted in amoCRM (rows are never removed).",
    ),
    Column("deleted_at", TZ, comment="When the sync saw the deletion in amoCRM."),
    Column(
        "sync_status",
        Text,
        nullable=False,
        server_default=text("'synced'"),
        comment="synced | pending (local change awaiting push) | conflict | error.",
    ),
    Column("sync_error", Text, comment="amoCRM's message when sync_status = 'error'."),
    Column("synced_at", TZ, comment="When the row last matched amoCRM (pull or push)."),
    CheckConstraint(
        "sync_status IN ('synced', 'pending', 'conflict', 'error')", name="sync_status"
    ),
    comment="One row per amoCRM contact. UPDATE name, first_name, last_name, "
    "responsible_user_id or custom_fields_values to change it in amoCRM; INSERT without an id "
    "to create one. DELETE is refused: the amoCRM API cannot delete contacts.",
)
Index("ix_contacts_updated_at", contacts.c.updated_at, contacts.c.id)
Index(
    "ix_contacts_unsynced",
    contacts.c.sync_status,
    postgresql_where=text("sync_status <> 'synced'"),
)
Index("ix_contacts_responsible_user_id", contacts.c.responsible_user_id)

contact_custom_field_values = Table(
    "contact_custom_field_values",
    metadata,
    _pulled_contact_id(),
    Column("field_id", BigInteger, nullable=False, comment="amoCRM custom field id."),
    Column("field_code", Text, comment="Field code such as PHONE or EMAIL; NULL if none."),
    Column("field_name", Text, comment="Field name as shown in amoCRM (may be localised)."),
    Column("field_type", Text, comment="Field type: text, numeric, select, multitext, date, …"),
    Column(
        "position", Integer, nullable=False, comment="Order of the value within the field, from 0."
    ),
    Column(
        "value",
        Text,
        comment="The value as text: dates as ISO 8601, checkboxes as true/false, the option's "
        "label for select, multiselect and radiobutton.",
    ),
    Column(
        "enum_id",
        BigInteger,
        comment="amoCRM's option id: select, multiselect, radiobutton and multitext values.",
    ),
    Column(
        "enum_code",
        Text,
        comment="amoCRM's enum code of the value as sent: WORK, MOB, … for phones and e-mails; "
        "NULL where amoCRM sends none, as for select, multiselect and radiobutton values.",
    ),
    PrimaryKeyConstraint("contact_id", "field_id", "position"),
    comment="One row per custom field value of a contact; replaced on every pull of the contact.",
)
Index("ix_contact_custom_field_values_field_id", contact_custom_field_values.c.field_id)
Index("ix_contact_custom_field_values_field_code", contact_custom_field_values.c.field_code)


def _link_table(name: str, column: str, what: str, plural: str) -> Table:
    table = Table(
        name,
        metadata,
        _pulled_contact_id(),
        Column(column, BigInteger, nullable=False, comment=f"amoCRM {what} id."),
        PrimaryKeyConstraint("contact_id", column),
        comment=f"Links from contacts to amoCRM {plural}; replaced on every pull of the contact.",
    )
    Index(f"ix_{name}_{column}", table.c[column])
    return table


contact_leads = _link_table("contact_leads", "lead_id", "lead", "leads")
contact_customers = _link_table("contact_customers", "customer_id", "customer", "customers")
contact_companies = _link_table("contact_companies", "company_id", "company", "companies")

contact_tags = Table(
    "contact_tags",
    metadata,
    _pulled_contact_id(),
    Column("tag_id", BigInteger, nullable=False, comment="amoCRM tag id."),
    Column("tag_name", Text, comment="Tag name."),
    PrimaryKeyConstraint("contact_id", "tag_id"),
    comment="Tags of contacts; replaced on every pull of the contact.",
)
Index("ix_contact_tags_tag_name", contact_tags.c.tag_name)

contact_catalog_elements = Table(
    "contact_catalog_elements",
    metadata,
    _pulled_contact_id(),
    Column("catalog_id", BigInteger, nullable=False, comment="amoCRM catalog (list) id."),
    Column("element_id", BigInteger, nullable=False, comment="Catalog element id."),
    Column("quantity", Numeric, comment="Quantity of the element linked to the contact."),
    Column("metadata", JSONB, comment="amoCRM's metadata object for the link, as sent."),
    PrimaryKeyConstraint("contact_id", "catalog_id", "element_id"),
    comment="Catalog (list) elements linked to contacts; replaced on every pull of the contact.",
)
Index("ix_contact_catalog_elements_element_id", contact_catalog_elements.c.element_id)

contact_chats = Table(
    "contact_chats",
    metadata,
    Column(
        "id",
        BigInteger,
        local_chat_link_id,
        server_default=text("nextval('contact_chats_local_id_seq')"),
        primary_key=True,
        comment="amoCRM chat link id; negative while a locally inserted link awaits push.",
    ),
    _contact_fk(),
    Column("chat_id", Text, nullable=False, comment="amoCRM chat UUID."),
    UniqueConstraint("chat_id"),
    comment="Chats linked to contacts (a chat belongs to one contact). INSERT (contact_id, "
    "chat_id) to link a chat in amoCRM.",
)
Index("ix_contact_chats_contact_id", contact_chats.c.contact_id)

sync_changes = Table(
    "sync_changes",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="Capture order."),
    _contact_fk("The contact changed (negative for a contact not yet created in amoCRM)."),
    Column("kind", Text, nullable=False, comment="update | create | chat_link."),
    Column("new_values", JSONB, comment="Changed writable fields and their new local values."),
    Column(
        "base_values",
        JSONB,
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
    _contact_fk(),
    Column("field", Text, nullable=False, comment="The field changed on both sides."),
    Column("base_value", JSONB, comment="The value both sides started from."),
    Column("local_value", JSONB, comment="The value edited in PostgreSQL."),
    Column("remote_value", JSONB, comment="The value edited in amoCRM."),
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

# --- added by migration 0002 (pull) -----------------------------------------------------------

contact_custom_fields = Table(
    "contact_custom_fields",
    metadata,
    Column("id", BigInteger, primary_key=True, comment="amoCRM custom field id."),
    Column("name", Text, comment="Field name as shown in amoCRM (may be localised)."),
    Column("code", Text, comment="Field code such as PHONE or EMAIL; NULL if none."),
    Column("type", Text, comment="Field type: text, numeric, select, multitext, date, …"),
    Column("sort", Integer, comment="Display order in amoCRM."),
    Column("is_api_only", Boolean, comment="True if the field is only visible through the API."),
    Column(
        "enums",
        JSONB,
        comment="The field's choices as amoCRM sends them: [{id, value, sort}], NULL if none.",
    ),
    Column(
        "fetched_at",
        TZ,
        nullable=False,
        server_default=text("now()"),
        comment="When pull last read this definition from amoCRM.",
    ),
    comment="Definitions of the account's contact custom fields (GET "
    "/api/v4/contacts/custom_fields), cached by pull and refreshed when an unknown field or "
    "enum appears.",
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

# Relation tables replaced whenever a contact is pulled, in dependency order.
RELATION_TABLES = (
    contact_custom_field_values,
    contact_tags,
    contact_leads,
    contact_customers,
    contact_companies,
    contact_catalog_elements,
)
