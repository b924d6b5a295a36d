"""Which entities of a batch a 400 names: amoCRM's `validation-errors` by our request_id or by
the entity's index in the batch (`sync.amo.writes` sets them aside and sends the rest). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sync.errors import AmoRejectedError

Errors = Mapping[str, Sequence[Mapping[str, str]]]
Named = dict[str, Sequence[Mapping[str, str]]]


def named_by_us(ours: Sequence[str], errors: Errors) -> Named | None:
    """`errors` by our request_ids, or None when they cannot be matched for sure. amoCRM may
    name an entity by our request_id or by its index in the batch (the official SDK sends the
    index; the vendor's example shows "0"). Ours are ids (PATCH) or negative temporary ids
    (POST): a small contact id can also be an index, and then only a split can tell."""
    if not errors:
        return None
    positions = {rid: int(rid) for rid in errors if rid.isdigit() and int(rid) < len(ours)}
    mine = all(rid in ours for rid in errors)
    by_index = len(positions) == len(errors)
    if mine and by_index and any(ours[at] != rid for rid, at in positions.items()):
        return None  # both readings fit and they disagree
    if mine:
        return dict(errors)
    if by_index:
        return {ours[positions[rid]]: errs for rid, errs in errors.items()}
    return None


def all_errors(exc: AmoRejectedError) -> list[Mapping[str, str]]:
    """Every error a 400 listed, or one made of its reason when it listed none."""
    listed = [e for errs in exc.errors_by_request_id.values() for e in errs]
    return listed or [{"code": "Rejected", "path": "", "detail": exc.reason}]
