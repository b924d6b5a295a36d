"""The three-way merge of a local edit with amoCRM's current version. Pure: no I/O.

A contact's pending edit is split into *fields*: the scalar columns (`name`, `first_name`,
`last_name`, `responsible_user_id`) and one field per custom field (`cf:<field_id>`, or
`cf:<CODE>` when only a code is known). For each field the edit changed:

    local == remote                  → settled, nothing to send (already equal: also the case
                                       after a crash between our PATCH and our commit); a
                                       conflict on record for the field is over: a decided
                                       one applied, a waiting one closed as agreed
    remote == base                   → send the local value (amoCRM did not touch the field)
    remote == an earlier local value → the same: a value this outbox chain had locally is our
      of the same chain                own write in flight from a run that died, not a change
    otherwise                        → a conflict, settled by the policy:
        local_wins / remote_wins     → that side, at once
        newest_wins                  → local if its edit time is later than amoCRM's
                                       updated_at, compared at whole seconds (amoCRM's
                                       resolution), else remote: an edit in the same second
                                       as amoCRM's is a tie, and a tie goes to amoCRM
        manual                       → held until a person sets `winner`

Values are compared by content, not by amoCRM's `updated_at` alone: `updated_at` has 1-second
resolution, so a remote edit in the second of the last pull would be invisible to it. A custom
field's values are compared in order (the first phone of a multitext is the main one), except
for a multiselect's, a set amoCRM keeps in its own order (`UNORDERED_TYPES`). Fields
the local edit did not change are never sent, so remote edits to them are kept (merged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sync.core.cf_shape import ShapeError, enum_code_of, is_integer, json_type
from sync.core.items import Conflict
from sync.core.models import CF_COLUMN, SCALAR_FIELDS, Winner
from sync.core.values import as_text, same_items, same_scalar

CF_PREFIX = "cf:"
POLICIES = ("newest_wins", "remote_wins", "local_wins", "manual")
_VALUE_KEYS = ("value", "enum_id", "enum_code")


@dataclass(frozen=True)
class FieldEdit:
    """One field changed locally: its base (before the first edit) and its latest value."""

    field: str
    base: Any
    local: Any
    changed_at: datetime
    # earlier local values of the field in the same outbox chain: amoCRM showing one of them
    # is (possibly) our own write from a run that died before recording it, not a remote change
    own: tuple[Any, ...] = ()
    ordered: bool = True  # values lists compared in order (all but a multiselect's)

    def is_ours(self, remote: Any) -> bool:
        """amoCRM's value is the base or a value this chain had locally: not a remote change."""
        return self.same(self.base, remote) or any(self.same(value, remote) for value in self.own)

    def same(self, a: Any, b: Any) -> bool:
        return same(a, b, ordered=self.ordered)


@dataclass(frozen=True)
class Resolution:
    """A conflict already on record for a field: the winner a person (or policy) chose."""

    conflict_id: int
    winner: Winner | None  # None while waiting for a person


@dataclass(frozen=True)
class Merge:
    """What to do with one contact's pending edit."""

    send: dict[str, Any] = field(default_factory=dict)  # field → local value to send
    take_remote: dict[str, Any] = field(default_factory=dict)  # field → remote value to keep
    settled: frozenset[str] = frozenset()  # fields done after this push (sent, equal, taken)
    held: frozenset[str] = frozenset()  # fields waiting for a person
    conflicts: tuple[Conflict, ...] = ()


def resolve(
    edits: Iterable[FieldEdit],
    remote: Mapping[str, Any],
    remote_updated_at: datetime | None,
    policy: str,
    *,
    field_policies: Mapping[str, str] | None = None,
    on_record: Mapping[str, Resolution] | None = None,
) -> Merge:
    """Decide, field by field, what to send, what to take from amoCRM and what to hold.

    `remote` maps fields (see `split`) to amoCRM's current values; `on_record` maps fields to
    conflicts already recorded and not yet applied (a person's `winner`, or still waiting).
    """
    send: dict[str, Any] = {}
    take: dict[str, Any] = {}
    settled: set[str] = set()
    held: set[str] = set()
    conflicts: list[Conflict] = []
    for edit in edits:
        theirs = remote.get(edit.field)
        if edit.same(edit.local, theirs):
            settled.add(edit.field)
            recorded = (on_record or {}).get(edit.field)
            if recorded is not None:  # a conflict on record whose two sides now agree: over
                conflicts.append(_closed(edit, theirs, remote_updated_at, recorded))
            continue
        if edit.is_ours(theirs) and edit.field not in (on_record or {}):
            send[edit.field] = edit.local
            settled.add(edit.field)
            continue
        chosen = _policy_for(edit.field, policy, field_policies)
        recorded = (on_record or {}).get(edit.field)
        conflict = _conflict(edit, theirs, remote_updated_at, chosen, recorded)
        conflicts.append(conflict)
        if conflict.winner is None:
            held.add(edit.field)
            continue
        settled.add(edit.field)
        if conflict.winner == Winner.LOCAL:
            send[edit.field] = edit.local
        else:
            take[edit.field] = theirs
    return Merge(send, take, frozenset(settled), frozenset(held), tuple(conflicts))


def policies_by_field(
    overrides: Mapping[str, str] | None, codes: Mapping[str, int]
) -> dict[str, str]:
    """Per-field policies keyed as `split` keys the fields: `cf:<CODE>` (any case) becomes
    `cf:<id>` when `codes` knows the code, else `cf:<CODE>` upper-cased; an entry by id wins
    over one by code for the same field."""
    by_code: dict[str, str] = {}
    others: dict[str, str] = {}
    for name, chosen in (overrides or {}).items():
        ref = name[len(CF_PREFIX) :] if name.startswith(CF_PREFIX) else None
        if ref is None or ref.isdigit():
            others[name] = chosen
            continue
        known = codes.get(ref.upper())
        by_code[f"{CF_PREFIX}{known if known is not None else ref.upper()}"] = chosen
    return {**by_code, **others}


def _policy_for(name: str, policy: str, overrides: Mapping[str, str] | None) -> str:
    if overrides:
        if name in overrides:
            return overrides[name]
        if name.startswith(CF_PREFIX) and CF_COLUMN in overrides:
            return overrides[CF_COLUMN]
    return policy


def _conflict(
    edit: FieldEdit,
    remote: Any,
    remote_updated_at: datetime | None,
    policy: str,
    recorded: Resolution | None,
) -> Conflict:
    if recorded is not None:
        winner = recorded.winner
        policy_used = "manual" if recorded.winner is None else policy
        conflict_id: int | None = recorded.conflict_id
    else:
        winner = decide_winner(policy, edit.changed_at, remote_updated_at)
        policy_used, conflict_id = policy, None
    return Conflict(
        edit.field,
        edit.base,
        edit.local,
        remote,
        edit.changed_at,
        remote_updated_at,
        policy_used,
        winner,
        conflict_id,
    )


def _closed(
    edit: FieldEdit, remote: Any, remote_updated_at: datetime | None, recorded: Resolution
) -> Conflict:
    """A conflict on record that amoCRM already settled: it holds the local value (a person
    there typed it, or a run that died had sent it) or the local row was set to amoCRM's. A
    decided one is applied; a waiting one is closed as agreed (no winner: nobody chose)."""
    conflict = _conflict(edit, remote, remote_updated_at, "manual", recorded)
    return replace(conflict, agreed=recorded.winner is None)


def decide_winner(
    policy: str, local_changed_at: datetime, remote_updated_at: datetime | None
) -> Winner | None:
    """The winner a policy picks by itself; None for `manual`."""
    if policy == "local_wins":
        return Winner.LOCAL
    if policy == "remote_wins":
        return Winner.REMOTE
    if policy == "newest_wins":
        if remote_updated_at is None or _second(local_changed_at) > _second(remote_updated_at):
            return Winner.LOCAL
        return Winner.REMOTE
    if policy == "manual":
        return None
    raise ValueError(f"unknown conflict policy {policy!r}")


def _second(moment: datetime) -> datetime:
    """The whole second of `moment`: amoCRM's `updated_at` has no finer resolution, so which of
    two edits within one second came first is unknown on our side."""
    return moment.replace(microsecond=0)


# --- fields of a contact -------------------------------------------------------------------


def split(values: Mapping[str, Any], codes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Writable contact values → {field: value}; custom fields one by one (values lists).

    `codes` maps field codes to ids, so an entry written with only `field_code` lands on the
    same field as amoCRM's `field_id`. A custom_fields_values that is not an array of field
    objects raises ShapeError: an unexpected shape never reads as "no fields" (= clear them).
    """
    out: dict[str, Any] = {k: values[k] for k in SCALAR_FIELDS if k in values}
    if CF_COLUMN in values:
        for entry in cf_entries(values[CF_COLUMN]):
            key = cf_key(entry, codes)
            if key is None:
                raise ShapeError(f"{CF_COLUMN}: a field with neither field_id nor field_code")
            out[key] = _non_empty(_values_of(entry, key))
    return out


def cf_entries(column: Any) -> list[Mapping[str, Any]]:
    """The field objects of a custom_fields_values (None: none); anything else raises."""
    if column is None:
        return []
    if not isinstance(column, list):
        raise ShapeError(f"{CF_COLUMN}: must be a JSON array of fields or NULL, got "
                         f"{json_type(column)}")  # fmt: skip
    for entry in column:
        if not isinstance(entry, Mapping):
            raise ShapeError(f"{CF_COLUMN}: a field must be an object, got {json_type(entry)}")
    return column


def _values_of(entry: Mapping[str, Any], key: str) -> list[Any] | None:
    values = entry.get("values")
    if values is not None and not isinstance(values, list):
        raise ShapeError(f"{CF_COLUMN}: values of {key} must be an array or null, got "
                         f"{json_type(values)}")  # fmt: skip
    return values


def field_codes(*arrays: Any) -> dict[str, int]:
    """field_code → field_id from any custom_fields_values arrays that carry both."""
    codes: dict[str, int] = {}
    for array in arrays:
        for entry in array if isinstance(array, list) else ():
            if (
                isinstance(entry, Mapping)
                and entry.get("field_code")
                and is_integer(entry.get("field_id"))
            ):
                codes[str(entry["field_code"]).upper()] = int(entry["field_id"])
    return codes


def write_ref(ref: Any) -> dict[str, Any]:
    """A custom field as amoCRM's writes name it: `field_id` for an id, else `field_code`
    upper-cased (codes are case-insensitive locally; one rule for creates and updates)."""
    if not isinstance(ref, str):
        return {"field_id": int(ref)}
    text = ref.strip()
    return {"field_id": int(text)} if text.isdigit() else {"field_code": text.upper()}


def cf_key(entry: Mapping[str, Any], codes: Mapping[str, int] | None = None) -> str | None:
    field_id = entry.get("field_id")
    if field_id is not None:
        if not is_integer(field_id):
            raise ShapeError(f"{CF_COLUMN}: field_id must be an integer, got {json_type(field_id)}")
        return f"{CF_PREFIX}{int(field_id)}"
    code = entry.get("field_code")
    if not code:
        return None
    known = (codes or {}).get(str(code).upper())
    return f"{CF_PREFIX}{known}" if known is not None else f"{CF_PREFIX}{str(code).upper()}"


def changed_fields(
    base: Mapping[str, Any],
    local: Mapping[str, Any],
    codes: Mapping[str, int],
    unordered: frozenset[str] = frozenset(),
) -> dict[str, tuple[Any, Any]]:
    """Fields whose local value differs from the base: {field: (base, local)}.

    Only columns present in `local` count; inside `custom_fields_values` a field missing from
    one side is None (no values) on that side.
    """
    out: dict[str, tuple[Any, Any]] = {}
    for name in SCALAR_FIELDS:
        if name in local and not same(base.get(name), local[name]):
            out[name] = (base.get(name), local[name])
    if CF_COLUMN in local:
        before = split({CF_COLUMN: base.get(CF_COLUMN)}, codes)
        after = split({CF_COLUMN: local[CF_COLUMN]}, codes)
        for key in sorted(before.keys() | after.keys()):
            if not same(before.get(key), after.get(key), ordered=key not in unordered):
                out[key] = (before.get(key), after.get(key))
    return out


def _non_empty(values: Any) -> Any:
    return values if values else None


# --- comparing values ----------------------------------------------------------------------


def same(a: Any, b: Any, *, ordered: bool = True) -> bool:
    """Equal as amoCRM means them: scalars as text, value lists item by item, in order unless
    not `ordered` (a multiselect's set of options)."""
    if _is_values(a) or _is_values(b):
        return same_items(a or [], b or [], _same_value, ordered=ordered)
    return same_scalar(a, b)


def _is_values(x: Any) -> bool:
    return isinstance(x, list) or (isinstance(x, tuple) and not isinstance(x, str))


def _same_value(a: Any, b: Any) -> bool:
    """Two custom-field values agree on every key both carry (and share at least one)."""
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return same_scalar(a, b)
    shared = 0
    for key in _VALUE_KEYS:
        left, right = _value_key(a, key), _value_key(b, key)
        if as_text(left) is not None and as_text(right) is not None:
            if not same_scalar(left, right, key=key):
                return False
            shared += 1
    return shared > 0


def _value_key(value: Mapping[str, Any], key: str) -> Any:
    """A value's `key`; `enum_code` read through its alias `enum` (a pulled {"enum": "WORK"}
    and a sent {"enum_code": "WORK"} are the same value, never a change)."""
    return enum_code_of(value) if key == "enum_code" else value.get(key)


def write_values(values: Any) -> list[dict[str, Any]] | None:
    """Custom-field values in amoCRM's write shape (None clears the field).

    Only null and [] clear; anything else that is not an array of value objects raises
    ShapeError rather than becoming `values: null`.
    """
    if values is None or (isinstance(values, list) and not values):
        return None
    if not isinstance(values, list):
        raise ShapeError(f"{CF_COLUMN}: values must be an array or null, got {json_type(values)}")
    return [_write_value(value) for value in values]


def _write_value(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeError(f"{CF_COLUMN}: a value must be an object, got {json_type(value)}")
    item = {k: value[k] for k in ("value", "enum_id") if value.get(k) is not None}
    if "enum_id" not in item and enum_code_of(value) is not None:
        item["enum_code"] = enum_code_of(value)  # `enum` (an alias) goes out as `enum_code`
    if not item:
        raise ShapeError(f"{CF_COLUMN}: a value needs value, enum_id or enum_code")
    if isinstance(item.get("value"), list):  # an object is amoCRM's shape of some types
        raise ShapeError(f"{CF_COLUMN}: a value's value must be a scalar or an object, got "
                         f"{json_type(item['value'])}")  # fmt: skip
    return item
