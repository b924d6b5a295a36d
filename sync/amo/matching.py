"""Does a contact read back from amoCRM carry what we wrote? Pure functions, no I/O.

Used to reconcile a write whose answer was lost: amoCRM has no idempotency key and does not
store `request_id`, so after a lost POST we re-read the newest contacts and look for the ones we
sent by content. The write shape differs from the read shape (custom field values are written as
`{"enum_id": 5}` and read as `{"value": "Gold", "enum_id": 5, "enum_code": null}`), so the check
is "every key we sent has the value we sent", field by field.

A caller that needs certainty for look-alike contacts puts a marker of its own into the entity
(e.g. a text custom field holding the local row's id); it is compared like any other field.

A lost create is matched only to a contact this integration made: given the token's own user
(`current_user_id` of `/api/v4/account`), a candidate whose `created_by` names another user (a
person in amoCRM who happened to type the same contact) is never taken for ours. A candidate
without `created_by` (or 0, a robot) cannot be told apart and is judged by content alone, as is
every candidate when the own user is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sync.core.cf_shape import enum_code_of
from sync.core.values import UNORDERED_TYPES, same_items, same_scalar

# Keys whose effect cannot be read back exactly; an entity that uses them is "unverifiable".
UNVERIFIABLE = frozenset({"tags_to_add", "tags_to_delete"})
SCALARS = ("name", "first_name", "last_name", "responsible_user_id", "created_at", "created_by")
IGNORED = frozenset({"id", "request_id", "updated_at", "updated_by", "_links"})


def verifiable(sent: Mapping[str, Any]) -> bool:
    return not (UNVERIFIABLE & sent.keys())


def carries(
    sent: Mapping[str, Any],
    remote: Mapping[str, Any],
    *,
    own_user: int | None = None,
    ordered: bool = False,
) -> bool:
    """True when `remote` shows every value `sent` wrote (and `sent` can be checked at all) and,
    given `own_user`, was not made by someone else (see the module docstring).

    `ordered`: a field's values must read back in the order sent (an update: a lost PATCH that
    only reordered a multitext is not applied while amoCRM shows the old order), except for a
    field amoCRM reads back as a set (`UNORDERED_TYPES`). A create's look-up leaves it off: a
    contact with our values in another order is still ours, and missing it would mean a
    duplicate."""
    if not verifiable(sent):
        return False
    if own_user is not None and not made_by(remote, own_user):
        return False
    for key in SCALARS:
        if key in sent and not same_scalar(sent[key], remote.get(key)):
            return False
    if "custom_fields_values" in sent and not _same_fields(
        sent["custom_fields_values"], remote.get("custom_fields_values"), ordered=ordered
    ):
        return False
    embedded = sent.get("_embedded")
    if isinstance(embedded, Mapping) and "tags" in embedded:
        remote_embedded = remote.get("_embedded")
        remote_tags = remote_embedded.get("tags") if isinstance(remote_embedded, Mapping) else None
        return _same_tags(embedded["tags"], remote_tags)
    return True


def made_by(remote: Mapping[str, Any], user: int) -> bool:
    """Whether `remote` may have been created by `user`: its `created_by` is that user, or
    says nothing (absent, null or 0)."""
    creator = remote.get("created_by")
    try:
        creator_id = int(creator) if creator not in (None, "") else 0
    except (TypeError, ValueError):
        return False
    return creator_id in (0, user)


def _field_key(item: Mapping[str, Any]) -> tuple[str, Any]:
    if item.get("field_id") is not None:
        return ("id", int(item["field_id"]))
    return ("code", str(item.get("field_code") or "").upper())


def _same_fields(sent: Any, remote: Any, *, ordered: bool) -> bool:
    if sent is None:
        return True  # `custom_fields_values: null` on write touches nothing checkable
    remote_items = [r for r in (remote or []) if isinstance(r, Mapping)]
    for item in sent:
        if not isinstance(item, Mapping):
            return False
        kind, key = _field_key(item)
        match = [r for r in remote_items if _remote_key(r, kind) == key]
        remote_values = match[0].get("values") if match else None
        in_order = ordered and not (match and match[0].get("field_type") in UNORDERED_TYPES)
        if not _same_values(item.get("values"), remote_values, ordered=in_order):
            return False
    return True


def _remote_key(remote: Mapping[str, Any], kind: str) -> Any:
    if kind == "id":
        return int(remote["field_id"]) if remote.get("field_id") is not None else None
    return str(remote.get("field_code") or "").upper()


def _same_values(sent: Any, remote: Any, *, ordered: bool) -> bool:
    remote_values = [v for v in (remote or []) if isinstance(v, Mapping)]
    return same_items(list(sent or []), remote_values, _same_value, ordered=ordered)


def _same_value(sent: Any, remote: Mapping[str, Any]) -> bool:
    if not isinstance(sent, Mapping):
        return False
    for key in ("value", "enum_id", "enum_code"):  # every key sent, with the value sent
        theirs = enum_code_of(remote) if key == "enum_code" else remote.get(key)  # `enum` too
        if key in sent and not same_scalar(sent[key], theirs, key=key):
            return False
    return True


def _same_tags(sent: Any, remote: Any) -> bool:
    sent_tags = [t for t in (sent or []) if isinstance(t, Mapping)]
    remote_tags = [t for t in (remote or []) if isinstance(t, Mapping)]
    if len(sent_tags) != len(remote_tags):
        return False
    for tag in sent_tags:
        if "id" in tag:
            found = any(same_scalar(tag["id"], r.get("id")) for r in remote_tags)
        else:
            name = str(tag.get("name", "")).casefold()
            found = any(str(r.get("name", "")).casefold() == name for r in remote_tags)
        if not found:
            return False
    return True


def pair_created(
    sent: Sequence[Mapping[str, Any]],
    candidates: Sequence[Mapping[str, Any]],
    *,
    own_user: int | None = None,
) -> dict[int, Mapping[str, Any]]:
    """Match sent entities (by index) to distinct remote contacts carrying their content (and,
    given `own_user`, not created by another user).

    Each remote contact is used at most once, so two identical entities need two contacts.
    Candidates are tried oldest id first, the order in which amoCRM creates a batch.
    """
    pool = sorted(candidates, key=lambda c: int(c.get("id") or 0))
    found: dict[int, Mapping[str, Any]] = {}
    for index, entity in enumerate(sent):
        hit = next((c for c in pool if carries(entity, c, own_user=own_user)), None)
        if hit is not None:
            found[index] = hit
            pool.remove(hit)
    return found
