"""custom_fields_values check: a value may be a JSON object (legal_entity, linked_entity, file)

The check refused any object as a value ("must be a string, number or boolean, got object"),
so a local change of a legal_entity, linked_entity or file field, whose values amoCRM itself
gives as objects, could not be written at all (audit against an independent stand-in). The
contract's `custom_fields_values` is amoCRM's own shape, and since 0009 whether a value fits
its field's type is amoCRM's to judge at push; an object value is now taken (its numbers below
1e300 in magnitude, as everywhere else), an array still refused with a line that says what a
value may be. The hint names objects too.

Functions are replaced in place. Downgrade puts back 0014's definitions.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 22:45:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

UPGRADE = r"""
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
    IF jsonb_typeof(item -> 'value') = 'array' THEN
        RETURN path || '.value: must be a string, number, boolean or object (legal_entity, '
            'linked_entity, file: amoCRM''s own shape), got array';
    END IF;
    IF jsonb_typeof(item -> 'value') = 'object' AND jsonb_path_exists(item -> 'value',
            'strict $.** ? (@.type() == "number" && @.abs() >= 1e300)') THEN
        RETURN path || '.value: holds a number of magnitude 1e300 or more';
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

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_problem(
    cf jsonb, old_cf jsonb, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    entry jsonb;
    i integer;
    ref text;
    seen jsonb := '{}';
    codes jsonb;
    unchanged boolean;
BEGIN
    hint := 'custom_fields_values is NULL (no custom fields: clears them all) or a JSON array of '
        '{"field_id": <integer> or "field_code": "<CODE>", "values": null | [] | '
        '[{"value": <text, number, boolean or object>, "enum_id": <integer>, '
        '"enum_code": "<CODE>"}]}; '
        'a field left out, or with values null or [], is cleared in amoCRM.';
    IF NOT "{s}".amosync_cf_present(cf) THEN
        hint := NULL;
        RETURN;
    END IF;
    IF jsonb_typeof(cf) <> 'array' THEN
        problem := 'custom_fields_values: must be a JSON array of fields or NULL, got '
            || jsonb_typeof(cf);
        RETURN;
    END IF;
    SELECT coalesce(jsonb_object_agg(upper(e ->> 'field_code'),
                                     trunc((e -> 'field_id')::numeric)::text), '{}')
    INTO codes FROM jsonb_array_elements(cf) AS e
    WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'field_code') = 'string'
      AND jsonb_typeof(e -> 'field_id') = 'number'
      AND (e -> 'field_id')::numeric = trunc((e -> 'field_id')::numeric);
    FOR entry, i IN SELECT e, (n - 1)::integer
                    FROM jsonb_array_elements(cf) WITH ORDINALITY AS t(e, n) LOOP
        unchanged := "{s}".amosync_cf_unchanged(entry, old_cf);
        problem := "{s}".amosync_cf_entry_problem(
            entry, format('custom_fields_values[%s]', i), NOT unchanged);
        IF problem IS NOT NULL THEN
            RETURN;
        END IF;
        IF "{s}".amosync_cf_present(entry -> 'field_id') THEN
            ref := trunc((entry -> 'field_id')::numeric)::text;
        ELSE
            ref := coalesce(
                codes ->> upper(entry ->> 'field_code'),
                (SELECT f.id::text FROM "{s}".contact_custom_fields f
                 WHERE upper(f.code) = upper(entry ->> 'field_code') ORDER BY f.id LIMIT 1),
                upper(entry ->> 'field_code'));
        END IF;
        IF seen ? ref THEN
            problem := format('custom_fields_values[%s]: field %s appears twice (also at [%s])',
                              i, ref, seen ->> ref);
            RETURN;
        END IF;
        seen := seen || jsonb_build_object(ref, i);
    END LOOP;
    hint := NULL;
END
$fn$;
"""

DOWNGRADE = r"""
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

CREATE OR REPLACE FUNCTION "{s}".amosync_cf_problem(
    cf jsonb, old_cf jsonb, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    entry jsonb;
    i integer;
    ref text;
    seen jsonb := '{}';
    codes jsonb;
    unchanged boolean;
BEGIN
    hint := 'custom_fields_values is NULL (no custom fields: clears them all) or a JSON array of '
        '{"field_id": <integer> or "field_code": "<CODE>", "values": null | [] | '
        '[{"value": <text, number or boolean>, "enum_id": <integer>, "enum_code": "<CODE>"}]}; '
        'a field left out, or with values null or [], is cleared in amoCRM.';
    IF NOT "{s}".amosync_cf_present(cf) THEN
        hint := NULL;
        RETURN;
    END IF;
    IF jsonb_typeof(cf) <> 'array' THEN
        problem := 'custom_fields_values: must be a JSON array of fields or NULL, got '
            || jsonb_typeof(cf);
        RETURN;
    END IF;
    SELECT coalesce(jsonb_object_agg(upper(e ->> 'field_code'),
                                     trunc((e -> 'field_id')::numeric)::text), '{}')
    INTO codes FROM jsonb_array_elements(cf) AS e
    WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'field_code') = 'string'
      AND jsonb_typeof(e -> 'field_id') = 'number'
      AND (e -> 'field_id')::numeric = trunc((e -> 'field_id')::numeric);
    FOR entry, i IN SELECT e, (n - 1)::integer
                    FROM jsonb_array_elements(cf) WITH ORDINALITY AS t(e, n) LOOP
        unchanged := "{s}".amosync_cf_unchanged(entry, old_cf);
        problem := "{s}".amosync_cf_entry_problem(
            entry, format('custom_fields_values[%s]', i), NOT unchanged);
        IF problem IS NOT NULL THEN
            RETURN;
        END IF;
        IF "{s}".amosync_cf_present(entry -> 'field_id') THEN
            ref := trunc((entry -> 'field_id')::numeric)::text;
        ELSE
            ref := coalesce(
                codes ->> upper(entry ->> 'field_code'),
                (SELECT f.id::text FROM "{s}".contact_custom_fields f
                 WHERE upper(f.code) = upper(entry ->> 'field_code') ORDER BY f.id LIMIT 1),
                upper(entry ->> 'field_code'));
        END IF;
        IF seen ? ref THEN
            problem := format('custom_fields_values[%s]: field %s appears twice (also at [%s])',
                              i, ref, seen ->> ref);
            RETURN;
        END IF;
        seen := seen || jsonb_build_object(ref, i);
    END LOOP;
    hint := NULL;
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
