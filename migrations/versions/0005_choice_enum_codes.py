"""choice enum codes: `contact_custom_field_values.enum_code` is amoCRM's own, NULL for choices

Before this revision pull filled a missing `enum_code` with the option's label from the cached
field definitions (`contact_custom_fields.enums`). amoCRM sends no `enum_code` for select,
multiselect and radiobutton values (it sends the label in `value` and the option in `enum_id`),
so every such row held its label in `enum_code`. Pull now stores the value's own `enum_code`;
this revision clears the codes the old pull made up, and says so in the columns' comments.

What is certain to be wrong, and only that, is cleared: a row of a select, multiselect or
radiobutton field with an `enum_id` whose `enum_code` is that option's label, either as the
definitions hold it now or as the row's `value` holds it (the label amoCRM sent with the value,
which the old copy matched unless the option was renamed in between). An `enum_code` that is no
label of its option did not come from the copy and is kept; so are multitext codes (WORK, MOB, …:
amoCRM sends them, and an option's label there is its code). The next pull of a contact rewrites
its rows from amoCRM's data in any case, so a full resync leaves nothing of the old behaviour.

The relation tables refuse writes that are not the sync's own, so the update runs as the sync
(`amosync.origin`), only for its own statement.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

AS_SYNC = "SELECT set_config('amosync.origin', 'sync', true)"
AS_BEFORE = "SELECT set_config('amosync.origin', '', true)"
CLEAR = """
UPDATE "{s}".contact_custom_field_values v
SET enum_code = NULL
WHERE v.enum_code IS NOT NULL
  AND v.enum_id IS NOT NULL
  AND v.field_type IN ('select', 'multiselect', 'radiobutton')
  AND (v.enum_code = v.value
       OR EXISTS (
           SELECT 1 FROM "{s}".contact_custom_fields f,
               jsonb_array_elements(CASE WHEN jsonb_typeof(f.enums) = 'array'
                                         THEN f.enums ELSE '[]'::jsonb END) AS o(opt)
           WHERE f.id = v.field_id
             AND o.opt ->> 'id' = v.enum_id::text
             AND o.opt ->> 'value' = v.enum_code))
"""

COMMENTS = {
    "value": (
        "The value as text: dates as ISO 8601, checkboxes as true/false, the option's label "
        "for select, multiselect and radiobutton.",
        "The value as text (dates as ISO 8601, checkboxes as true/false).",
    ),
    "enum_id": (
        "amoCRM's option id: select, multiselect, radiobutton and multitext values.",
        "Enum id for select/multiselect/multitext values.",
    ),
    "enum_code": (
        "amoCRM's enum code of the value as sent: WORK, MOB, … for phones and e-mails; NULL "
        "where amoCRM sends none, as for select, multiselect and radiobutton values.",
        "Enum code (WORK, MOB, …) or label, where amoCRM has one.",
    ),
}


def upgrade() -> None:
    op.execute(AS_SYNC)
    op.execute(CLEAR.format(s=_schema()))
    op.execute(AS_BEFORE)
    _comment(0)


def downgrade() -> None:
    """The column comments go back to 0004's. The cleared codes do not: they were labels made
    up by the old pull, never amoCRM's data, and its next pull of each contact writes them
    again anyway."""
    _comment(1)


def _comment(which: int) -> None:
    for column, texts in COMMENTS.items():
        text = texts[which].replace("'", "''")
        op.execute(
            f"COMMENT ON COLUMN \"{_schema()}\".contact_custom_field_values.{column} IS '{text}'"
        )


def _schema() -> str:
    return str(context.config.attributes["schema"])
