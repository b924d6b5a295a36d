"""The database contract as SQLAlchemy metadata (see CONTRACT.md, "Database").

Tables are declared without a schema; the engine maps them to the configured schema with
`schema_translate_map`, and migrations create them with `search_path` set to it. Every table and
column carries a comment, which the migrations turn into `COMMENT ON` so BI tools show a data
dictionary. Change-capture triggers and functions live in `sync.db.capture` (plain SQL).

The declarations live in three modules, all on the one `metadata`: `sync.db.metadata` (what the
tables are declared with), `sync.db.contact_tables` (contacts, their relation tables, chats, the
field definitions) and `sync.db.sync_tables` (outbox, conflicts, runs, state, requests); callers
import every table from here.
"""

from sync.db.contact_tables import (
    RELATION_TABLES,
    contact_catalog_elements,
    contact_chats,
    contact_companies,
    contact_custom_field_values,
    contact_custom_fields,
    contact_customers,
    contact_leads,
    contact_tags,
    contacts,
)
from sync.db.metadata import (
    NAMING,
    SYNC_STATUSES,
    TZ,
    local_chat_link_id,
    local_contact_id,
    metadata,
)
from sync.db.sync_tables import (
    sync_changes,
    sync_conflicts,
    sync_full_seen,
    sync_requests,
    sync_runs,
    sync_state,
)

__all__ = [
    "NAMING",
    "RELATION_TABLES",
    "SYNC_STATUSES",
    "TZ",
    "contact_catalog_elements",
    "contact_chats",
    "contact_companies",
    "contact_custom_field_values",
    "contact_custom_fields",
    "contact_customers",
    "contact_leads",
    "contact_tags",
    "contacts",
    "local_chat_link_id",
    "local_contact_id",
    "metadata",
    "sync_changes",
    "sync_conflicts",
    "sync_full_seen",
    "sync_requests",
    "sync_runs",
    "sync_state",
]
