"""The contact data tables: `contacts` (what people edit), the relation tables pull replaces
with every page, `contact_chats`, and pull's cache of custom-field definitions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from sync.db.metadata import (
    JSON_OR_NULL,
    TZ,
    contact_fk,
    local_chat_link_id,
    local_contact_id,
    metadata,
    pulled_contact_id,
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
        JSON_OR_NULL,
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
    pulled_contact_id(),
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
        comment="The value as text: dates as ISO 8601 (UTC), or amoCRM's number when no ISO date "
        "(years 1-9999) can show it (e.g. milliseconds); checkboxes as true/false, the option's "
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
        pulled_contact_id(),
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
    pulled_contact_id(),
    Column("tag_id", BigInteger, nullable=False, comment="amoCRM tag id."),
    Column("tag_name", Text, comment="Tag name."),
    PrimaryKeyConstraint("contact_id", "tag_id"),
    comment="Tags of contacts; replaced on every pull of the contact.",
)
Index("ix_contact_tags_tag_name", contact_tags.c.tag_name)

contact_catalog_elements = Table(
    "contact_catalog_elements",
    metadata,
    pulled_contact_id(),
    Column("catalog_id", BigInteger, nullable=False, comment="amoCRM catalog (list) id."),
    Column("element_id", BigInteger, nullable=False, comment="Catalog element id."),
    Column("quantity", Numeric, comment="Quantity of the element linked to the contact."),
    Column(
        "metadata",
        JSON_OR_NULL,
        comment="amoCRM's metadata object for the link, as sent; NULL when it sent none.",
    ),
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
    contact_fk(),
    Column("chat_id", Text, nullable=False, comment="amoCRM chat UUID."),
    UniqueConstraint("chat_id"),
    comment="Chats linked to contacts (a chat belongs to one contact). INSERT (contact_id, "
    "chat_id) to link a chat in amoCRM.",
)
Index("ix_contact_chats_contact_id", contact_chats.c.contact_id)

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
        JSON_OR_NULL,
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

# Relation tables replaced whenever a contact is pulled, in dependency order.
RELATION_TABLES = (
    contact_custom_field_values,
    contact_tags,
    contact_leads,
    contact_customers,
    contact_companies,
    contact_catalog_elements,
)
