"""amoCRM's error paths in the user's terms. Pure.

amoCRM names a rejected custom field by its index in the entity we sent
(`custom_fields_values.2.values.0.enum_id`), and that entity is not the user's column: a PATCH
carries only the changed fields and also the ones being cleared, a POST leaves out fields
without values. So `custom_fields_values.N` becomes the entry's index in the local column, or
`custom_fields_values[field_id=…]` (`[field_code=…]`) for a field that is not in it (cleared).
A value's index (`values.K`) is kept: values go out in the column's order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sync.core.cf_shape import ShapeError
from sync.core.models import CF_COLUMN
from sync.push.conflicts import cf_entries, cf_key


def user_errors(
    errors: Iterable[Mapping[str, str]],
    sent: Any,
    column: Any,
    codes: Mapping[str, int] | None = None,
) -> list[dict[str, str]]:
    """`errors` with each path into the sent `custom_fields_values` (`sent`, the entity's)
    naming the entry of the local `column` instead; `codes` maps field codes to ids as the
    entity was built with them."""
    return [{**e, "path": user_path(e.get("path") or "", sent, column, codes)} for e in errors]


def user_path(path: str, sent: Any, column: Any, codes: Mapping[str, int] | None = None) -> str:
    head, _, rest = path.partition(".")
    index, _, tail = rest.partition(".")
    entries = sent if isinstance(sent, list) else []
    if head != CF_COLUMN or not index.isdigit() or int(index) >= len(entries):
        return path
    entry = entries[int(index)]
    ref = {k: v for k, v in entry.items() if k != "values"} if isinstance(entry, Mapping) else {}
    key = _key(ref, codes or {})
    if key is None:
        return path
    try:
        local = cf_entries(column)
    except ShapeError:  # not an array of fields: nothing in it to name
        local = []
    at = next((i for i, e in enumerate(local) if _key(e, codes or {}) == key), None)
    if at is not None:
        name = f"{CF_COLUMN}.{at}"
    else:
        name = CF_COLUMN + "".join(f"[{k}={v}]" for k, v in ref.items())
    return f"{name}.{tail}" if tail else name


def _key(entry: Mapping[str, Any], codes: Mapping[str, int]) -> str | None:
    try:
        return cf_key(entry, codes)
    except ShapeError:
        return None
