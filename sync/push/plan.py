"""What push sends for one contact, and what it records afterwards. Pure: no I/O.

`plan_update` turns a coalesced local edit and amoCRM's current version into an `UpdatePlan`:
the PATCH entity (only the fields to send, never `updated_at` or anything fetched) and the
outcome to record once amoCRM answered. `to_create_payload` is the POST entity of a new contact.
Both first check the local custom_fields_values (`sync.core.cf_shape`) and raise `ShapeError` with a
one-line reason when it is not an accepted shape: push marks that contact `error`, never sends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.clock import from_unix, to_unix
from sync.core.cf_shape import ShapeError, is_integer, require
from sync.core.items import PendingUpdate, UpdateOutcome
from sync.core.models import CF_COLUMN, NOT_FOUND, SCALAR_FIELDS
from sync.core.values import UNORDERED_TYPES
from sync.push.conflicts import (
    CF_PREFIX,
    FieldEdit,
    Merge,
    Resolution,
    cf_entries,
    cf_key,
    changed_fields,
    field_codes,
    policies_by_field,
    resolve,
    same,
    split,
    write_ref,
    write_values,
)
from sync.push.error_paths import user_errors

TEXT_FIELDS = ("name", "first_name", "last_name")


@dataclass(frozen=True)
class UpdatePlan:
    pending: PendingUpdate
    merge: Merge
    entity: dict[str, Any] | None  # the PATCH entity, None when nothing needs sending
    write: Mapping[str, Any]
    remote_unchanged: bool  # amoCRM's updated_at is still the one the edit was made on
    missing: bool = False
    stale: bool = False  # amoCRM's version read is older than one already seen: a lagging read
    invalid: str | None = None  # why the local row cannot be sent (its shape), nothing is sent
    planned_at: int | None = None  # amoCRM's updated_at (unix) this plan was made on
    codes: Mapping[str, int] = field(default_factory=dict)  # field code → id the merge used

    @classmethod
    def invalid_row(cls, pending: PendingUpdate, reason: str) -> UpdatePlan:
        return cls(pending, Merge(), None, {}, False, invalid=reason)

    @property
    def doubtful(self) -> bool:
        """Worth reading again where amoCRM cannot lag (GET by id) before acting on it: the
        read was stale, missed the contact, or shows a new conflict (lists lag writes, so a
        "remote change" may be our own previous value)."""
        return (
            self.missing or self.stale or any(c.conflict_id is None for c in self.merge.conflicts)
        )

    def outcome(self, updated_at: int | None = None) -> UpdateOutcome:
        """The outcome once amoCRM accepted the entity (or when nothing was sent)."""
        if self.invalid is not None:
            return self.rejected(self.invalid)
        if self.missing:
            return self.rejected(NOT_FOUND)
        stamp = from_unix(updated_at) if updated_at and self.remote_unchanged else None
        seen = updated_at or self.planned_at
        return UpdateOutcome(
            self.pending,
            done_columns=_done_columns(self.pending, self.merge),
            write=self.write,
            updated_at=stamp,
            held=bool(self.merge.held),
            conflicts=self.merge.conflicts,
            sent=self.entity is not None,
            remote_at=from_unix(seen) if seen else None,
        )

    def rejected(self, message: str) -> UpdateOutcome:
        return UpdateOutcome(self.pending, frozenset(), error=message)

    def user_errors(self, errors: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
        """amoCRM's errors with paths naming the user's entries (`sync.push.error_paths`)."""
        sent = (self.entity or {}).get(CF_COLUMN)
        return user_errors(errors, sent, self.pending.local.get(CF_COLUMN), self.codes)


@dataclass(frozen=True)
class KnownFields:
    """What the cached custom field definitions tell, indexed once per push: the id a field
    code names, and the fields whose values are a set."""

    codes: Mapping[str, int] = field(default_factory=dict)  # CODE (upper-case) → field id
    unordered: frozenset[int] = frozenset()  # ids of fields of an `UNORDERED_TYPES` type

    @classmethod
    def of(cls, definitions: Iterable[Any]) -> KnownFields:
        """From definitions with `id`, `code` and `type` (`sync.core.mapping.FieldDef`)."""
        listed = list(definitions)
        return cls(
            {str(f.code).upper(): int(f.id) for f in listed if f.code},
            frozenset(int(f.id) for f in listed if f.type in UNORDERED_TYPES),
        )


def unordered_fields(known: frozenset[int], *arrays: Any) -> frozenset[str]:
    """The fields (`cf:<id>`) whose values are a set (`UNORDERED_TYPES`): those `known` so by
    the definitions, unless an array's entry says another `field_type` (amoCRM's read is newer
    than the cache), and those an entry's `field_type` says so."""
    ids = set(known)
    for array in arrays:
        for entry in array if isinstance(array, list) else ():
            if (
                isinstance(entry, Mapping)
                and entry.get("field_type")
                and is_integer(entry.get("field_id"))
            ):
                if entry["field_type"] in UNORDERED_TYPES:
                    ids.add(int(entry["field_id"]))
                else:
                    ids.discard(int(entry["field_id"]))
    return frozenset(f"{CF_PREFIX}{i}" for i in ids)


def plan_update(
    pending: PendingUpdate,
    remote: Mapping[str, Any] | None,
    policy: str,
    overrides: Mapping[str, str] | None = None,
    fields: KnownFields | None = None,
) -> UpdatePlan:
    """Raises ShapeError when the local custom_fields_values is not an accepted shape.

    `fields` is what the cached custom field definitions tell: with the `field_code`s and
    `field_type`s the arrays carry, which id a code names (`cf:<CODE>` in `overrides` and
    entries written by code) and which fields' values are a set (a multiselect)."""
    if CF_COLUMN in pending.local:
        require(pending.local[CF_COLUMN], pending.base.get(CF_COLUMN))
    if remote is None:
        return UpdatePlan(pending, Merge(), None, {}, False, missing=True)
    if is_stale(pending, remote):
        return UpdatePlan(pending, Merge(), None, {}, False, stale=True)
    arrays = (pending.base.get(CF_COLUMN), pending.local.get(CF_COLUMN), remote.get(CF_COLUMN))
    known = fields or KnownFields()
    codes = {**known.codes, **field_codes(*arrays)}
    unordered = unordered_fields(known.unordered, *arrays)
    theirs = split(remote, codes)
    edits = _edits(pending, codes, theirs, unordered)
    on_record = {f: Resolution(cid, winner) for f, (cid, winner) in pending.open_conflicts.items()}
    remote_at = from_unix(remote.get("updated_at"))
    result = resolve(
        edits,
        theirs,
        remote_at,
        policy,
        field_policies=policies_by_field(overrides, codes),
        on_record=on_record,
    )
    entity = _entity(pending.contact_id, result.send) if result.send else None
    write = _take_remote(pending, result, remote, codes)
    unchanged = remote_at is not None and remote_at == pending.base_updated_at
    planned_at = None if remote_at is None else to_unix(remote_at)
    return UpdatePlan(pending, result, entity, write, unchanged, planned_at=planned_at, codes=codes)


def is_stale(pending: PendingUpdate, remote: Mapping[str, Any]) -> bool:
    """amoCRM's version is older than one this side already saw (never a remote change)."""
    known, remote_at = pending.newest_known, from_unix(remote.get("updated_at"))
    return known is not None and remote_at is not None and remote_at < known


def _edits(
    pending: PendingUpdate,
    codes: Mapping[str, int],
    theirs: Mapping[str, Any],
    unordered: frozenset[str],
) -> list[FieldEdit]:
    edits = []
    for column, local in pending.local.items():
        base = {column: pending.base.get(column)}
        earlier = _earlier_by_field(pending.earlier_values(column), column, codes)
        changed = changed_fields(base, {column: local}, codes, unordered)
        changed.update(
            _round_trips(base, {column: local}, earlier, codes, theirs, unordered=unordered)
        )
        for name, (before, after) in changed.items():
            own = tuple(earlier.get(name, ()))
            at, ordered = pending.changed_at[column], name not in unordered
            edits.append(FieldEdit(name, before, after, at, own, ordered))
    return edits


def _round_trips(
    base: Mapping[str, Any],
    local: Mapping[str, Any],
    earlier: Mapping[str, list[Any]],
    codes: Mapping[str, int],
    theirs: Mapping[str, Any],
    *,
    unordered: frozenset[str],
) -> dict[str, tuple[Any, Any]]:
    """Fields the chain changed and then set back to the base (A → B → A): no edit, unless
    amoCRM shows one of the values in between (a dead run's write in flight): undo it."""
    before, after = split(base, codes), split(local, codes)
    out = {}
    for name, values in earlier.items():
        ordered = name not in unordered
        was, now, remote = before.get(name), after.get(name), theirs.get(name)
        if (
            same(was, now, ordered=ordered)
            and not same(was, remote, ordered=ordered)
            and any(same(v, remote, ordered=ordered) for v in values)
        ):
            out[name] = (was, now)
    return out


def _earlier_by_field(
    values: list[Any], column: str, codes: Mapping[str, int]
) -> dict[str, list[Any]]:
    """A column's earlier local values, per field (each custom field on its own)."""
    if column != CF_COLUMN:
        return {column: values}
    arrays = []
    for array in values:
        try:
            arrays.append(split({CF_COLUMN: array}, codes))
        except ShapeError:  # a malformed value in the chain was never sent: not ours
            continue
    names = {name for fields in arrays for name in fields}
    return {name: [fields.get(name) for fields in arrays] for name in names}


def column_of(field: str) -> str:
    return CF_COLUMN if field.startswith(CF_PREFIX) else field


def _done_columns(pending: PendingUpdate, result: Merge) -> frozenset[str]:
    held_columns = {column_of(f) for f in result.held}
    return frozenset(c for c in pending.local if c not in held_columns)


def _entity(contact_id: int, send: Mapping[str, Any]) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": contact_id, "request_id": str(contact_id)}
    fields = []
    for name, value in send.items():
        if name in SCALAR_FIELDS:
            entity[name] = "" if value is None and name in TEXT_FIELDS else value
        else:
            fields.append(_cf_entry(name, value))
    if fields:
        entity[CF_COLUMN] = fields
    return entity


def _cf_entry(name: str, values: Any) -> dict[str, Any]:
    return {**write_ref(name[len(CF_PREFIX) :]), "values": write_values(values)}


def _take_remote(
    pending: PendingUpdate, result: Merge, remote: Mapping[str, Any], codes: Mapping[str, int]
) -> dict[str, Any]:
    """Columns to overwrite locally with amoCRM's values: conflicts amoCRM won, and every
    edited column push leaves as amoCRM has it (no field of it sent or held). Those take
    amoCRM's version as read, as a pull would store it: an edit equal in content but not in shape
    (fields by `field_code`, no `enum_id`) would otherwise stay, since amoCRM's `updated_at`
    did not move and no incremental pull rewrites it."""
    write: dict[str, Any] = {n: v for n, v in result.take_remote.items() if n in SCALAR_FIELDS}
    busy = {column_of(f) for f in (*result.send, *result.held)}
    for column in pending.local.keys() - busy:
        write[column] = (remote.get(column) or None) if column == CF_COLUMN else remote.get(column)
    if CF_COLUMN in write:
        return write
    taken = {n for n in result.take_remote if n.startswith(CF_PREFIX)}
    if taken:
        local = [e for e in pending.local.get(CF_COLUMN) or [] if isinstance(e, Mapping)]
        kept = [e for e in local if cf_key(e, codes) not in taken]
        theirs = [e for e in remote.get(CF_COLUMN) or [] if cf_key(e, codes) in taken]
        write[CF_COLUMN] = (kept + theirs) or None
    return write


def to_create_payload(temp_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
    """The POST entity of a locally inserted contact (request_id = its temporary id).

    Raises ShapeError when its custom_fields_values is not an accepted shape. Fields without
    values are left out: a new contact has nothing to clear.
    """
    require(values.get(CF_COLUMN))
    entity: dict[str, Any] = {k: values[k] for k in SCALAR_FIELDS if values.get(k) is not None}
    fields = [_create_entry(item) for item in cf_entries(values.get(CF_COLUMN)) if item["values"]]
    if fields:
        entity[CF_COLUMN] = fields
    entity["request_id"] = str(temp_id)
    return entity


def _create_entry(item: Mapping[str, Any]) -> dict[str, Any]:
    ref = item["field_id"] if item.get("field_id") is not None else item["field_code"]
    return {**write_ref(ref), "values": write_values(item["values"])}
