"""amoCRM's webhook model (`/api/v4/webhooks`), parsed and checked: pure, no I/O.

A subscription answer is the model itself; a list is `{"_total_items": N, "_embedded":
{"webhooks": [model, ...]}}`, or 204 (no body) when there are none (fact sheet §16). A model
without an integer `id`, a string `destination` or a list of string `settings` is an
`InvariantError`, never a silent skip. Messages never quote a destination: it holds the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync.errors import InvariantError

WEBHOOKS = "/api/v4/webhooks"


@dataclass(frozen=True)
class Webhook:
    """One subscription as amoCRM reports it."""

    id: int
    destination: str
    settings: tuple[str, ...]
    sort: int
    disabled: bool
    account_id: int | None = None
    created_by: int | None = None
    created_at: int | None = None  # unix seconds
    updated_at: int | None = None

    def __repr__(self) -> str:  # the destination holds the secret
        return f"Webhook(id={self.id}, settings={self.settings!r}, disabled={self.disabled})"


def parse_webhook(data: Any) -> Webhook:
    """One webhook model → `Webhook`."""
    if not isinstance(data, Mapping):
        raise InvariantError("amoCRM answered /api/v4/webhooks without a webhook object")
    hook_id, destination, settings = data.get("id"), data.get("destination"), data.get("settings")
    if not _is_int(hook_id):
        raise InvariantError("amoCRM's webhook has no integer id")
    if not isinstance(destination, str) or not destination:
        raise InvariantError(f"amoCRM's webhook {hook_id} has no destination")
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings):
        raise InvariantError(f"amoCRM's webhook {hook_id} has no list of settings")
    return Webhook(
        id=int(str(hook_id)),
        destination=destination,
        settings=tuple(settings),
        sort=int(data["sort"]) if _is_int(data.get("sort")) else 0,
        disabled=data.get("disabled") in (True, 1, "1", "true"),
        account_id=_int_or_none(data.get("account_id")),
        created_by=_int_or_none(data.get("created_by")),
        created_at=_int_or_none(data.get("created_at")),
        updated_at=_int_or_none(data.get("updated_at")),
    )


def parse_webhooks(data: Any) -> list[Webhook]:
    """A list answer (None for 204) → webhooks, in amoCRM's order."""
    if data is None:
        return []
    embedded = data.get("_embedded") if isinstance(data, Mapping) else None
    items = embedded.get("webhooks") if isinstance(embedded, Mapping) else None
    if not isinstance(items, list):
        raise InvariantError("amoCRM answered /api/v4/webhooks without _embedded.webhooks")
    return [parse_webhook(item) for item in items]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return int(value) if _is_int(value) else None
