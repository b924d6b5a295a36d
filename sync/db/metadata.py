"""What every table of `sync.db.schema` is declared with: the one `MetaData` (with its naming
convention), the timestamp type, the local-id sequences and the `contact_id` column kinds."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    MetaData,
    Sequence,
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
# A nullable jsonb column: Python's None is SQL NULL. SQLAlchemy's JSONB writes it as the JSON
# value null, which `IS NULL` does not find and jsonb functions take for a value
# (`jsonb_array_elements('null')` fails the whole query): `contact_custom_fields.enums` held it
# for every field without choices although its comment says "NULL if none" (audit; migration
# 0016 clears the rows written before).
JSON_OR_NULL = JSONB(none_as_null=True)
SYNC_STATUSES = tuple(ContactStatus)

# Locally inserted contacts (and chat links) get ids from these descending sequences, so a
# temporary id is always negative and never collides with amoCRM's positive ids.
local_contact_id = Sequence(
    "contacts_local_id_seq", start=-1, increment=-1, maxvalue=-1, metadata=metadata
)
local_chat_link_id = Sequence(
    "contact_chats_local_id_seq", start=-1, increment=-1, maxvalue=-1, metadata=metadata
)


def contact_fk(comment: str = "The contact (contacts.id).") -> Column[int]:
    return Column(
        "contact_id",
        BigInteger,
        ForeignKey("contacts.id", ondelete="CASCADE", onupdate="CASCADE"),
        nullable=False,
        comment=comment,
    )


def pulled_contact_id() -> Column[int]:
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
