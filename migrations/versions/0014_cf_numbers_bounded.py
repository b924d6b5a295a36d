"""custom_fields_values check: ids at most bigint, number values below 1e300 in magnitude

A local edit could store `{"field_id": 1e5000, ...}` or a value `1e5000`: the check refused ids
at or below 0 only and took any number as a value. jsonb prints 1e5000 as a 5001-digit integer,
which Python's json (psycopg's loader) refuses above 4300 digits, so reading that row failed every
push and pull (review, reproduced). An id (`field_id`, `enum_id`) above 9223372036854775807
(bigint, the tables' id columns) is now refused, and so is a number `value` of magnitude 1e300 or
more: a double (amoCRM's and most JSON readers' number) ends near 1.8e308, and 1e300 prints as at
most 301 digits. The same bound holds for any number of a field object outside `values` (keys
push ignores, such as `field_name`, are still read back from the column).

Functions are replaced in place. Downgrade puts back 0009's definitions.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:45:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE OR REPLACE FUNCTION "{s}".amosync_cf_scalar_problem(x jsonb, path text, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF NOT "{s}".amosync_cf_present(x) THEN
        RETURN NULL;
    END IF;
    IF kind = 'code' THEN
        IF jsonb_typeof(x) = 'string' AND (x #>> '{}') ~ '\S' THEN
            RETURN NULL;
        END IF;
        RETURN path || ': must be a non-empty string, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    IF jsonb_typeof(x) <> 'number' OR x::numeric <> trunc(x::numeric) THEN
        RETURN path || ': must be an integer, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    IF x::numeric <= 0 THEN
        RETURN path || ': must be above 0, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    IF x::numeric > 9223372036854775807 THEN
        RETURN path || ': must be at most 9223372036854775807, got '
            || "{s}".amosync_cf_shown(x);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_item_problem(item jsonb, path text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    extra text;
BEGIN
    IF jsonb_typeof(item) <> 'object' THEN
        RETURN path || ': must be an object with value, enum_id or enum_code, got '
            || jsonb_typeof(item);
    END IF;
    SELECT min(k COLLATE "C") INTO extra FROM jsonb_object_keys(item) AS k
    WHERE k NOT IN ('value', 'enum_id', 'enum_code', 'enum');
    IF extra IS NOT NULL THEN
        RETURN format('%s: unexpected key "%s" (a value has value, enum_id, enum_code)',
                      path, extra);
    END IF;
    IF NOT ("{s}".amosync_cf_present(item -> 'value')
            OR "{s}".amosync_cf_present(item -> 'enum_id')
            OR "{s}".amosync_cf_present(item -> 'enum_code')
            OR "{s}".amosync_cf_present(item -> 'enum')) THEN
        RETURN path || ': needs value, enum_id or enum_code';
    END IF;
    IF jsonb_typeof(item -> 'value') IN ('object', 'array') THEN
        RETURN path || '.value: must be a string, number or boolean, got '
            || jsonb_typeof(item -> 'value');
    END IF;
    IF jsonb_typeof(item -> 'value') = 'number' AND abs((item -> 'value')::numeric) >= 1e300 THEN
        RETURN path || '.value: must be a number below 1e300 in magnitude, got '
            || "{s}".amosync_cf_shown(item -> 'value');
    END IF;
    RETURN coalesce(
        "{s}".amosync_cf_scalar_problem(item -> 'enum_id', path || '.enum_id', 'integer'),
        "{s}".amosync_cf_scalar_problem(item -> 'enum_code', path || '.enum_code', 'code'),
        "{s}".amosync_cf_scalar_problem(item -> 'enum', path || '.enum', 'code'));
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_entry_problem(entry jsonb, path text, check_items boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    item jsonb;
    j integer;
    found text;
BEGIN
    IF jsonb_typeof(entry) <> 'object' THEN
        RETURN path || ': must be an object with field_id or field_code and values, got '
            || jsonb_typeof(entry);
    END IF;
    IF NOT ("{s}".amosync_cf_present(entry -> 'field_id')
            OR "{s}".amosync_cf_present(entry -> 'field_code')) THEN
        RETURN path || ': needs field_id or field_code';
    END IF;
    found := coalesce(
        "{s}".amosync_cf_scalar_problem(entry -> 'field_id', path || '.field_id', 'integer'),
        "{s}".amosync_cf_scalar_problem(entry -> 'field_code', path || '.field_code', 'code'));
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    IF jsonb_path_exists(entry - 'values',
                         'strict $.** ? (@.type() == "number" && @.abs() >= 1e300)') THEN
        RETURN path || ': holds a number of magnitude 1e300 or more (outside values)';
    END IF;
    IF NOT entry ? 'values' THEN
        RETURN path || '.values: missing; write null or [] to clear the field';
    END IF;
    IF jsonb_typeof(entry -> 'values') = 'null' THEN
        RETURN NULL;
    END IF;
    IF NOT check_items AND jsonb_typeof(entry -> 'values') = 'array' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(entry -> 'values') <> 'array' THEN
        RETURN path || '.values: must be an array of values or null, got '
            || jsonb_typeof(entry -> 'values');
    END IF;
    FOR item, j IN SELECT e, (n - 1)::integer
                   FROM jsonb_array_elements(entry -> 'values') WITH ORDINALITY AS t(e, n) LOOP
        found := "{s}".amosync_cf_item_problem(item, format('%s.values[%s]', path, j));
        IF found IS NOT NULL THEN
            RETURN found;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
"""

# 0009's definitions (amosync_cf_scalar_problem and amosync_cf_entry_problem: 0003's), as they
# installed them
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION "{s}".amosync_cf_scalar_problem(x jsonb, path text, kind text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    IF NOT "{s}".amosync_cf_present(x) THEN
        RETURN NULL;
    END IF;
    IF kind = 'code' THEN
        IF jsonb_typeof(x) = 'string' AND (x #>> '{}') ~ '\S' THEN
            RETURN NULL;
        END IF;
        RETURN path || ': must be a non-empty string, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    IF jsonb_typeof(x) <> 'number' OR x::numeric <> trunc(x::numeric) THEN
        RETURN path || ': must be an integer, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    IF x::numeric <= 0 THEN
        RETURN path || ': must be above 0, got ' || "{s}".amosync_cf_shown(x);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_item_problem(item jsonb, path text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    extra text;
BEGIN
    IF jsonb_typeof(item) <> 'object' THEN
        RETURN path || ': must be an object with value, enum_id or enum_code, got '
            || jsonb_typeof(item);
    END IF;
    SELECT min(k COLLATE "C") INTO extra FROM jsonb_object_keys(item) AS k
    WHERE k NOT IN ('value', 'enum_id', 'enum_code', 'enum');
    IF extra IS NOT NULL THEN
        RETURN format('%s: unexpected key "%s" (a value has value, enum_id, enum_code)',
                      path, extra);
    END IF;
    IF NOT ("{s}".amosync_cf_present(item -> 'value')
            OR "{s}".amosync_cf_present(item -> 'enum_id')
            OR "{s}".amosync_cf_present(item -> 'enum_code')
            OR "{s}".amosync_cf_present(item -> 'enum')) THEN
        RETURN path || ': needs value, enum_id or enum_code';
    END IF;
    IF jsonb_typeof(item -> 'value') IN ('object', 'array') THEN
        RETURN path || '.value: must be a string, number or boolean, got '
            || jsonb_typeof(item -> 'value');
    END IF;
    RETURN coalesce(
        "{s}".amosync_cf_scalar_problem(item -> 'enum_id', path || '.enum_id', 'integer'),
        "{s}".amosync_cf_scalar_problem(item -> 'enum_code', path || '.enum_code', 'code'),
        "{s}".amosync_cf_scalar_problem(item -> 'enum', path || '.enum', 'code'));
END
$fn$;

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_entry_problem(entry jsonb, path text, check_items boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    item jsonb;
    j integer;
    found text;
BEGIN
    IF jsonb_typeof(entry) <> 'object' THEN
        RETURN path || ': must be an object with field_id or field_code and values, got '
            || jsonb_typeof(entry);
    END IF;
    IF NOT ("{s}".amosync_cf_present(entry -> 'field_id')
            OR "{s}".amosync_cf_present(entry -> 'field_code')) THEN
        RETURN path || ': needs field_id or field_code';
    END IF;
    found := coalesce(
        "{s}".amosync_cf_scalar_problem(entry -> 'field_id', path || '.field_id', 'integer'),
        "{s}".amosync_cf_scalar_problem(entry -> 'field_code', path || '.field_code', 'code'));
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    IF NOT entry ? 'values' THEN
        RETURN path || '.values: missing; write null or [] to clear the field';
    END IF;
    IF jsonb_typeof(entry -> 'values') = 'null' THEN
        RETURN NULL;
    END IF;
    IF NOT check_items AND jsonb_typeof(entry -> 'values') = 'array' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(entry -> 'values') <> 'array' THEN
        RETURN path || '.values: must be an array of values or null, got '
            || jsonb_typeof(entry -> 'values');
    END IF;
    FOR item, j IN SELECT e, (n - 1)::integer
                   FROM jsonb_array_elements(entry -> 'values') WITH ORDINALITY AS t(e, n) LOOP
        found := "{s}".amosync_cf_item_problem(item, format('%s.values[%s]', path, j));
        IF found IS NOT NULL THEN
            RETURN found;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
"""


def upgrade() -> None:
    _execute(UPGRADE)


def downgrade() -> None:
    _execute(DOWNGRADE)


def _execute(sql: str) -> None:
    """Each statement of `sql` (they end with `;` and a blank line) on the target schema."""
    schema = str(context.config.attributes["schema"])
    for statement in sql.strip().removesuffix(";").split(";\n\n"):
        if statement.strip():
            op.execute(statement.strip().replace('"{s}"', f'"{schema}"'))
