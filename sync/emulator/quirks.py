"""Answers another faithful stand-in may give where the vendor documents are silent or loose
(amocrm-api.md §2, §3, §5, §7): the runtime switches `events_order`, `next_gaps`, `write_answer`,
`string_numbers`, `enum_key` and `id_order_ignored` of `Controls`, applied here so the handlers
stay as amoCRM documents them.

- `events_order`: "desc" (newest first, the default), "asc" (oldest first), or "shuffle"
  (pages newest first, each page's events in a scrambled order). The events reference promises
  no order at all.
- `next_gaps`: `_links.next` left out of every even-numbered list page although more follows
  (a server that sends it on some pages only).
- `write_answer`: "exact" (one `_embedded` entry per entity sent), "short" (the first entry left
  out, so the entities matched have higher ids than the one missing; the write is applied all
  the same) or "extra" (an entry without `request_id` added, a
  copy of the first), for `POST`/`PATCH /api/v4/contacts` and `POST /api/v4/contacts/chats`.
- `enum_key`: the key of a multitext value's kind in contact answers: "enum_code" (amoCRM's
  docs, the reference's PATCH example) or "enum" (as the contacts reference's GET example renders
  it).
- `id_order_ignored`: `order[id]` of `GET /api/v4/contacts` ignored: the list comes in its
  default order (id ascending), `order[id]=desc` included; `order[updated_at]` is honoured. The
  sync then cannot find its newest contacts by id (a lost create's look-up falls back to
  `filter[created_at]`, see `sync.amo.reconcile`).
- `string_numbers`: a contact's integer fields (`id`, `updated_at`, `created_at`, the user ids,
  `group_id`, `closest_task_at`, `account_id`) as numeric strings ("123") in contact answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

EVENT_ORDERS = ("desc", "asc", "shuffle")
WRITE_ANSWERS = ("exact", "short", "extra")
ENUM_KEYS = ("enum_code", "enum")
CONTACT_INTS = (
    "id", "updated_at", "created_at", "responsible_user_id", "group_id", "created_by",
    "updated_by", "closest_task_at", "account_id",
)  # fmt: skip


@dataclass(frozen=True)
class Quirks:
    events_order: str = "desc"
    next_gaps: bool = False
    write_answer: str = "exact"
    string_numbers: bool = False
    enum_key: str = "enum_code"
    id_order_ignored: bool = False

    def __post_init__(self) -> None:
        if self.events_order not in EVENT_ORDERS:
            raise ValueError(f"events_order must be one of {EVENT_ORDERS}")
        if self.write_answer not in WRITE_ANSWERS:
            raise ValueError(f"write_answer must be one of {WRITE_ANSWERS}")
        if self.enum_key not in ENUM_KEYS:
            raise ValueError(f"enum_key must be enum_code or enum, got {self.enum_key!r}")


def quirks_of(controls: Any) -> Quirks:
    """The quirks part of the emulator's `Controls`."""
    return Quirks(
        controls.events_order,
        controls.next_gaps,
        controls.write_answer,
        controls.string_numbers,
        controls.enum_key,
        controls.id_order_ignored,
    )


def ordered_events(events: list[Any], quirks: Quirks) -> list[Any]:
    """The account's events (oldest first, as stored) in the order the list serves them."""
    return list(events) if quirks.events_order == "asc" else list(reversed(events))


def scrambled(items: list[dict[str, Any]], page: int, quirks: Quirks) -> list[dict[str, Any]]:
    """One events page as served: scrambled under "shuffle" (the same page the same way)."""
    if quirks.events_order != "shuffle":
        return items
    out = list(items)
    random.Random(page).shuffle(out)  # noqa: S311 - an order, not security
    if len(out) > 1 and out == items:
        out.append(out.pop(0))
    return out


def announces_next(more: bool, page: int, quirks: Quirks) -> bool:
    """Whether a page carries `_links.next` (never on an even page under `next_gaps`)."""
    return more and not (quirks.next_gaps and page % 2 == 0)


def write_answer(items: list[dict[str, Any]], quirks: Quirks) -> list[dict[str, Any]]:
    """A write answer's `_embedded` entries as served."""
    if quirks.write_answer == "short":
        return items[1:]
    if quirks.write_answer == "extra" and items:
        return [*items, {k: v for k, v in items[0].items() if k != "request_id"}]
    return items


def list_order(order_field: str, descending: bool, quirks: Quirks) -> tuple[str, bool]:
    """The order a contacts list is served in: `order[id]` dropped under `id_order_ignored`."""
    if quirks.id_order_ignored and order_field == "id":
        return "id", False
    return order_field, descending


def contact_numbers(contact: dict[str, Any], quirks: Quirks) -> dict[str, Any]:
    """A contact as served: its integer fields as strings under `string_numbers`."""
    if not quirks.string_numbers:
        return contact
    return {
        k: str(v) if k in CONTACT_INTS and isinstance(v, int) else v for k, v in contact.items()
    }
