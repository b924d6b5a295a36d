"""Views for BI tools and SQL users, over the tables pull fills (plain SQL; today's definitions,
installed by migration 0002, which holds its own frozen copy, and 0016, which commented the
contacts_flat columns taken from contacts: a change here ships as a new revision that recreates
the views or their comments).

    contact_phones   one row per phone number of a contact, with its enum code (WORK, MOB, …)
    contact_emails   one row per e-mail address of a contact, with its enum code (WORK, PRIV, …)
    contacts_flat    one row per contact: its columns plus the primary phone and e-mail (the first
                     value of the PHONE / EMAIL field), its tag names and its company

Phones and e-mails come from `contact_custom_field_values` (the PHONE and EMAIL fields are found
by their `code`, never by their localised name), so they show what the last pull stored.
"""

from __future__ import annotations

from sync.db.schema import contacts

_MULTITEXT = """
CREATE VIEW "{s}".{view} AS
SELECT v.contact_id, v.field_id, v.position, v.value AS {column}, v.enum_id, v.enum_code
FROM "{s}".contact_custom_field_values v
WHERE v.field_code = '{code}'
"""

_FLAT = """
CREATE VIEW "{s}".contacts_flat AS
SELECT c.id, c.name, c.first_name, c.last_name, c.responsible_user_id, c.group_id,
       c.created_by, c.updated_by, c.created_at, c.updated_at, c.closest_task_at, c.account_id,
       p.phone, p.enum_code AS phone_enum_code,
       e.email, e.enum_code AS email_enum_code,
       t.tags, co.company_id,
       c.is_deleted, c.deleted_at, c.sync_status, c.synced_at
FROM "{s}".contacts c
LEFT JOIN LATERAL (
    SELECT ph.phone, ph.enum_code FROM "{s}".contact_phones ph
    WHERE ph.contact_id = c.id ORDER BY ph.field_id, ph.position LIMIT 1
) p ON true
LEFT JOIN LATERAL (
    SELECT em.email, em.enum_code FROM "{s}".contact_emails em
    WHERE em.contact_id = c.id ORDER BY em.field_id, em.position LIMIT 1
) e ON true
LEFT JOIN LATERAL (
    SELECT array_agg(tg.tag_name ORDER BY tg.tag_name) AS tags FROM "{s}".contact_tags tg
    WHERE tg.contact_id = c.id
) t ON true
LEFT JOIN LATERAL (
    SELECT min(cc.company_id) AS company_id FROM "{s}".contact_companies cc
    WHERE cc.contact_id = c.id
) co ON true
"""

# the columns contacts_flat takes from contacts as they are: described as there
_FLAT_CONTACT_COLUMNS = (
    "id", "name", "first_name", "last_name", "responsible_user_id", "group_id", "created_by",
    "updated_by", "created_at", "updated_at", "closest_task_at", "account_id", "is_deleted",
    "deleted_at", "sync_status", "synced_at",
)  # fmt: skip

# (object, column or None, comment): every column of every view has one, as every table's has
# (a BI tool's data dictionary shows them; tests/integration/test_migrations.py checks)
_COMMENTS: tuple[tuple[str, str | None, str], ...] = (
    ("contact_phones", None, "One row per phone number of a contact (the PHONE field)."),
    ("contact_phones", "contact_id", "The contact (contacts.id)."),
    ("contact_phones", "field_id", "amoCRM id of the PHONE field."),
    ("contact_phones", "position", "Order of the number within the field, from 0."),
    ("contact_phones", "phone", "The phone number as entered in amoCRM."),
    ("contact_phones", "enum_id", "amoCRM enum id of the number's kind."),
    ("contact_phones", "enum_code", "Kind of number: WORK, WORKDD, MOB, FAX, HOME, OTHER."),
    ("contact_emails", None, "One row per e-mail address of a contact (the EMAIL field)."),
    ("contact_emails", "contact_id", "The contact (contacts.id)."),
    ("contact_emails", "field_id", "amoCRM id of the EMAIL field."),
    ("contact_emails", "position", "Order of the address within the field, from 0."),
    ("contact_emails", "email", "The e-mail address as entered in amoCRM."),
    ("contact_emails", "enum_id", "amoCRM enum id of the address's kind."),
    ("contact_emails", "enum_code", "Kind of address: WORK, PRIV, OTHER."),
    (
        "contacts_flat",
        None,
        "One row per contact with its primary phone and e-mail as columns, for BI tools.",
    ),
    ("contacts_flat", "phone", "Primary phone: the first value of the PHONE field."),
    ("contacts_flat", "phone_enum_code", "Kind of the primary phone (WORK, MOB, …)."),
    ("contacts_flat", "email", "Primary e-mail: the first value of the EMAIL field."),
    ("contacts_flat", "email_enum_code", "Kind of the primary e-mail (WORK, PRIV, …)."),
    ("contacts_flat", "tags", "Tag names, sorted; NULL when the contact has none."),
    ("contacts_flat", "company_id", "The contact's company (amoCRM allows at most one)."),
    *(("contacts_flat", c, str(contacts.c[c].comment)) for c in _FLAT_CONTACT_COLUMNS),
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment(schema: str, name: str, column: str | None, text: str) -> str:
    target = f'VIEW "{schema}".{name}' if column is None else f'COLUMN "{schema}".{name}.{column}'
    return f"COMMENT ON {target} IS {_quote(text)}"


def create_statements(schema: str) -> list[str]:
    """SQL that creates the views and their comments (the tables must exist)."""
    statements = [
        _MULTITEXT.format(s=schema, view="contact_phones", column="phone", code="PHONE"),
        _MULTITEXT.format(s=schema, view="contact_emails", column="email", code="EMAIL"),
        _FLAT.format(s=schema),
    ]
    statements += [_comment(schema, *entry) for entry in _COMMENTS]
    return statements
