"""The SQL-time check of a local `custom_fields_values` (functions and a trigger on `contacts`).

A local INSERT or UPDATE whose `custom_fields_values` is not NULL or a JSON array of
`{field_id | field_code, values: null | [] | [{value, enum_id, enum_code | enum}]}` is refused,
naming the contact, the path inside the JSON and what is wrong (ERRCODE check_violation, with a
HINT): only what is not amoCRM's shape at all and could never be sent. Whether a field exists,
an enum_id is one of its choices or a value fits its type is amoCRM's to judge (the cached
definitions may be stale): push sends such a value and amoCRM's 400 ends as `sync_status =
'error'` with its message. A field whose values are as before the UPDATE is checked for its
shape only. `enum` is a stand-in's read form of `enum_code`, accepted as its alias. The rules and
messages are those of `sync.core.cf_shape`, which push runs on rows captured before the check
existed. The sync's own writes skip the trigger (`amosync.origin = 'sync'`).

Numbers are bounded so that every reader can take the row: an id (`field_id`, `enum_id`) is at
most 9223372036854775807 (bigint, like the tables' id columns); a number `value`, and any number
of a field object outside `values` (`field_name`, …), is below 1e300 in magnitude (a double,
amoCRM's and most JSON readers' number, ends near 1.8e308; jsonb prints 1e5000 as a 5001-digit
integer, which Python's json refuses above 4300 digits).

A `value` may be a JSON object: amoCRM's own shape for legal_entity, linked_entity and file
fields (whether amoCRM takes the object written is its to judge, as for any value); an array
never is.

This is today's definition; migration 0003 installed it, 0009 dropped the checks against the
cached definitions, 0014 bounded the numbers, 0018 took object values. A change here ships as
a new revision that recreates the functions (tests/integration/test_migrations_frozen.py fails
until it does).
"""

from __future__ import annotations

_SQL = r"""
CREATE FUNCTION "{s}".amosync_cf_present(x jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT x IS NOT NULL AND jsonb_typeof(x) <> 'null'
$fn$;

CREATE FUNCTION "{s}".amosync_cf_shown(x jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE
        WHEN x IS NULL OR jsonb_typeof(x) IN ('object', 'array', 'null')
            THEN coalesce(jsonb_typeof(x), 'null')
        WHEN length(x::text) <= 40 THEN x::text
        ELSE left(x::text, 40) || '…'
    END
$fn$;

-- kind 'integer': a JSON integer in 1..bigint (the id columns' type); kind 'code': a non-empty
-- string; absent/null is fine
CREATE FUNCTION "{s}".amosync_cf_scalar_problem(x jsonb, path text, kind text) RETURNS text
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

CREATE FUNCTION "{s}".amosync_cf_item_problem(item jsonb, path text) RETURNS text
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

-- check_items false: the field's values are as they were (push never sends an unchanged field),
-- so values amoCRM itself gave (an object as value, an address's subtype) stay accepted
CREATE FUNCTION "{s}".amosync_cf_entry_problem(entry jsonb, path text, check_items boolean)
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

-- the field of `entry` holds exactly the same values in `old_cf` (the row before the UPDATE)
CREATE FUNCTION "{s}".amosync_cf_unchanged(entry jsonb, old_cf jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_typeof(old_cf) = 'array' AND jsonb_typeof(entry) = 'object' AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(old_cf) AS o
        WHERE jsonb_typeof(o) = 'object' AND (o -> 'values') = (entry -> 'values')
          AND ((jsonb_typeof(entry -> 'field_id') = 'number'
                AND (o -> 'field_id') = (entry -> 'field_id'))
               OR (jsonb_typeof(entry -> 'field_id') IS DISTINCT FROM 'number'
                   AND jsonb_typeof(entry -> 'field_code') = 'string'
                   AND upper(o ->> 'field_code') = upper(entry ->> 'field_code'))))
$fn$;

CREATE FUNCTION "{s}".amosync_cf_problem(
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

CREATE FUNCTION "{s}".amosync_check_custom_fields() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    checked record;
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.custom_fields_values IS NOT DISTINCT FROM OLD.custom_fields_values THEN
        RETURN NEW;
    END IF;
    SELECT * INTO checked FROM "{s}".amosync_cf_problem(
        NEW.custom_fields_values,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.custom_fields_values END);
    IF checked.problem IS NOT NULL THEN
        RAISE EXCEPTION 'amosync: % %: %',
            CASE WHEN TG_OP = 'INSERT' THEN 'new contact' ELSE 'contact' END, NEW.id,
            checked.problem
            USING ERRCODE = 'check_violation', HINT = checked.hint;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER amosync_check_custom_fields
BEFORE INSERT OR UPDATE OF custom_fields_values ON "{s}".contacts
FOR EACH ROW
WHEN (NOT coalesce(current_setting('amosync.origin', true), '') = 'sync')
EXECUTE FUNCTION "{s}".amosync_check_custom_fields();
"""


def create_statements(schema: str) -> list[str]:
    """SQL that installs the check's functions and trigger (`contacts` and
    `contact_custom_fields` must exist)."""
    return [
        statement.replace('"{s}"', f'"{schema}"')
        for statement in _SQL.strip().removesuffix(";").split(";\n\n")
    ]
