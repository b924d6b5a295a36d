"""custom_fields_values check: shapes only; amoCRM judges fields, choices and types; "enum"

Revision 0003's trigger also refused, when `contact_custom_fields` held definitions, an unknown
field, an enum_id not among the field's choices and a value that could not fit the field's type.
That turned what amoCRM answers with a 400 `validation-errors` (which push records on the row as
`sync_status = 'error'` and amoCRM's message, the rest of the batch going through) into a failed
statement, and refused fields added in amoCRM since the last pull. This revision keeps the
structural checks only (what could never be sent: not an array, an entry that is not an object,
no field_id/field_code, values that are not an array or null, malformed value items, a field
twice) and drops `amosync_cf_definition_problem`.

A value item may also carry `enum` (a stand-in's read form of `enum_code`, the vendor
reference's GET example): it is accepted like `enum_code`.

Functions are replaced in place. Downgrade puts back 0003's definitions.

The SQL below is frozen: it is this revision's, and imports nothing from the product.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:30:00
"""

from __future__ import annotations

from alembic import context, op

revision = "0009"
down_revision = "0008"
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

DROP FUNCTION "{s}".amosync_cf_definition_problem(jsonb, text);
"""

# 0003's definitions, as it installed them
DOWNGRADE = r"""
CREATE FUNCTION "{s}".amosync_cf_definition_problem(
    entry jsonb, path text, OUT problem text, OUT hint text)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    def record;
    item jsonb;
    j integer;
    v jsonb;
    at text;
BEGIN
    IF "{s}".amosync_cf_present(entry -> 'field_id') THEN
        SELECT f.id, f.type, f.enums INTO def FROM "{s}".contact_custom_fields f
        WHERE f.id = trunc((entry -> 'field_id')::numeric);
        at := path || '.field_id';
    ELSE
        SELECT f.id, f.type, f.enums INTO def FROM "{s}".contact_custom_fields f
        WHERE upper(f.code) = upper(entry ->> 'field_code') ORDER BY f.id LIMIT 1;
        at := path || '.field_code';
    END IF;
    IF def.id IS NULL THEN
        problem := format('%s: no such field among the account''s custom fields (%s)', at,
            "{s}".amosync_cf_shown(coalesce(entry -> 'field_id', entry -> 'field_code')));
        hint := 'The known fields are in contact_custom_fields; a field added in amoCRM since '
            'the last pull appears there after the next pull (amosync pull).';
        RETURN;
    END IF;
    hint := 'Values by field type: numeric a number; checkbox true or false; date, date_time, '
        'birthday unix seconds; select, multiselect, radiobutton an enum_id from '
        'contact_custom_fields.enums.';
    IF jsonb_typeof(entry -> 'values') <> 'array' THEN
        hint := NULL;
        RETURN;
    END IF;
    FOR item, j IN SELECT e, (n - 1)::integer
                   FROM jsonb_array_elements(entry -> 'values') WITH ORDINALITY AS t(e, n) LOOP
        v := item -> 'value';
        at := format('%s.values[%s]', path, j);
        IF def.type = 'numeric' AND "{s}".amosync_cf_present(v)
           AND NOT (jsonb_typeof(v) = 'number' OR (jsonb_typeof(v) = 'string'
                    AND (v #>> '{}') ~ '^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$')) THEN
            problem := format('%s.value: field %s is numeric and needs a number, got %s',
                              at, def.id, jsonb_typeof(v));
        ELSIF def.type = 'checkbox' AND "{s}".amosync_cf_present(v)
              AND jsonb_typeof(v) <> 'boolean' THEN
            problem := format('%s.value: field %s is a checkbox and needs true or false, got %s',
                              at, def.id, jsonb_typeof(v));
        ELSIF def.type IN ('date', 'date_time', 'birthday') AND "{s}".amosync_cf_present(v)
              AND NOT ((jsonb_typeof(v) = 'number' AND v::numeric = trunc(v::numeric))
                       OR (jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^\s*-?\d+\s*$')) THEN
            problem := format('%s.value: field %s is a %s and needs unix seconds (an integer), '
                              'got %s', at, def.id, def.type, jsonb_typeof(v));
        ELSIF def.type IN ('select', 'multiselect', 'radiobutton')
              AND "{s}".amosync_cf_present(item -> 'enum_id')
              AND jsonb_typeof(def.enums) = 'array' AND jsonb_array_length(def.enums) > 0
              AND NOT EXISTS (
                  SELECT 1 FROM jsonb_array_elements(def.enums) AS o
                  WHERE jsonb_typeof(o -> 'id') = 'number'
                    AND (o -> 'id')::numeric = (item -> 'enum_id')::numeric) THEN
            problem := format('%s.enum_id: field %s has no choice %s', at, def.id,
                              "{s}".amosync_cf_shown(item -> 'enum_id'));
        END IF;
        IF problem IS NOT NULL THEN
            RETURN;
        END IF;
    END LOOP;
    hint := NULL;
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
    WHERE k NOT IN ('value', 'enum_id', 'enum_code');
    IF extra IS NOT NULL THEN
        RETURN format('%s: unexpected key "%s" (a value has value, enum_id, enum_code)',
                      path, extra);
    END IF;
    IF NOT ("{s}".amosync_cf_present(item -> 'value')
            OR "{s}".amosync_cf_present(item -> 'enum_id')
            OR "{s}".amosync_cf_present(item -> 'enum_code')) THEN
        RETURN path || ': needs value, enum_id or enum_code';
    END IF;
    IF jsonb_typeof(item -> 'value') IN ('object', 'array') THEN
        RETURN path || '.value: must be a string, number or boolean, got '
            || jsonb_typeof(item -> 'value');
    END IF;
    RETURN coalesce(
        "{s}".amosync_cf_scalar_problem(item -> 'enum_id', path || '.enum_id', 'integer'),
        "{s}".amosync_cf_scalar_problem(item -> 'enum_code', path || '.enum_code', 'code'));
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
    have_defs boolean;
    checked record;
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
    have_defs := EXISTS (SELECT 1 FROM "{s}".contact_custom_fields);
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
        IF have_defs AND NOT unchanged THEN
            SELECT * INTO checked FROM "{s}".amosync_cf_definition_problem(
                entry, format('custom_fields_values[%s]', i));
            IF checked.problem IS NOT NULL THEN
                problem := checked.problem;
                hint := checked.hint;
                RETURN;
            END IF;
        END IF;
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
